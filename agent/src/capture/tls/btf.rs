//! Struct member offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the TLS probes' fd → socket walk.
//!
//! aya-obj's `Btf` keeps member offsets private, and btf-rs is LGPL-2.1
//! (this project is Apache-2.0), so this is a small reader of its own: the
//! type section is walked once, and only structs, unions, typedefs and
//! modifiers are interpreted (the layout is the kernel's documented
//! `Documentation/bpf/btf.rst` format).

use std::collections::HashMap;

/// Why an offset could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF data is malformed ({0})")]
    Malformed(&'static str),
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("BTF struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset.
    offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// Referenced type (typedefs, modifiers, pointers).
    ty: u32,
    members: Vec<Member>,
}

/// The parsed type section.
#[derive(Debug)]
pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id (0 is `void`).
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, std::io::Error> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Self::parse(&data).map_err(std::io::Error::other)
    }

    /// Parses little-endian BTF (the host's, on the architectures the agent runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_b = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut pos = 0;
        while pos < types_b.len() {
            let name = u32_at(types_b, pos)?;
            let info = u32_at(types_b, pos + 4)?;
            let size_or_type = u32_at(types_b, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let raw = u32_at(types_b, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_b, m)?,
                            ty: u32_at(types_b, m + 4)?,
                            offset: if kflag { raw & 0xff_ffff } else { raw },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            pos += extra;
            types.push(Type {
                name,
                kind,
                ty: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            strings,
            types,
            structs: HashMap::new(),
        };
        let mut structs = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                structs
                    .entry(btf.name(t.name).to_owned())
                    .or_insert(id as u32);
            }
        }
        btf.structs = structs;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// (bit offset, type id) of `name` in a struct or union, looking inside
    /// anonymous members.
    fn find(&self, t: &Type, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 {
                if self.name(m.name) == name {
                    return Some((m.offset, m.ty));
                }
            } else if let Some(inner) = self.resolve(m.ty)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((off, ty)) = self.find(inner, name, depth + 1)
            {
                return Some((m.offset + off, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (members separated by dots, e.g.
    /// `__sk_common.skc_family`) in struct `strukt`.
    pub fn offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: path.to_owned(),
        };
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut t = self.types.get(id as usize).ok_or_else(no_member)?;
        let mut bits = 0u32;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, ty) = self.find(t, part, 0).ok_or_else(no_member)?;
            bits += off;
            if parts.peek().is_some() {
                t = self
                    .resolve(ty)
                    .filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
                    .ok_or_else(no_member)?;
            }
        }
        if !bits.is_multiple_of(8) {
            return Err(no_member());
        }
        Ok(bits / 8)
    }

    /// Whether `path` in `strukt` is a pointer (a sanity check on the walk).
    pub fn is_pointer(&self, strukt: &str, path: &str) -> bool {
        let Some(&id) = self.structs.get(strukt) else {
            return false;
        };
        let Some(t) = self.types.get(id as usize) else {
            return false;
        };
        self.find(t, path, 0)
            .and_then(|(_, ty)| self.resolve(ty))
            .is_some_and(|t| t.kind == KIND_PTR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF: `struct inner { int a; int b; }`,
    /// `struct outer { int x; union { struct inner in; long y; }; struct inner *p; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0in\0y\0p\0long\0".to_vec();
        let s = |name: &str| -> u32 {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap()
        };
        let mut t = Vec::new();
        let mut push = |v: &[u32]| {
            for x in v {
                t.extend_from_slice(&x.to_le_bytes());
            }
        };
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { a @0, b @32 }
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 8]);
        push(&[s("a"), 1, 0, s("b"), 1, 32]);
        // 3: anonymous union { in: inner @0, y: long @0 }
        push(&[0, (KIND_UNION << 24) | 2, 8]);
        push(&[s("in"), 2, 0, s("y"), 6, 0]);
        // 4: struct outer { x @0, <anon union> @64, p @128 }
        push(&[s("outer"), (KIND_STRUCT << 24) | 3, 24]);
        push(&[s("x"), 1, 0, 0, 3, 64, s("p"), 5, 128]);
        // 5: pointer to inner
        push(&[0, KIND_PTR << 24, 2]);
        // 6: long
        push(&[s("long"), KIND_INT << 24, 8, 64]);
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn offsets_through_anonymous_members_and_paths() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset("outer", "x"), Ok(0));
        assert_eq!(btf.offset("outer", "y"), Ok(8));
        assert_eq!(btf.offset("outer", "in.b"), Ok(12));
        assert_eq!(btf.offset("outer", "p"), Ok(16));
        assert!(btf.is_pointer("outer", "p"));
        assert!(!btf.is_pointer("outer", "x"));
        assert!(matches!(
            btf.offset("outer", "zz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.offset("nope", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut b = sample();
        b.truncate(40);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn running_kernel_has_the_walk_members() {
        // Skipped where the kernel exposes no BTF (the capture refuses to
        // start there anyway).
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        for (s, m) in [
            ("task_struct", "files"),
            ("files_struct", "fdt"),
            ("fdtable", "fd"),
            ("file", "private_data"),
            ("socket", "sk"),
        ] {
            assert!(btf.is_pointer(s, m), "{s}.{m}");
        }
        assert!(btf.offset("sock", "__sk_common.skc_family").is_ok());
    }
}

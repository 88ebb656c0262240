//! Where in an OpenSSL library the probes go.
//!
//! A uprobe replaces the first byte of an instruction with `int3`. After
//! the trap the kernel must still execute the instruction it replaced: a
//! few kinds it emulates (calls, jumps, and since Linux 6.x `push`), every
//! other one it single-steps out of line, a second exception. On the
//! development VMs that single step is most of a hit's cost: nginx serving
//! HTTPS spent 72% of its time in debug exceptions with the probes on the
//! exported `SSL_read`/`SSL_write`, whose first instruction is `sub
//! $imm,%rsp`.
//!
//! In OpenSSL 3 the exported calls are thin wrappers: `SSL_read` and
//! `SSL_read_ex` both call `ssl_read_internal(s, buf, num, &readbytes)`,
//! `SSL_write` and `SSL_write_ex` both call `ssl_write_internal(s, buf, num,
//! &written)`, and those start by pushing registers. So when the library
//! has exactly that shape, the probes go on the internal functions: one
//! entry probe (and one return probe) covers both exported calls, takes
//! `SSL_read_ex`'s arguments and return convention, and the kernel emulates
//! the `push` instead of single-stepping it. The shape is checked byte for
//! byte; anything else (OpenSSL 1.1, 3.2's five-argument
//! `ssl_write_internal`, other compilers' prologues, BoringSSL) keeps the
//! exported symbols. Either way the same calls are seen exactly once.

use std::{collections::HashMap, fs, os::unix::fs::MetadataExt, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol};

/// Where one direction's probes attach in a library file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The exported `SSL_read`/`SSL_read_ex` (or write) symbols.
    Exported,
    /// The shared internal function, at this file offset.
    Internal(u64),
}

/// The read and write sites of one library file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sites {
    pub read: Site,
    pub write: Site,
}

impl Sites {
    pub const EXPORTED: Self = Self {
        read: Site::Exported,
        write: Site::Exported,
    };

    /// For `rampwatch status`: which functions the probes trap in.
    pub fn as_str(self) -> &'static str {
        match (self.read, self.write) {
            (Site::Internal(_), Site::Internal(_)) => "internal",
            (Site::Exported, Site::Exported) => "exported",
            _ => "mixed",
        }
    }
}

/// How far into an exported wrapper its call to the internal function may be.
const WRAPPER_SCAN: usize = 64;

/// Finds the sites in an ELF image (a library or an executable with
/// OpenSSL linked in).
pub fn find(data: &[u8]) -> Sites {
    let Ok(file) = object::File::parse(data) else {
        return Sites::EXPORTED;
    };
    if file.architecture() != object::Architecture::X86_64 {
        return Sites::EXPORTED;
    }
    let image = Image { file: &file };
    Sites {
        read: image.internal("SSL_read_ex", "SSL_read"),
        write: image.internal("SSL_write_ex", "SSL_write"),
    }
}

struct Image<'a, 'd> {
    file: &'a object::File<'d>,
}

impl Image<'_, '_> {
    fn symbol(&self, name: &str) -> Option<u64> {
        let by_name = |s: &object::Symbol<'_, '_>| {
            s.is_definition() && s.kind() == object::SymbolKind::Text && s.name() == Ok(name)
        };
        self.file
            .dynamic_symbols()
            .find(by_name)
            .or_else(|| self.file.symbols().find(by_name))
            .map(|s| s.address())
    }

    /// Up to `len` bytes at virtual address `addr`.
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.file.segments().find_map(|seg| {
            let end = seg.address().checked_add(seg.size())?;
            if addr < seg.address() || addr >= end {
                return None;
            }
            let data = seg.data().ok()?;
            let start = usize::try_from(addr - seg.address()).ok()?;
            let have = data.get(start..)?;
            have.get(..len.min(have.len()))
        })
    }

    /// The file offset of virtual address `addr`.
    fn file_offset(&self, addr: u64) -> Option<u64> {
        self.file.segments().find_map(|seg| {
            let (off, size) = seg.file_range();
            let rel = addr.checked_sub(seg.address())?;
            (rel < size).then(|| off + rel)
        })
    }

    /// The internal function both `ex` and `plain` call, when `ex` is the
    /// exact four-argument pass-through wrapper and the internal function's
    /// entry is one the kernel emulates.
    fn internal(&self, ex: &str, plain: &str) -> Site {
        self.try_internal(ex, plain).unwrap_or(Site::Exported)
    }

    fn try_internal(&self, ex: &str, plain: &str) -> Option<Site> {
        let ex_addr = self.symbol(ex)?;
        let target = passthrough_call(ex_addr, self.bytes(ex_addr, 16)?)?;
        let plain_addr = self.symbol(plain)?;
        if !calls(plain_addr, self.bytes(plain_addr, WRAPPER_SCAN)?, target) {
            return None;
        }
        if !emulated_entry(self.bytes(target, 2)?) {
            return None;
        }
        Some(Site::Internal(self.file_offset(target)?))
    }
}

/// `ex` at `addr` is `[endbr64] sub $imm8,%rsp; call rel32`: the argument
/// registers reach the callee untouched. Returns the callee's address.
fn passthrough_call(addr: u64, code: &[u8]) -> Option<u64> {
    let mut at = 0;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        at = 4;
    }
    if code.get(at..at + 3)? != [0x48, 0x83, 0xec] {
        return None;
    }
    at += 4;
    call_target(addr, code, at)
}

fn call_target(addr: u64, code: &[u8], at: usize) -> Option<u64> {
    if *code.get(at)? != 0xe8 {
        return None;
    }
    let rel = i32::from_le_bytes(code.get(at + 1..at + 5)?.try_into().ok()?);
    let next = addr.checked_add(u64::try_from(at + 5).ok()?)?;
    next.checked_add_signed(i64::from(rel))
}

/// Some `call rel32` in `code` (at `addr`) goes to `target`.
fn calls(addr: u64, code: &[u8], target: u64) -> bool {
    (0..code.len()).any(|at| call_target(addr, code, at) == Some(target))
}

/// `push %reg` (`50+r`, or `41 50+r` for r8–r15): emulated by the kernel's
/// uprobe code, so a hit is one trap and no single step.
fn emulated_entry(code: &[u8]) -> bool {
    matches!(code, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
}

/// Sites per library file, so the nginx workers sharing one libssl parse it
/// once. Keyed by the file's identity (device, inode, modification time),
/// not its path: each process's path goes through its own /proc/PID/root,
/// and a package upgrade replaces the file.
#[derive(Default)]
pub struct SiteCache {
    known: HashMap<(u64, u64, i64), Sites>,
}

impl SiteCache {
    /// The sites of `path` (as the kernel will open it); the exported
    /// symbols when the file cannot be read or parsed.
    pub fn sites(&mut self, path: &Path) -> Sites {
        let Ok(meta) = fs::metadata(path) else {
            return Sites::EXPORTED;
        };
        let key = (meta.dev(), meta.ino(), meta.mtime());
        if let Some(s) = self.known.get(&key) {
            return *s;
        }
        let sites = fs::read(path).map_or(Sites::EXPORTED, |data| find(&data));
        // One entry per distinct library file; bounded all the same.
        if self.known.len() >= 256 {
            self.known.clear();
        }
        self.known.insert(key, sites);
        sites
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_shape_is_checked_byte_for_byte() {
        // OpenSSL 3.0's SSL_read_ex: sub $0x8,%rsp; call -0x239.
        let ex = [0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7, 0xfd, 0xff, 0xff];
        assert_eq!(passthrough_call(0x354c0, &ex), Some(0x35290));
        let mut endbr = vec![0xf3, 0x0f, 0x1e, 0xfa];
        endbr.extend_from_slice(&ex);
        assert_eq!(passthrough_call(0x354bc, &endbr), Some(0x35290));
        // 3.2's SSL_write_ex sets a flags argument first: not a pass-through.
        let flags = [0x31, 0xc9, 0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0];
        assert_eq!(passthrough_call(0, &flags), None);
        // A tail jump is not a call.
        assert_eq!(
            passthrough_call(0, &[0x48, 0x83, 0xec, 0x08, 0xe9, 0, 0, 0, 0]),
            None
        );
        assert_eq!(passthrough_call(0, &[0x48, 0x83]), None);
    }

    #[test]
    fn only_push_entries_count_as_emulated() {
        assert!(emulated_entry(&[0x41, 0x55]));
        assert!(emulated_entry(&[0x55, 0x48]));
        assert!(!emulated_entry(&[0x48, 0x83]));
        assert!(!emulated_entry(&[0xf3, 0x0f]));
        assert!(!emulated_entry(&[0x41]));
        assert!(!emulated_entry(&[]));
    }

    #[test]
    fn garbage_keeps_the_exported_symbols() {
        assert_eq!(find(b"not an elf"), Sites::EXPORTED);
        assert_eq!(find(&[]), Sites::EXPORTED);
    }

    /// The machine's own libssl, when it is OpenSSL 3.0 on x86-64 (Debian 12,
    /// the development and CI machines): both directions move to the
    /// internal functions, whose entries are pushes.
    #[test]
    fn openssl_3_0_moves_to_the_internal_functions() {
        let Some(path) = [
            "/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists()) else {
            return;
        };
        let data = fs::read(path).expect("read libssl");
        if !data.windows(12).any(|w| w == b"OpenSSL 3.0.") {
            return;
        }
        let sites = find(&data);
        for site in [sites.read, sites.write] {
            let Site::Internal(off) = site else {
                panic!("{} keeps the exported symbols: {sites:?}", path.display());
            };
            let at = usize::try_from(off).expect("offset");
            assert!(emulated_entry(&data[at..]), "{sites:?}");
        }
        assert_ne!(sites.read, sites.write);
        assert_eq!(sites.as_str(), "internal");
    }
}

//! Path checks for the files the agent trusts: the contract, the config
//! file, the audit HMAC key and the audit directory.
//!
//! The agent runs as root and believes these files, so a path any other user
//! can change is a way to rewrite the contract, forge audit records or hide
//! them. A path is refused when another user could replace what it names:
//!
//! - every directory on the way is owned by root or by the agent's own uid,
//!   and is not writable by group or others; a *sticky* directory that is
//!   (`/tmp`, mode 1777) is allowed only where the entry in it that the path
//!   goes through is owned by root or the agent (the sticky bit stops anyone
//!   else from renaming or removing it);
//! - the file or directory itself is owned by root or the agent and is not
//!   writable by group or others;
//! - the HMAC key is also reported (a warning, not a refusal) when group or
//!   others can read it: they could forge records.
//!
//! Symlinks are followed and are fine in themselves (ConfigMap and Secret
//! volumes are symlinks into a timestamped directory): both the directories
//! the given path goes through and those of the target it resolves to are
//! checked. Components that do not exist yet (an audit directory the agent
//! is about to create) cannot be replaced and are not checked.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::Metadata,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

const STICKY: u32 = 0o1000;
const GROUP_OTHER_WRITE: u32 = 0o022;
const GROUP_OTHER_READ: u32 = 0o044;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("refusing the {what} {path}: {reason}; {fix}")]
    Unsafe {
        what: &'static str,
        path: PathBuf,
        reason: String,
        fix: String,
    },
    #[error("cannot check the {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who may own a trusted path: root and the agent's effective uid.
#[derive(Debug, Clone, Copy)]
pub struct Owners {
    agent_uid: u32,
}

impl Owners {
    /// Root and the uid this process runs as.
    pub fn of_this_process() -> Self {
        // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
        let agent_uid = unsafe { libc::geteuid() };
        Self { agent_uid }
    }

    #[cfg(test)]
    fn with_agent_uid(agent_uid: u32) -> Self {
        Self { agent_uid }
    }

    fn trusts(self, uid: u32) -> bool {
        uid == 0 || uid == self.agent_uid
    }
}

/// What is being checked: how to name it, and what else to look at.
#[derive(Debug, Clone, Copy)]
enum Kind {
    File,
    Key,
    Dir,
}

/// Checks a file the agent reads (contract, config).
pub fn check_file(path: &Path, what: &'static str) -> Result<(), PathError> {
    check(path, what, Kind::File, Owners::of_this_process()).map(drop)
}

/// Checks the audit HMAC key file; `Ok` carries warnings (readable by others).
pub fn check_key(path: &Path) -> Result<Vec<String>, PathError> {
    check(path, "audit key file", Kind::Key, Owners::of_this_process())
}

/// Checks the audit directory (or, while it does not exist, the way to it).
pub fn check_dir(path: &Path, what: &'static str) -> Result<(), PathError> {
    check(path, what, Kind::Dir, Owners::of_this_process()).map(drop)
}

fn who_writes(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and every user",
        (true, false) => "its group",
        _ => "every user",
    }
}

fn meta(path: &Path) -> Option<Metadata> {
    std::fs::symlink_metadata(path).ok()
}

/// The longest existing prefix of `abs`, canonicalised, with the rest appended.
fn resolve(abs: &Path) -> PathBuf {
    let mut existing = abs.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            return rest.iter().rev().fold(c, |p: PathBuf, r| p.join(r));
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return abs.to_path_buf(),
        }
    }
}

/// (directory, entry) pairs a path goes through, each directory canonical.
fn steps(path: &Path, out: &mut BTreeSet<(PathBuf, OsString)>) {
    let mut so_far = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(name) => {
                let dir = std::fs::canonicalize(&so_far).unwrap_or_else(|_| so_far.clone());
                out.insert((dir, name.to_owned()));
                so_far.push(name);
            }
            Component::ParentDir => {
                so_far.push("..");
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn check(
    path: &Path,
    what: &'static str,
    kind: Kind,
    owners: Owners,
) -> Result<Vec<String>, PathError> {
    let io = |source| PathError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(io)?.join(path)
    };
    let target = resolve(&abs);
    let unsafe_ = |reason: String, fix: String| PathError::Unsafe {
        what,
        path: path.to_owned(),
        reason,
        fix,
    };

    let mut pairs = BTreeSet::new();
    steps(&abs, &mut pairs);
    steps(&target, &mut pairs);
    for (dir, entry) in &pairs {
        let Some(d) = meta(dir) else { continue };
        let child = dir.join(entry);
        if !owners.trusts(d.uid()) {
            return Err(unsafe_(
                format!(
                    "the directory {} is owned by uid {}, who can replace anything in it",
                    dir.display(),
                    d.uid()
                ),
                format!("`chown root {}` or move the file elsewhere", dir.display()),
            ));
        }
        let mode = d.mode() & 0o7777;
        if mode & GROUP_OTHER_WRITE == 0 {
            continue;
        }
        if mode & STICKY != 0 {
            // Sticky: only the entry's owner (or the directory's, root here)
            // can rename or remove it. A missing entry cannot be replaced.
            match meta(&child) {
                Some(c) if !owners.trusts(c.uid()) => {
                    return Err(unsafe_(
                        format!(
                            "{} is in {}, which every user can write to (mode {mode:04o}), and belongs to uid {}, who can replace it",
                            child.display(),
                            dir.display(),
                            c.uid()
                        ),
                        format!(
                            "`chown root {}` or move the file out of {}",
                            child.display(),
                            dir.display()
                        ),
                    ));
                }
                _ => continue,
            }
        }
        return Err(unsafe_(
            format!(
                "the directory {} is writable by {} (mode {mode:04o}), so another user can replace {}",
                dir.display(),
                who_writes(mode),
                child.display()
            ),
            format!("`chmod go-w {}`", dir.display()),
        ));
    }

    let Some(t) = meta(&target) else {
        return match kind {
            // The agent creates it (mode 0750) in a directory checked above.
            Kind::Dir => Ok(Vec::new()),
            Kind::File | Kind::Key => Err(io(std::io::Error::from(std::io::ErrorKind::NotFound))),
        };
    };
    let shown = if target == abs {
        path.display().to_string()
    } else {
        format!("{} (which is {})", path.display(), target.display())
    };
    if !owners.trusts(t.uid()) {
        return Err(unsafe_(
            format!("{shown} is owned by uid {}, who can change it", t.uid()),
            format!("`chown root {}`", target.display()),
        ));
    }
    let mode = t.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(unsafe_(
            format!(
                "{shown} is writable by {} (mode {mode:04o})",
                who_writes(mode)
            ),
            format!("`chmod go-w {}`", target.display()),
        ));
    }
    let mut warnings = Vec::new();
    if matches!(kind, Kind::Key) && mode & GROUP_OTHER_READ != 0 {
        warnings.push(format!(
            "the audit key file {shown} is readable by users other than root (mode {mode:04o}): they can forge audit records; `chmod 0400 {}` (the Kubernetes manifest mounts its Secret with mode 0400)",
            target.display()
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{PermissionsExt as _, chown, symlink},
        path::Path,
    };

    use super::{Kind, Owners, PathError, check};

    fn me() -> Owners {
        Owners::of_this_process()
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A private directory (0700) with a 0644 file in it.
    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        chmod(tmp.path(), 0o700);
        let file = tmp.path().join("contract.yaml");
        fs::write(&file, "x").expect("write");
        chmod(&file, 0o644);
        (tmp, file)
    }

    fn refused(r: Result<Vec<String>, PathError>) -> String {
        match r {
            Err(e @ PathError::Unsafe { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_private_file_under_tmp_is_fine() {
        // /tmp itself is sticky and world-writable: allowed, since the
        // temp dir in it is ours.
        let (_tmp, file) = setup();
        assert!(check(&file, "contract", Kind::File, me()).is_ok());
        assert!(
            check(
                file.parent().expect("dir"),
                "audit directory",
                Kind::Dir,
                me()
            )
            .is_ok()
        );
    }

    #[test]
    fn group_or_world_writable_files_and_directories_are_refused() {
        let (tmp, file) = setup();
        chmod(&file, 0o666);
        let msg = refused(check(&file, "contract", Kind::File, me()));
        assert!(
            msg.contains("writable by its group and every user (mode 0666)"),
            "{msg}"
        );
        assert!(msg.contains("chmod go-w"), "{msg}");
        assert!(msg.starts_with("refusing the contract "), "{msg}");

        chmod(&file, 0o644);
        chmod(tmp.path(), 0o770);
        let msg = refused(check(&file, "contract", Kind::File, me()));
        assert!(
            msg.contains(&format!("the directory {}", tmp.path().display())),
            "{msg}"
        );
        assert!(msg.contains("writable by its group (mode 0770)"), "{msg}");

        // The audit directory itself.
        chmod(tmp.path(), 0o757);
        let msg = refused(check(tmp.path(), "audit directory", Kind::Dir, me()));
        assert!(msg.contains("every user (mode 0757)"), "{msg}");
    }

    #[test]
    fn a_sticky_world_writable_directory_needs_a_trusted_entry() {
        let (tmp, file) = setup();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        chmod(&shared, 0o1777);
        let inside = shared.join("contract.yaml");
        fs::copy(&file, &inside).expect("copy");
        chmod(&inside, 0o644);
        // Ours: the sticky bit keeps others from replacing it.
        assert!(check(&inside, "contract", Kind::File, me()).is_ok());
        // Without the sticky bit, anyone could.
        chmod(&shared, 0o777);
        refused(check(&inside, "contract", Kind::File, me()));
        // Sticky, but the entry is someone else's: as the agent running as
        // another uid (or, as root, with the file given away).
        chmod(&shared, 0o1777);
        let owners = if me().agent_uid == 0 {
            chown(&inside, Some(65534), None).expect("chown as root");
            me()
        } else {
            Owners::with_agent_uid(me().agent_uid + 1)
        };
        let msg = refused(check(&inside, "contract", Kind::File, owners));
        assert!(msg.contains("who can"), "{msg}");
    }

    #[test]
    fn files_of_other_users_are_refused() {
        let (_tmp, file) = setup();
        let owners = if me().agent_uid == 0 {
            chown(&file, Some(65534), Some(65534)).expect("chown as root");
            me()
        } else {
            // The files are this test's; an agent running as another uid
            // must not trust them (nor the temp dir they are in).
            Owners::with_agent_uid(me().agent_uid + 1)
        };
        let msg = refused(check(&file, "contract", Kind::File, owners));
        assert!(msg.contains("is owned by uid"), "{msg}");
        assert!(msg.contains("chown root"), "{msg}");
    }

    #[test]
    fn symlinks_are_followed_and_both_sides_checked() {
        // The ConfigMap layout: contract.yaml -> ..data/contract.yaml,
        // ..data -> ..2026_01_01/.
        let (tmp, _) = setup();
        let stamp = tmp.path().join("..2026_01_01");
        fs::create_dir(&stamp).expect("mkdir");
        chmod(&stamp, 0o755);
        fs::write(stamp.join("contract.yaml"), "x").expect("write");
        chmod(&stamp.join("contract.yaml"), 0o644);
        symlink("..2026_01_01", tmp.path().join("..data")).expect("symlink");
        let link = tmp.path().join("contract.yaml");
        fs::remove_file(&link).expect("the plain file goes");
        symlink("..data/contract.yaml", &link).expect("symlink");
        assert!(check(&link, "contract", Kind::File, me()).is_ok());

        // The target's directory becomes writable: refused, naming the link.
        chmod(&stamp, 0o777);
        let msg = refused(check(&link, "contract", Kind::File, me()));
        assert!(msg.contains(&link.display().to_string()), "{msg}");
        assert!(msg.contains("..2026_01_01"), "{msg}");
    }

    #[test]
    fn the_key_file_warns_when_others_can_read_it_and_refuses_when_they_can_write() {
        let (tmp, _) = setup();
        let key = tmp.path().join("key");
        fs::write(&key, [7u8; 32]).expect("write");
        chmod(&key, 0o400);
        assert_eq!(
            check(&key, "audit key file", Kind::Key, me()).expect("fine"),
            Vec::<String>::new()
        );
        chmod(&key, 0o644);
        let warnings = check(&key, "audit key file", Kind::Key, me()).expect("a warning");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("can forge audit records"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("chmod 0400"), "{warnings:?}");
        chmod(&key, 0o602);
        refused(check(&key, "audit key file", Kind::Key, me()));
    }

    #[test]
    fn a_missing_audit_directory_is_checked_up_to_where_it_would_be_created() {
        let (tmp, _) = setup();
        let dir = tmp.path().join("a/b/audit");
        assert!(check(&dir, "audit directory", Kind::Dir, me()).is_ok());
        chmod(tmp.path(), 0o777);
        refused(check(&dir, "audit directory", Kind::Dir, me()));
        // A missing file is an I/O error, not a refusal.
        chmod(tmp.path(), 0o700);
        assert!(matches!(
            check(&tmp.path().join("none"), "contract", Kind::File, me()),
            Err(PathError::Io { .. })
        ));
    }
}

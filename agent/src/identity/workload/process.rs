//! Process facts for the pids the TLS probes report: `comm` and `exe` from
//! `/proc/<pid>` (the host's, mounted at `/host/proc` in a container).
//!
//! Reading another user's `/proc/<pid>/exe` needs CAP_SYS_PTRACE; without it
//! (or once the process has exited) the field stays empty.

use std::{fs, path::Path};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    /// The kernel's task name (at most 15 bytes), `None` if unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The executable's path as the process sees it (inside its mount
    /// namespace), `None` if unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// Facts about `pid` from `proc_root` (`/proc` or `/host/proc`); `None` when
/// the process does not exist (any more).
pub fn read(proc_root: &Path, pid: u32) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    // A pid directory that is gone means the process is; permission errors
    // on the fields below do not.
    fs::symlink_metadata(&dir).ok()?;
    let comm = fs::read_to_string(dir.join("comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_owned());
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok());
    Some(Process { pid, comm, exe })
}

/// The cgroup v2 path of `pid` (the `0::` line of `/proc/<pid>/cgroup`),
/// relative to the reader's cgroup namespace root.
pub fn cgroup_path(proc_root: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

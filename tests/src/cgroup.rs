//! A throwaway cgroup v2 child directory that real client processes are put
//! into, so a capture attached there sees exactly their sockets.
//!
//! A socket belongs to the cgroup its creator was in when it was created, so a
//! client must be in the cgroup before it connects: [`CgroupGuard::command`]
//! moves the child into the cgroup between fork and exec.

use std::{
    ffi::CString,
    fs,
    net::{SocketAddr, TcpStream},
    os::unix::{ffi::OsStrExt, fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::wait::{DEFAULT_TIMEOUT, wait_for, wait_until};

/// The system's Python itself, not a version manager's shim script, so a
/// process started from it has a known `exe`.
pub const PYTHON: &str = "/usr/bin/python3";

/// Mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    for line in info.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> ... - <fstype> <source> <super opts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mount) = left.split_whitespace().nth(4)
        {
            return PathBuf::from(mount);
        }
    }
    panic!("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo)")
}

/// A child cgroup created for one test and removed on drop.
#[derive(Debug)]
pub struct CgroupGuard {
    path: PathBuf,
    root: PathBuf,
}

impl CgroupGuard {
    /// Create `<cgroup2 root>/rwt-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        let root = cgroup2_root();
        let path = root.join(crate::unique_name(tag));
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self { path, root }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A child cgroup `<self>/<name>` (a name as kubelet or systemd would
    /// write it), removed on drop: drop it before its parent.
    pub fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self {
            path,
            root: self.root.clone(),
        }
    }

    /// The cgroup id the kernel reports (`bpf_skb_cgroup_id`,
    /// `bpf_get_current_cgroup_id`): the inode number of the directory.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
            .ino()
    }

    /// A `Command` whose process joins this cgroup before it execs, so every
    /// socket it creates is charged to the cgroup.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter_on_spawn(&mut cmd);
        cmd
    }

    /// `python3 -m http.server` ([`PYTHON`]) in this cgroup on `addr`,
    /// returned once it listens.
    pub fn http_server(&self, addr: SocketAddr) -> Child {
        let child = self
            .command(PYTHON)
            .args(["-m", "http.server", "--bind"])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        wait_for("python3 http.server to listen", DEFAULT_TIMEOUT, || {
            TcpStream::connect(addr).is_ok()
        });
        child
    }

    /// Make an existing `Command` join this cgroup between fork and exec.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup path has no NUL byte");
        // SAFETY: the closure runs between fork and exec and only calls the
        // async-signal-safe open/write/close on memory allocated before fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" means "the writing process".
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }

    /// Ids of the BPF programs attached to this cgroup directory, per
    /// `bpftool -j cgroup show` (empty when none are).
    pub fn attached(&self) -> Vec<u64> {
        let out = Command::new("bpftool")
            .args(["-j", "cgroup", "show"])
            .arg(&self.path)
            .output()
            .expect("run bpftool cgroup show");
        assert!(
            out.status.success(),
            "bpftool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_u64())
            .collect()
    }

    /// Pids currently in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Move `pid` into this cgroup (for processes started some other way;
    /// only sockets created afterwards are charged here).
    pub fn add_pid(&self, pid: u32) {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move pid {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // Leftover processes (a test that panicked mid-way) go back to the
        // root cgroup so the directory can be removed.
        for pid in self.procs() {
            let _ = fs::write(self.root.join("cgroup.procs"), pid.to_string());
        }
        let path = self.path.clone();
        let removed = std::panic::catch_unwind(|| {
            wait_until(
                &format!("removal of cgroup {}", path.display()),
                Duration::from_secs(5),
                || match fs::remove_dir(&path) {
                    Ok(()) => Some(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(()),
                    // EBUSY while exiting processes are still being reaped.
                    Err(_) => None,
                },
            )
        });
        if removed.is_err() {
            eprintln!("warning: could not remove cgroup {}", self.path.display());
        }
    }
}

/// A CPU limit on one process: a cgroup with a CFS quota, cgroup v2's
/// `cpu.max` when the v2 hierarchy has the `cpu` controller, else the v1
/// `cpu` hierarchy (hybrid hosts bind it there). Dropping it moves the
/// process back to the root and removes the cgroup.
#[derive(Debug)]
pub struct CpuLimit {
    dir: PathBuf,
    /// `<root>/cgroup.procs` the process goes back to.
    root_procs: PathBuf,
    v2: bool,
    pid: u32,
}

impl CpuLimit {
    /// Limits `pid` (all its threads) to `percent` of one CPU.
    pub fn new(tag: &str, pid: u32, percent: u32) -> Self {
        let v2_root = cgroup2_root();
        let v2 = fs::read_to_string(v2_root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|n| n == "cpu"));
        let root = if v2 {
            // Children only get the controller when the parent delegates it.
            fs::write(v2_root.join("cgroup.subtree_control"), "+cpu")
                .expect("enable the cpu controller for child cgroups");
            v2_root
        } else {
            let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
            assert!(
                v1.join("cpu.cfs_quota_us").exists(),
                "no cpu controller: neither cgroup v2 `cpu` nor a v1 cpu hierarchy at {}",
                v1.display()
            );
            v1
        };
        let dir = root.join(crate::unique_name(tag));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let period = 100_000u32;
        let quota = period / 100 * percent.max(1);
        let limit = Self {
            dir,
            root_procs: root.join("cgroup.procs"),
            v2,
            pid,
        };
        limit.set_quota(Some(quota));
        fs::write(limit.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move pid {pid} into {}: {e}", limit.dir.display()));
        limit
    }

    /// The CFS quota in µs per 100 ms period; `None` lifts the limit.
    pub fn set_quota(&self, quota_us: Option<u32>) {
        let (file, value) = match (self.v2, quota_us) {
            (true, Some(q)) => ("cpu.max", format!("{q} 100000")),
            (true, None) => ("cpu.max", "max 100000".to_owned()),
            (false, q) => {
                fs::write(self.dir.join("cpu.cfs_period_us"), "100000")
                    .expect("write cpu.cfs_period_us");
                (
                    "cpu.cfs_quota_us",
                    q.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
                )
            }
        };
        fs::write(self.dir.join(file), &value)
            .unwrap_or_else(|e| panic!("write {value} to {}/{file}: {e}", self.dir.display()));
    }

    /// CPU time the process was throttled for so far, in µs (the limit bit).
    pub fn throttled_us(&self) -> u64 {
        let text = fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                match k {
                    "throttled_usec" => v.trim().parse().ok(),
                    "throttled_time" => v.trim().parse::<u64>().ok().map(|ns| ns / 1000),
                    _ => None,
                }
            })
            .unwrap_or(0)
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        let _ = fs::write(&self.root_procs, self.pid.to_string());
        let dir = self.dir.clone();
        let _ = std::panic::catch_unwind(|| {
            wait_until(
                &format!("removal of cgroup {}", dir.display()),
                Duration::from_secs(5),
                || fs::remove_dir(&dir).ok(),
            )
        });
    }
}

//! What the host must provide before anything is loaded: privileges, BTF,
//! a cgroup v2 mount, interfaces. Each check gives one operator sentence.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use super::CaptureError;

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails unless the effective set allows loading and attaching the programs:
/// CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN, or CAP_SYS_ADMIN (root).
pub fn check_privileges() -> Result<(), CaptureError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        // Cannot tell; let the kernel decide and report its error.
        return Ok(());
    };
    let has = |c: u32| eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON) && has(CAP_NET_ADMIN)) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c))
    .map(|(_, n)| n)
    .collect();
    Err(CaptureError::NotPermitted {
        missing: missing.join(", "),
    })
}

pub fn check_btf() -> Result<(), CaptureError> {
    if fs::metadata("/sys/kernel/btf/vmlinux").is_ok() {
        Ok(())
    } else {
        Err(CaptureError::NoBtf)
    }
}

/// Undoes the octal escapes (`\040` for space) of /proc/self/mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(d) = b.get(i + 1..i + 4)
            && d.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount point of the first cgroup v2 hierarchy in a mountinfo text.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    cgroup2_mounts_in(mountinfo).next()
}

/// Mount points of every cgroup v2 hierarchy in a mountinfo text, in order.
pub fn cgroup2_mounts_in(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mount = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount)))
    })
}

/// The cgroup v2 hierarchy to name workloads from: with a host root other
/// than `/`, the first cgroup v2 mount below it (the host's, bind-mounted
/// into a container whose own `/sys/fs/cgroup` is its namespace's);
/// otherwise this machine's root.
pub fn workload_cgroup_root(mountinfo: &str, host_root: &Path) -> Option<PathBuf> {
    if host_root != Path::new("/") {
        return cgroup2_mounts_in(mountinfo).find(|m| m.starts_with(host_root));
    }
    cgroup2_mount_in(mountinfo)
}

/// The cgroup v2 root of this machine, from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<PathBuf, CaptureError> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cgroup2_mount_in(&info).ok_or(CaptureError::NoCgroupV2)
}

pub fn check_interface(name: &str) -> Result<(), CaptureError> {
    let unknown = || CaptureError::UnknownInterface(name.to_owned());
    let c = CString::new(name).map_err(|_| unknown())?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
        return Err(unknown());
    }
    Ok(())
}

fn now_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME` in nanoseconds: added to the kernel's
/// `bpf_ktime_get_boot_ns` (sample and flow-end stamps) it gives the wall clock.
pub fn boot_to_wall_offset() -> i64 {
    let boot = now_ns(libc::CLOCK_BOOTTIME);
    now_ns(libc::CLOCK_REALTIME) - boot
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC`: for the flow map's first/last-seen
/// stamps (`bpf_ktime_get_coarse_ns`).
pub fn mono_to_wall_offset() -> i64 {
    let mono = now_ns(libc::CLOCK_MONOTONIC);
    now_ns(libc::CLOCK_REALTIME) - mono
}

/// CLOCK_MONOTONIC now, the clock of the flow map's stamps.
pub fn monotonic_now() -> u64 {
    u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_root_is_the_cgroup2_mount_below_the_host_root() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                    41 25 0:26 / /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(
            workload_cgroup_root(info, Path::new("/host")),
            Some(PathBuf::from("/host/sys/fs/cgroup"))
        );
        assert_eq!(
            workload_cgroup_root(info, Path::new("/")),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(workload_cgroup_root(info, Path::new("/elsewhere")), None);
    }

    #[test]
    fn finds_cgroup2_among_v1_mounts() {
        let info = "\
25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 25 0:30 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/cpu rw shared:11 - cgroup cgroup rw,cpu
";
        assert_eq!(
            cgroup2_mount_in(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("garbage\n\n - \n"), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        let info = "36 35 0:31 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount_in(info), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn unknown_interface_is_reported_by_name() {
        let e = check_interface("rw-no-such-if0").unwrap_err();
        assert!(e.to_string().contains("rw-no-such-if0"));
    }
}

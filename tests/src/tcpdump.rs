//! tcpdump as an independent witness of what the kernel carried.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    pcap::{TcpRecord, read_pcap},
    wait::{wait_for, wait_until},
};

/// A running `tcpdump -w` writing every matching packet as soon as it is seen.
pub struct Tcpdump {
    child: Option<Child>,
    path: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// tcpdump's own end-of-capture statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpdumpStats {
    pub captured: u64,
    pub received: u64,
    pub dropped: u64,
}

impl Tcpdump {
    /// Capture on `iface` (inside `netns` if given) with a BPF `filter`,
    /// keeping `snaplen` bytes per packet. Returns once tcpdump listens.
    pub fn start(iface: &str, filter: &str, netns: Option<&str>, snaplen: u32) -> Self {
        let path = std::env::temp_dir().join(format!("{}.pcap", crate::unique_name("pcap")));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tcpdump"]);
                c
            }
            None => Command::new("tcpdump"),
        };
        // -U with --immediate-mode: every packet reaches the file right away,
        // so tests can poll the file. -Z root: write as root into /tmp.
        // -B: a large buffer, drops would make the ground truth wrong (checked in stop()).
        cmd.args([
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-B",
            "32768",
        ])
        .args(["-s", &snaplen.to_string(), "-w"])
        .arg(&path)
        .arg(filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tcpdump (is it installed?)");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr buffer");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut me = Self {
            child: Some(child),
            path,
            stderr,
        };
        let err = Arc::clone(&me.stderr);
        let child = me.child.as_mut().expect("child present");
        wait_for(
            "tcpdump to start listening",
            Duration::from_secs(10),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "tcpdump exited ({status}) before listening: {}",
                        err.lock().expect("stderr buffer")
                    );
                }
                err.lock().expect("stderr buffer").contains("listening on")
            },
        );
        me
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Segments written so far.
    pub fn records(&self) -> Vec<TcpRecord> {
        read_pcap(&self.path)
    }

    /// Poll the pcap until `done` holds for what it contains.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[TcpRecord]) -> bool,
    ) -> Vec<TcpRecord> {
        wait_until(what, timeout, || {
            let recs = self.records();
            done(&recs).then_some(recs)
        })
    }

    /// Stop tcpdump, check it dropped nothing, and return every segment.
    pub fn stop(mut self) -> (Vec<TcpRecord>, TcpdumpStats) {
        let stats = self.terminate();
        assert_eq!(
            stats.dropped, 0,
            "tcpdump dropped packets, the ground truth is incomplete: {stats:?}"
        );
        (read_pcap(&self.path), stats)
    }

    /// Like [`Tcpdump::stop`], keeping the capture file as `dest` (for
    /// replay) instead of reading it.
    pub fn stop_into(mut self, dest: &Path) -> TcpdumpStats {
        let stats = self.terminate();
        assert_eq!(
            stats.dropped, 0,
            "tcpdump dropped packets, the ground truth is incomplete: {stats:?}"
        );
        std::fs::copy(&self.path, dest).expect("keep the capture file");
        stats
    }

    fn terminate(&mut self) -> TcpdumpStats {
        let Some(mut child) = self.child.take() else {
            return TcpdumpStats::default();
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let _ = child.wait();
        let err = Arc::clone(&self.stderr);
        // The reader thread sees EOF right after exit; wait for the summary.
        let text = wait_until("tcpdump's summary", Duration::from_secs(5), || {
            let s = err.lock().expect("stderr buffer").clone();
            s.contains("dropped by kernel").then_some(s)
        });
        let num = |key: &str| {
            text.lines()
                .find(|l| l.contains(key))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        TcpdumpStats {
            captured: num("packets captured"),
            received: num("packets received by filter"),
            dropped: num("packets dropped by kernel"),
        }
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

//! Real Prometheus and Alertmanager for the end-to-end test: started on free
//! loopback ports with temporary directories and one-second intervals,
//! loaded with the shipped rules (`deploy/prometheus/rampwatch-rules.yaml`),
//! stopped and removed on drop.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{on_free_port, wait::wait_until};

pub struct Monitoring {
    dir: PathBuf,
    prometheus: Child,
    alertmanager: Child,
    pub prometheus_addr: SocketAddr,
    pub alertmanager_addr: SocketAddr,
}

/// A loopback address for a server told its port up front; `start` returns
/// `None` when the server could not bind it, and another port is tried.
fn on_loopback_port<T>(what: &str, start: impl FnMut(u16) -> Option<T>) -> T {
    on_free_port(IpAddr::V4(Ipv4Addr::LOCALHOST), what, start)
}

/// Waits until `ready` answers; `None` when `child` exits first (its port
/// was taken).
fn ready_or_exited(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) -> Option<()> {
    let up = wait_until(what, Duration::from_secs(30), || {
        if ready() {
            return Some(true);
        }
        child.try_wait().ok().flatten().map(|_| false)
    });
    up.then_some(())
}

/// `GET http://{addr}{path}` with curl, parsed as JSON; `None` until the
/// server answers.
pub fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://{addr}{path}"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn spawn(program: &str, args: &[String], log: &Path) -> Child {
    let log = fs::File::create(log).expect("create a log file");
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}; `cargo xtask test` installs it"))
}

impl Monitoring {
    /// Starts both, with Prometheus scraping `targets` (job `rampwatch`)
    /// every second and evaluating `rules` every second.
    pub fn start(rules: &Path, targets: &[SocketAddr]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique_name("prom"));
        fs::create_dir_all(dir.join("am-data")).expect("create alertmanager dir");
        fs::create_dir_all(dir.join("tsdb")).expect("create tsdb dir");
        // Alertmanager first: Prometheus is told its address. Each is
        // started again on another port if its port was taken meanwhile.
        fs::write(
            dir.join("alertmanager.yml"),
            // Every alert lands in a receiver with no integrations: the test
            // reads them back through the v2 API.
            "route:\n  receiver: sink\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: sink\n",
        )
        .expect("write alertmanager.yml");
        let d = dir.display().to_string();
        let (alertmanager, alertmanager_addr) = on_loopback_port("Alertmanager", |port| {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let mut child = spawn(
                "prometheus-alertmanager",
                &[
                    format!("--config.file={d}/alertmanager.yml"),
                    format!("--storage.path={d}/am-data"),
                    format!("--web.listen-address={addr}"),
                    // No gossip: a lone instance must not wait for peers.
                    "--cluster.listen-address=".to_owned(),
                ],
                &dir.join("alertmanager.log"),
            );
            ready_or_exited("Alertmanager to answer", &mut child, || {
                get_json(addr, "/api/v2/status").is_some()
            })?;
            Some((child, addr))
        });
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{}'\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager_addr}']\n\
                 scrape_configs:\n  - job_name: rampwatch\n    static_configs:\n      - targets: [{}]\n",
                rules.display(),
                targets.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        let (prometheus, prometheus_addr) = on_loopback_port("Prometheus", |port| {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let mut child = spawn(
                "prometheus",
                &[
                    format!("--config.file={d}/prometheus.yml"),
                    format!("--storage.tsdb.path={d}/tsdb"),
                    format!("--web.listen-address={addr}"),
                ],
                &dir.join("prometheus.log"),
            );
            ready_or_exited("Prometheus to load its rules", &mut child, || {
                get_json(addr, "/api/v1/rules").is_some_and(|rules| {
                    rules["data"]["groups"]
                        .as_array()
                        .is_some_and(|g| !g.is_empty())
                })
            })?;
            Some((child, addr))
        });
        Self {
            dir,
            prometheus,
            alertmanager,
            prometheus_addr,
            alertmanager_addr,
        }
    }

    /// Names of the alerts Alertmanager currently holds.
    pub fn alert_names(&self) -> Vec<String> {
        get_json(self.alertmanager_addr, "/api/v2/alerts")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect()
    }

    /// The alerts Alertmanager holds, as JSON.
    pub fn alerts(&self) -> Vec<Value> {
        get_json(self.alertmanager_addr, "/api/v2/alerts")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Result vector of an instant PromQL query.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        get_json(self.prometheus_addr, &format!("/api/v1/query?query={q}"))
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Logs of both, for a failing test's message.
    pub fn logs(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let tail = |s: String| {
            s.lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "--- prometheus\n{}\n--- alertmanager\n{}",
            tail(read("prometheus.log")),
            tail(read("alertmanager.log"))
        )
    }
}

impl Drop for Monitoring {
    fn drop(&mut self) {
        for c in [&mut self.prometheus, &mut self.alertmanager] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

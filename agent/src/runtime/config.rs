//! `rampwatch agent --config FILE`: settings that outlive a command line.
//!
//! The same strict YAML reading as the contract (unknown fields are errors,
//! each reported with its path, line and column). Flags given on the command
//! line override the file; anything set in neither takes the default below.
//!
//! ```yaml
//! metricsAddr: 0.0.0.0:9464
//! socket: /run/rampwatch/rampwatch.sock
//! socketGroup: rampwatch
//! auditDir: /var/lib/rampwatch/audit
//! auditKey: /etc/rampwatch/audit.key
//! cgroup: /sys/fs/cgroup
//! hostRoot: /host          # the host's /proc, cgroupfs, /var/log/pods under this prefix
//! interfaces: [eth0]
//! capture:
//!   snaplen: 4096          # payload bytes per sample (max 4096)
//!   firstSegments: 4       # always sampled per direction
//!   sampleOneIn: 64        # then 1 in N (0 = never)
//!   ringBytes: 16777216    # power of two, page multiple
//!   flowEntries: 65536
//! violations:
//!   quietPeriod: 5m        # a violation resolves after this long without occurrence
//! readiness:
//!   window: 5m             # rates for `rampwatch readiness` are averaged over this
//!   lead: 24h              # RampStageNotReady looks this far ahead of a stage
//! usage:
//!   interval: 60s          # requests per client and endpoint written to the audit log this often
//!   maxPairs: 500          # per interval; the rest summed in one usage_other record
//! tls:
//!   probes: true           # OpenSSL plaintext probes (--no-tls-probes turns them off)
//!   exclude: [wrk, /usr/bin/h2load]  # comm or executable globs never probed
//!   maxCopy: 65536         # plaintext bytes copied per call (4096..=65536)
//! ```

use std::{fmt, net::SocketAddr, path::PathBuf};

use crate::{
    capture::CaptureConfig,
    cli::AgentArgs,
    contract::{
        Diagnostic,
        reader::{Fields, Reader},
        yaml::{self, Node},
    },
    event::Nanos,
    sinks::api::DEFAULT_SOCKET,
};

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
pub const DEFAULT_AUDIT_DIR: &str = "/var/lib/rampwatch/audit";
const DEFAULT_QUIET_PERIOD: Nanos = 300 * 1_000_000_000;
const DEFAULT_READINESS_WINDOW: Nanos = 300 * 1_000_000_000;
const DEFAULT_READINESS_LEAD: Nanos = 86_400 * 1_000_000_000;
const DEFAULT_USAGE_INTERVAL: Nanos = 60 * 1_000_000_000;
const DEFAULT_USAGE_MAX_PAIRS: u32 = 500;

/// Every setting of the live agent, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub contract: PathBuf,
    pub metrics_addr: SocketAddr,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub audit_dir: PathBuf,
    pub audit_key: Option<PathBuf>,
    pub capture: CaptureConfig,
    pub quiet_period: Nanos,
    /// Readiness rates are averaged over this.
    pub readiness_window: Nanos,
    /// How long before a stage `RampStageNotReady` may fire (exported as
    /// `rampwatch_readiness_lead_seconds` for the rule).
    pub readiness_lead: Nanos,
    /// How often usage records go to the audit log, and how many pairs one
    /// interval writes one by one (the rest are summed).
    pub usage_interval: Nanos,
    pub usage_max_pairs: u32,
    /// The host's filesystem as this process sees it (`/`, or `/host` in
    /// the DaemonSet), for naming workloads.
    pub host_root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the agent config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Listing(.path, .diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

struct Listing<'a>(&'a PathBuf, &'a [Diagnostic]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.display().to_string();
        for (i, d) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", d.display_with(&name))?;
        }
        Ok(())
    }
}

/// What the config file may set; `None` where it is silent.
#[derive(Default, Debug, PartialEq)]
struct FileSettings {
    metrics_addr: Option<SocketAddr>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    audit_dir: Option<PathBuf>,
    audit_key: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    host_root: Option<PathBuf>,
    interfaces: Option<Vec<String>>,
    snaplen: Option<u32>,
    first_segments: Option<u32>,
    sample_one_in: Option<u32>,
    ring_bytes: Option<u32>,
    flow_entries: Option<u32>,
    quiet_period: Option<Nanos>,
    readiness_window: Option<Nanos>,
    readiness_lead: Option<Nanos>,
    usage_interval: Option<Nanos>,
    usage_max_pairs: Option<u32>,
    tls_probes: Option<bool>,
    tls_exclude: Option<Vec<String>>,
    tls_max_copy: Option<u32>,
}

fn u32_field(r: &mut Reader, f: &Fields<'_>, key: &str) -> Option<u32> {
    let node = f.get(key)?;
    let path = f.path(key);
    let v = r.non_negative_u64(node, &path)?;
    match u32::try_from(v) {
        Ok(v) => Some(v),
        Err(_) => {
            r.err(
                &path,
                node.pos,
                format!("{v} is too large; the most is {}", u32::MAX),
            );
            None
        }
    }
}

fn text_field(r: &mut Reader, f: &Fields<'_>, key: &str) -> Option<String> {
    let node = f.get(key)?;
    r.text(node, &f.path(key)).map(str::to_owned)
}

/// Reads a config file's text and drops the result: the parser alone, for
/// the fuzz target (`agent/fuzz`, `agent_config`).
pub fn check_text(text: &str) -> Result<(), Vec<Diagnostic>> {
    parse(text).map(drop)
}

fn parse(text: &str) -> Result<FileSettings, Vec<Diagnostic>> {
    let root = match yaml::load(text) {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(FileSettings::default()),
        Err(e) => {
            return Err(vec![Diagnostic {
                path: String::new(),
                line: e.pos.line,
                column: e.pos.column,
                message: format!("YAML syntax error: {}", e.message),
            }]);
        }
    };
    let mut r = Reader::default();
    let settings = read(&mut r, &root);
    if r.diags.is_empty() {
        Ok(settings)
    } else {
        Err(r.diags)
    }
}

fn read(r: &mut Reader, root: &Node) -> FileSettings {
    let mut s = FileSettings::default();
    let Some(top) = r.fields(
        root,
        "",
        &[
            "metricsAddr",
            "socket",
            "socketGroup",
            "auditDir",
            "auditKey",
            "cgroup",
            "hostRoot",
            "interfaces",
            "capture",
            "violations",
            "readiness",
            "usage",
            "tls",
        ],
    ) else {
        return s;
    };
    if let Some(node) = top.get("metricsAddr") {
        let path = top.path("metricsAddr");
        if let Some(t) = r.text(node, &path) {
            match t.parse() {
                Ok(a) => s.metrics_addr = Some(a),
                Err(_) => r.err(
                    &path,
                    node.pos,
                    "expected ADDRESS:PORT, such as 0.0.0.0:9464",
                ),
            }
        }
    }
    s.socket = text_field(r, &top, "socket").map(PathBuf::from);
    s.socket_group = text_field(r, &top, "socketGroup");
    s.audit_dir = text_field(r, &top, "auditDir").map(PathBuf::from);
    s.audit_key = text_field(r, &top, "auditKey").map(PathBuf::from);
    s.cgroup = text_field(r, &top, "cgroup").map(PathBuf::from);
    s.host_root = text_field(r, &top, "hostRoot").map(PathBuf::from);
    if let Some(node) = top.get("interfaces") {
        let path = top.path("interfaces");
        if let Some(items) = r.list(node, &path) {
            let names: Vec<String> = items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| r.text(n, &format!("{path}[{i}]")).map(str::to_owned))
                .collect();
            s.interfaces = Some(names);
        }
    }
    if let Some(node) = top.get("capture")
        && let Some(c) = r.fields(
            node,
            &top.path("capture"),
            &[
                "snaplen",
                "firstSegments",
                "sampleOneIn",
                "ringBytes",
                "flowEntries",
            ],
        )
    {
        s.snaplen = u32_field(r, &c, "snaplen");
        s.first_segments = u32_field(r, &c, "firstSegments");
        s.sample_one_in = u32_field(r, &c, "sampleOneIn");
        s.ring_bytes = u32_field(r, &c, "ringBytes");
        s.flow_entries = u32_field(r, &c, "flowEntries");
        if let (Some(n), Some(node)) = (s.snaplen, c.get("snaplen"))
            && !(1..=agent_common::SNAPLEN_MAX).contains(&n)
        {
            r.err(
                &c.path("snaplen"),
                node.pos,
                format!("snaplen must be 1..={}", agent_common::SNAPLEN_MAX),
            );
        }
        if let (Some(n), Some(node)) = (s.ring_bytes, c.get("ringBytes"))
            && (!n.is_power_of_two() || n < 4096)
        {
            r.err(
                &c.path("ringBytes"),
                node.pos,
                "ringBytes must be a power of two of at least 4096",
            );
        }
    }
    if let Some(node) = top.get("violations")
        && let Some(v) = r.fields(node, &top.path("violations"), &["quietPeriod"])
        && let Some(q) = v.get("quietPeriod")
    {
        s.quiet_period = r.duration(q, &v.path("quietPeriod"));
    }
    if let Some(node) = top.get("readiness")
        && let Some(f) = r.fields(node, &top.path("readiness"), &["window", "lead"])
    {
        s.readiness_window = f
            .get("window")
            .and_then(|n| r.duration(n, &f.path("window")));
        s.readiness_lead = f.get("lead").and_then(|n| r.duration(n, &f.path("lead")));
    }
    if let Some(node) = top.get("usage")
        && let Some(u) = r.fields(node, &top.path("usage"), &["interval", "maxPairs"])
    {
        if let Some(n) = u.get("interval") {
            let path = u.path("interval");
            s.usage_interval = r.duration(n, &path);
            // The agent looks once a second; a shorter interval would
            // promise spans it cannot keep.
            if s.usage_interval.is_some_and(|d| d < 1_000_000_000) {
                r.err(&path, n.pos, "the usage interval must be at least 1s");
            }
        }
        s.usage_max_pairs = u32_field(r, &u, "maxPairs");
        if let (Some(0), Some(n)) = (s.usage_max_pairs, u.get("maxPairs")) {
            r.err(&u.path("maxPairs"), n.pos, "maxPairs must be at least 1");
        }
    }
    if let Some(node) = top.get("tls")
        && let Some(t) = r.fields(node, &top.path("tls"), &["probes", "exclude", "maxCopy"])
    {
        if let Some(n) = t.get("probes") {
            let path = t.path("probes");
            match r.text(n, &path) {
                Some("true") => s.tls_probes = Some(true),
                Some("false") => s.tls_probes = Some(false),
                Some(_) => r.err(&path, n.pos, "expected true or false"),
                None => {}
            }
        }
        if let Some(n) = t.get("exclude") {
            let path = t.path("exclude");
            if let Some(items) = r.list(n, &path) {
                let mut pats = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let Some(text) = r.text(item, &p) {
                        match glob::Pattern::new(text) {
                            Ok(_) => pats.push(text.to_owned()),
                            Err(e) => r.err(&p, item.pos, format!("not a glob pattern: {e}")),
                        }
                    }
                }
                s.tls_exclude = Some(pats);
            }
        }
        s.tls_max_copy = u32_field(r, &t, "maxCopy");
        if let (Some(v), Some(n)) = (s.tls_max_copy, t.get("maxCopy"))
            && !(agent_common::TLS_CHUNK_MAX..=agent_common::TLS_COPY_CAP_MAX).contains(&v)
        {
            r.err(
                &t.path("maxCopy"),
                n.pos,
                format!(
                    "maxCopy must be {}..={}",
                    agent_common::TLS_CHUNK_MAX,
                    agent_common::TLS_COPY_CAP_MAX
                ),
            );
        }
    }
    s
}

impl Settings {
    /// Flags over the config file over defaults.
    pub fn resolve(args: &AgentArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            None => FileSettings::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse(&text).map_err(|diagnostics| ConfigError::Invalid {
                    path: path.clone(),
                    diagnostics,
                })?
            }
        };
        let defaults = CaptureConfig::default();
        let capture = CaptureConfig {
            cgroup: args.cgroup.clone().or(file.cgroup),
            interfaces: if args.ifaces.is_empty() {
                file.interfaces.unwrap_or_default()
            } else {
                args.ifaces.clone()
            },
            snaplen: file.snaplen.unwrap_or(defaults.snaplen),
            first_segments: file.first_segments.unwrap_or(defaults.first_segments),
            sample_one_in: file.sample_one_in.unwrap_or(defaults.sample_one_in),
            ring_bytes: file.ring_bytes.unwrap_or(defaults.ring_bytes),
            flow_entries: file.flow_entries.unwrap_or(defaults.flow_entries),
            tls: crate::capture::TlsOptions {
                enabled: !args.no_tls_probes && file.tls_probes.unwrap_or(defaults.tls.enabled),
                exclude: file.tls_exclude.clone().unwrap_or_default(),
                max_copy: file.tls_max_copy.unwrap_or(defaults.tls.max_copy),
                ..defaults.tls.clone()
            },
            ..defaults
        };
        Ok(Self {
            contract: args.contract.clone(),
            metrics_addr: args
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or_else(|| DEFAULT_METRICS_ADDR.parse().expect("valid default address")),
            socket: args
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            socket_group: args.socket_group.clone().or(file.socket_group),
            audit_dir: args
                .audit_dir
                .clone()
                .or(file.audit_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_DIR)),
            audit_key: args.audit_key.clone().or(file.audit_key),
            capture,
            quiet_period: file.quiet_period.unwrap_or(DEFAULT_QUIET_PERIOD),
            readiness_window: file.readiness_window.unwrap_or(DEFAULT_READINESS_WINDOW),
            readiness_lead: file.readiness_lead.unwrap_or(DEFAULT_READINESS_LEAD),
            usage_interval: file.usage_interval.unwrap_or(DEFAULT_USAGE_INTERVAL),
            usage_max_pairs: file.usage_max_pairs.unwrap_or(DEFAULT_USAGE_MAX_PAIRS),
            host_root: args
                .host_root
                .clone()
                .or(file.host_root)
                .unwrap_or_else(|| PathBuf::from("/")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_field() {
        let s = parse(
            "metricsAddr: 0.0.0.0:9464\nsocket: /run/x.sock\nsocketGroup: rw\nauditDir: /a\n\
             auditKey: /k\ncgroup: /sys/fs/cgroup\ninterfaces: [eth0, eth1]\n\
             capture:\n  snaplen: 1024\n  firstSegments: 2\n  sampleOneIn: 8\n  ringBytes: 65536\n  flowEntries: 1000\n\
             violations:\n  quietPeriod: 2m\nreadiness:\n  window: 10m\n  lead: 2d\n",
        )
        .expect("valid config");
        assert_eq!(s.readiness_window, Some(600 * 1_000_000_000));
        assert_eq!(s.readiness_lead, Some(2 * 86_400 * 1_000_000_000));
        assert_eq!(s.metrics_addr, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(s.interfaces, Some(vec!["eth0".into(), "eth1".into()]));
        assert_eq!(s.snaplen, Some(1024));
        assert_eq!(s.ring_bytes, Some(65536));
        assert_eq!(s.quiet_period, Some(120 * 1_000_000_000));
        assert_eq!(s.socket_group.as_deref(), Some("rw"));
    }

    #[test]
    fn errors_name_path_and_line() {
        let errs =
            parse("socket: /x\ncapture:\n  snaplen: 0\n  ringBytes: 1000\n  sampel: 3\nbogus: 1\n")
                .expect_err("invalid config");
        let find = |p: &str| {
            errs.iter()
                .find(|d| d.path == p)
                .unwrap_or_else(|| panic!("no error at {p}: {errs:?}"))
        };
        assert_eq!(find("capture.snaplen").line, 3);
        assert_eq!(find("capture.ringBytes").line, 4);
        assert_eq!(find("capture.sampel").line, 5);
        assert_eq!(find("bogus").line, 6);
        assert!(parse("metricsAddr: [\n").is_err());
        assert!(parse("metricsAddr: nowhere\n").is_err());
    }

    #[test]
    fn tls_probe_settings() {
        let s = parse("tls:\n  probes: false\n  exclude: [wrk, /usr/bin/h2*]\n  maxCopy: 8192\n")
            .expect("valid config");
        assert_eq!(s.tls_probes, Some(false));
        assert_eq!(
            s.tls_exclude,
            Some(vec!["wrk".to_owned(), "/usr/bin/h2*".to_owned()])
        );
        assert_eq!(s.tls_max_copy, Some(8192));
        let errs = parse("tls:\n  probes: maybe\n  exclude: ['[']\n  maxCopy: 100\n")
            .expect_err("invalid tls settings");
        for p in ["tls.probes", "tls.exclude[0]", "tls.maxCopy"] {
            assert!(
                errs.iter().any(|d| d.path == p),
                "no error at {p}: {errs:?}"
            );
        }
    }

    #[test]
    fn usage_settings() {
        let s = parse("usage:\n  interval: 5s\n  maxPairs: 20\n").expect("valid usage settings");
        assert_eq!(s.usage_interval, Some(5_000_000_000));
        assert_eq!(s.usage_max_pairs, Some(20));
        let errs = parse("usage:\n  interval: 0s\n  maxPairs: 0\n  every: 1\n")
            .expect_err("invalid usage settings");
        for (p, line) in [
            ("usage.interval", 2),
            ("usage.maxPairs", 3),
            ("usage.every", 4),
        ] {
            assert!(
                errs.iter().any(|d| d.path == p && d.line == line),
                "no error at {p} line {line}: {errs:?}"
            );
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").expect("empty is fine"), FileSettings::default());
    }
}

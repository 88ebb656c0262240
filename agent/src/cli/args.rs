//! Command-line interface: clap definitions only; `main.rs` dispatches.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{contract::parse_rfc3339, event::Nanos};

/// rampwatch: checks API ramp contracts against live traffic.
#[derive(Parser, Debug)]
#[command(name = "rampwatch", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned columns for people, fitting 80 columns.
    #[default]
    Table,
    /// One JSON object per line, for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the live agent on this node (root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON).
    Agent(AgentArgs),
    /// Judge pcap/pcapng files against a contract, with the live agent's engine.
    ///
    /// Exit status: 0 clean, 1 violations found, 2 unusable input.
    ///
    /// Example: rampwatch replay --contract ramp.yaml -o json yesterday.pcap
    Replay(ReplayArgs),
    /// Validate a ramp contract and show its stage timeline.
    #[command(subcommand)]
    Contract(ContractCommand),
    /// Read a credential on stdin and print the fingerprint to put in a contract.
    ///
    /// Example: printf %s "$TOKEN" | rampwatch fingerprint
    Fingerprint {
        /// The header the credential is sent in; for `authorization`, a
        /// "Bearer X" or "Basic X" value is fingerprinted as X.
        #[arg(long, default_value = "authorization")]
        header: String,
    },
    /// Tamper-evident audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Agent health: contract, stage, capture, losses.
    Status(ClientArgs),
    /// The active stage, what changes next and when.
    Stage(ClientArgs),
    /// Per client and endpoint: current rate, quota, headroom, next stage's quota.
    Clients(ClientArgs),
    /// Recent flows with protocol, TLS version, endpoint and client.
    Flows(ClientArgs),
    /// Open and recently resolved violations.
    Violations(ViolationsArgs),
    /// Stream violations as they open, escalate and resolve.
    Watch(ClientArgs),
    /// Is the traffic ready for the next stage (or --stage NAME)?
    ///
    /// Lists each client × endpoint whose rate (over the agent's readiness
    /// window) is above that stage's quota or that gets no quota there, each
    /// credential that will be stale when it starts, each endpoint it opens
    /// or closes, and how long until it starts. Exit 1 when not ready.
    Readiness(ReadinessArgs),
    /// Acknowledge an open violation: recorded in the audit log with your
    /// name, your uid and the note; the SLA clock keeps running. Root or
    /// the agent's --socket-group only.
    ///
    /// Example: rampwatch ack v3c91f0a2d4 --by alice --note "client team paged, fix due 14:00"
    Ack(AckArgs),
    /// What happened during a stage, from audit logs alone: requests per
    /// client and endpoint against quota, violations opened, escalated and
    /// resolved, SLA breaches, acknowledgements, reloads, stage changes and
    /// each node's starts, stops and losses.
    ///
    /// Every log is verified first: a broken chain gets no report (exit 1).
    /// Give one --audit-dir per node; their counts are summed.
    ///
    /// Example: rampwatch report --stage pilot --audit-dir node-a --audit-dir node-b > pilot.md
    Report(ReportArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum ReportFormat {
    /// Sections and tables to paste into a review.
    #[default]
    Markdown,
    /// One JSON object (field names in docs/audit.md).
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The stage to report on (as the contract names it).
    #[arg(long, value_name = "NAME")]
    pub stage: String,
    /// An agent's audit directory; repeat for several nodes.
    #[arg(long = "audit-dir", value_name = "DIR", default_value = crate::runtime::config::DEFAULT_AUDIT_DIR)]
    pub audit_dirs: Vec<PathBuf>,
    /// HMAC key file: one for all directories, or one per --audit-dir in
    /// the same order.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// A head kept earlier (`audit anchor`), one per --audit-dir in the
    /// same order: SEQ:HASH or a file holding it. A log cut or rewritten
    /// since gets no report.
    #[arg(long = "anchor", value_name = "SEQ:HASH|FILE")]
    pub anchors: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Markdown)]
    pub output: ReportFormat,
}

#[derive(Args, Debug, Clone)]
pub struct AckArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The violation's id (`rampwatch violations`).
    pub id: String,
    /// Who acknowledges (recorded with your uid).
    #[arg(long)]
    pub by: String,
    /// Why, or what happens next.
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The ramp contract (YAML); reloaded on change and on SIGHUP.
    #[arg(long)]
    pub contract: PathBuf,
    /// Agent settings file (YAML, see docs/operations.md); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where Prometheus scrapes /metrics [default: 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Unix socket the CLI talks to [default: /run/rampwatch/rampwatch.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Group (name or gid) allowed on the socket besides root.
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Directory of the audit log [default: /var/lib/rampwatch/audit].
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// HMAC key file for the audit log.
    #[arg(long)]
    pub audit_key: Option<PathBuf>,
    /// cgroup v2 directory to watch (default: the root of the v2 hierarchy).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Where the host's filesystem is mounted, for naming workloads from a
    /// container: its cgroupfs, `/proc` and `/var/log/pods` under this
    /// prefix (the DaemonSet mounts them at `/host/...`) [default: /].
    #[arg(long)]
    pub host_root: Option<PathBuf>,
    /// Also watch forwarded traffic on this interface (TC); repeatable.
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// Do not probe OpenSSL for TLS plaintext (wire capture only).
    #[arg(long)]
    pub no_tls_probes: bool,
}

#[derive(Subcommand, Debug)]
pub enum ContractCommand {
    /// Validate FILE; print its stage timeline. Exit 2 on errors.
    Check {
        file: PathBuf,
        /// Show the stage active at this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// What changes from OLD to NEW, for whom; exit 1 when a term loosens.
    ///
    /// Loosening: a quota or burst raised or newly granted, a revocation
    /// removed or moved later, encryption or authentication made optional,
    /// minTlsVersion lowered, a forbidden cipher removed, credentialMaxAge or
    /// a remediation window lengthened, an endpoint's paths, hosts or ports
    /// widened, the watched scope narrowed, a stage that raises quotas moved
    /// earlier. Exit 0 otherwise, 2 when either contract is invalid.
    ///
    /// Example: rampwatch contract diff main.yaml pr.yaml
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Print the JSON Schema of the contract format, for editors.
    Schema,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain (and HMACs with --key); exit 0 only when intact.
    Verify {
        dir: PathBuf,
        #[arg(long)]
        key: Option<PathBuf>,
        /// A head kept earlier (`audit anchor`): SEQ:HASH, or a file holding
        /// it. The log must still hold it, so a truncated tail is detected.
        #[arg(long, value_name = "SEQ:HASH|FILE")]
        anchor: Option<String>,
    },
    /// Verify the log, then print its head as SEQ:HASH, to keep off this host.
    ///
    /// Example: rampwatch audit anchor /var/lib/rampwatch/audit > anchor.txt
    Anchor {
        dir: PathBuf,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The agent's socket.
    #[arg(long, default_value = crate::sinks::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct ReadinessArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The stage to check (default: the next one).
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ViolationsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only violations seen within this long (e.g. 15m, 2h, 1d).
    #[arg(long)]
    pub since: Option<String>,
}

/// `rampwatch replay` arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// The ramp contract to judge the captures against.
    #[arg(long, value_name = "FILE")]
    pub contract: PathBuf,
    /// Judge stage, credential age and revocations at this time (RFC 3339,
    /// e.g. 2026-12-01T00:00:00Z) instead of packet times; quota windows
    /// still use packet times.
    #[arg(long, value_name = "TIME", value_parser = parse_at, conflicts_with = "stage")]
    pub at: Option<Nanos>,
    /// Judge as at the start of stage NAME (like --at its startsAt) and
    /// report the capture's readiness for it: rates above its quotas or
    /// without one, credentials stale when it starts, endpoints it opens or
    /// closes. Exit 1 when not ready.
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Readiness rates are averaged over this window of the capture's end
    /// (or the whole capture when shorter).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_window)]
    pub rate_window: Nanos,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// pcap or pcapng files, read in order as one capture.
    #[arg(required = true, value_name = "PCAP")]
    pub pcaps: Vec<PathBuf>,
}

fn parse_window(s: &str) -> Result<Nanos, String> {
    crate::contract::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_at(s: &str) -> Result<Nanos, String> {
    parse_rfc3339(s).map_err(|e| e.to_string())
}

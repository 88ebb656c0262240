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
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    pub at: Option<Nanos>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// pcap or pcapng files, read in order as one capture.
    #[arg(required = true, value_name = "PCAP")]
    pub pcaps: Vec<PathBuf>,
}

fn parse_at(s: &str) -> Result<Nanos, String> {
    parse_rfc3339(s).map_err(|e| e.to_string())
}

//! `rampwatch`: parses the command line and hands over to the library.
//! Errors reach the operator as one sentence (with its causes), never a
//! backtrace.

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
};

use agent::{
    cli::{self, AuditCommand, Cli, Command, ContractCommand, LogFormat, client},
    contract,
    sinks::api::views::{Request, Response},
};
use anyhow::Context as _;
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let mut msg = format!("error: {e}");
            // Module errors often already name their cause; say each once.
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(&format!(": {cause}"));
                }
            }
            let _ = writeln!(std::io::stderr(), "{msg}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAMPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, not in files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let (args, request) = match command {
        Command::Status(a) => (a, Request::Status),
        Command::Stage(a) => (a, Request::Stage),
        Command::Clients(a) => (a, Request::Clients),
        Command::Flows(a) => (a, Request::Flows),
        Command::Watch(a) => (a, Request::Watch),
        Command::Readiness(r) => (r.client, Request::Readiness { stage: r.stage }),
        Command::Ack(a) => (
            a.client,
            Request::Ack {
                id: a.id,
                by: a.by,
                note: a.note,
            },
        ),
        Command::Violations(v) => {
            let since_secs = v
                .since
                .as_deref()
                .map(|s| {
                    contract::parse_duration(s)
                        .with_context(|| format!("--since {s:?}"))
                        .map(|ns| u64::try_from(ns / 1_000_000_000).unwrap_or(0))
                })
                .transpose()?;
            (v.client, Request::Violations { since_secs })
        }
        Command::Contract(ContractCommand::Check { file, at }) => {
            let at = at.as_deref().map(parse_at).transpose()?;
            let mut err = std::io::stderr().lock();
            return Ok(cli::contract::run_check(&file, at, &mut out, &mut err)?.exit_code());
        }
        Command::Contract(ContractCommand::Diff { old, new, output }) => {
            let mut err = std::io::stderr().lock();
            return Ok(
                cli::contract::run_diff(&old, &new, output, &mut out, &mut err)?.exit_code(),
            );
        }
        Command::Contract(ContractCommand::Schema) => {
            return Ok(cli::contract::run_schema(&mut out)?.exit_code());
        }
        Command::Fingerprint { header } => {
            let mut err = std::io::stderr().lock();
            let mut stdin = std::io::stdin().lock();
            return Ok(cli::contract::run_fingerprint(
                Some(&header),
                &mut stdin,
                &mut out,
                &mut err,
            )?
            .exit_code());
        }
        Command::Agent(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(agent::runtime::run(args))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Replay(args) => {
            return Ok(ExitCode::from(agent::replay::run(&args, &mut out)));
        }
        Command::Audit(AuditCommand::Verify { dir, key, anchor }) => {
            let code = agent::sinks::audit::run_verify_anchored(
                &dir,
                key.as_deref(),
                anchor.as_deref(),
                &mut out,
            );
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(2)));
        }
        Command::Report(r) => {
            let json = r.output == cli::ReportFormat::Json;
            return match cli::report::run(
                &r.stage,
                &r.audit_dirs,
                &r.keys,
                &r.anchors,
                json,
                &mut out,
            ) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => match e.downcast_ref::<cli::report::ReportError>() {
                    Some(re) => {
                        let _ = writeln!(std::io::stderr(), "error: {re}");
                        Ok(ExitCode::from(re.exit_code()))
                    }
                    None => Err(e),
                },
            };
        }
        Command::Audit(AuditCommand::Anchor { dir, key, output }) => {
            let mut err = std::io::stderr().lock();
            let json = output == cli::OutputFormat::Json;
            let code =
                agent::sinks::audit::run_anchor(&dir, key.as_deref(), json, &mut out, &mut err);
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(2)));
        }
    };
    match client::query(&args.socket, &request, args.output, &mut out) {
        Err(e) if !e.is_closed_output() => Err(e.into()),
        // `readiness` exits 1 when something must be fixed before the
        // stage, so a cron job or pipeline can act on it.
        Ok(Some(Response::Readiness(r))) if !r.rows.is_empty() => Ok(ExitCode::from(1)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `--at` values: RFC 3339, as in the contract.
fn parse_at(s: &str) -> anyhow::Result<agent::event::Nanos> {
    contract::parse_rfc3339(s)
        .with_context(|| format!("--at {s:?} (expected RFC 3339, such as 2026-12-01T00:00:00Z)"))
}

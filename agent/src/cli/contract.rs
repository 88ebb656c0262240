//! `rampwatch contract check`, `rampwatch contract schema` and
//! `rampwatch fingerprint`, as functions the clap layer calls.

use std::{
    io::{self, Read, Write},
    path::Path,
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    OutputFormat,
    diff::{self, Effect},
};
use crate::{
    contract::{
        Contract, ContractError, Quota, Stage, format_duration, format_rfc3339, schema_json,
    },
    event::Nanos,
    identity,
};

/// How a command ended; the process exit code follows from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// `contract diff`: at least one term loosens (exit 1).
    Loosened,
    /// Invalid input (contract errors, empty credential): exit 2.
    Invalid,
}

impl Outcome {
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Loosened => 1,
            Self::Invalid => 2,
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// The current wall-clock time as [`Nanos`].
pub fn now() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// `rampwatch contract check FILE [--at TIME]`.
///
/// On success prints a summary, the stage timeline with what changes at
/// each stage, and which stage is active at `at` (default: now) to `out`.
/// On failure prints every problem to `err`, one per line as
/// `FILE:LINE:COL: path: message`, and returns [`Outcome::Invalid`] (exit 2).
/// `Err` only when writing fails.
pub fn run_check(
    path: &Path,
    at: Option<Nanos>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Outcome> {
    match load_or_report(path, err)? {
        Some(contract) => {
            describe(&contract, at.unwrap_or_else(now), out)?;
            Ok(Outcome::Success)
        }
        None => Ok(Outcome::Invalid),
    }
}

/// Loads a contract; on failure prints every problem to `err` (one per
/// line, `FILE:LINE:COL: path: message`) and returns `None`.
fn load_or_report(path: &Path, err: &mut impl Write) -> io::Result<Option<Contract>> {
    match Contract::load(path) {
        Ok(contract) => Ok(Some(contract)),
        Err(e @ ContractError::Read { .. }) => {
            writeln!(err, "{}: {e}", path.display())?;
            Ok(None)
        }
        Err(e) => {
            writeln!(err, "{e}")?;
            let n = e.diagnostics().len();
            writeln!(
                err,
                "{}: {n} error{}; the contract was not loaded",
                path.display(),
                if n == 1 { "" } else { "s" }
            )?;
            Ok(None)
        }
    }
}

/// `rampwatch contract diff OLD NEW [-o table|json]`: every change from
/// OLD to NEW and what it does (see [`super::diff`]). Exit 1
/// ([`Outcome::Loosened`]) when a term loosens, 0 otherwise, 2 when either
/// contract is invalid (both are checked, every problem printed).
pub fn run_diff(
    old: &Path,
    new: &Path,
    format: OutputFormat,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Outcome> {
    let (a, b) = (load_or_report(old, err)?, load_or_report(new, err)?);
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(Outcome::Invalid);
    };
    let changes = diff::diff(&a, &b);
    let loosening = changes
        .iter()
        .filter(|c| c.effect == Effect::Loosens)
        .count();
    match format {
        OutputFormat::Json => {
            for c in &changes {
                serde_json::to_writer(&mut *out, c).map_err(io::Error::other)?;
                writeln!(out)?;
            }
        }
        OutputFormat::Table => {
            let tightening = changes
                .iter()
                .filter(|c| c.effect == Effect::Tightens)
                .count();
            writeln!(
                out,
                "{} → {}: {} change{}, {loosening} loosen{}, {tightening} tighten{}",
                old.display(),
                new.display(),
                changes.len(),
                if changes.len() == 1 { "" } else { "s" },
                if loosening == 1 { "s" } else { "" },
                if tightening == 1 { "s" } else { "" },
            )?;
            if !changes.is_empty() {
                writeln!(out, "\n{:<9} {:<9} CHANGE", "EFFECT", "CLIENT")?;
            }
            for c in &changes {
                writeln!(
                    out,
                    "{:<9} {:<9} {}",
                    c.effect.as_str(),
                    c.client.as_deref().unwrap_or("-"),
                    c.detail
                )?;
            }
        }
    }
    Ok(if loosening > 0 {
        Outcome::Loosened
    } else {
        Outcome::Success
    })
}

/// Writes the `contract check` report for a valid contract.
pub fn describe(c: &Contract, at: Nanos, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{}: contract `{}` is valid ({})",
        c.source_name(),
        c.name(),
        c.sha256()
    )?;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    writeln!(
        out,
        "  {}, {}, {}, {}, {}",
        plural(c.data_classes().len(), "data class", "data classes"),
        plural(c.endpoints().len(), "endpoint", "endpoints"),
        plural(c.clients().len(), "client", "clients"),
        plural(c.stages().len(), "stage", "stages"),
        plural(c.revocations().len(), "revocation", "revocations"),
    )?;
    let r = c.remediation();
    let show = |d: Option<Nanos>| d.map_or_else(|| "never".to_owned(), format_duration);
    writeln!(
        out,
        "  remediation: warn after {}, breach after {}",
        show(r.warn_after),
        show(r.breach_after)
    )?;

    writeln!(out, "\nstage timeline:")?;
    let mut previous: Option<&Stage> = None;
    for stage in c.stages() {
        writeln!(out, "  {}  {}", format_rfc3339(stage.starts_at), stage.name)?;
        let changes = stage_changes(c, previous, stage);
        if changes.is_empty() {
            writeln!(out, "      no changes")?;
        }
        for line in changes {
            writeln!(out, "      {line}")?;
        }
        previous = Some(stage);
    }

    if !c.revocations().is_empty() {
        writeln!(out, "\nrevocations:")?;
        for rev in c.revocations() {
            let reason = rev
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            writeln!(
                out,
                "  {}  {}{reason}",
                format_rfc3339(rev.revoked_at),
                rev.target
            )?;
        }
    }

    writeln!(out)?;
    let when = format_rfc3339(at);
    match c.stage_at(at) {
        Some(stage) => {
            write!(
                out,
                "at {when}: stage `{}` is active (since {})",
                stage.name,
                format_rfc3339(stage.starts_at)
            )?;
            match c.next_stage_change_after(at) {
                Some(next) => writeln!(
                    out,
                    "; next: `{}` at {}",
                    next.name,
                    format_rfc3339(next.starts_at)
                ),
                None => writeln!(out, "; it is the last stage"),
            }
        }
        None => match c.stages().first() {
            Some(first) => writeln!(
                out,
                "at {when}: no stage active yet; first stage `{}` starts at {}",
                first.name,
                format_rfc3339(first.starts_at)
            ),
            None => writeln!(out, "at {when}: no stage active"),
        },
    }
}

fn show_quota(q: Quota) -> String {
    format!("{} req/s, burst {}", q.rps, q.burst)
}

/// What `stage` changes compared to `previous` (or sets, for the first).
fn stage_changes(c: &Contract, previous: Option<&Stage>, stage: &Stage) -> Vec<String> {
    let mut lines = Vec::new();
    let age = |s: Option<&Stage>| s.and_then(|s| s.credential_max_age);
    let (before, after) = (age(previous), age(Some(stage)));
    if previous.is_none() || before != after {
        let show = |d: Option<Nanos>| d.map_or_else(|| "unlimited".to_owned(), format_duration);
        lines.push(match previous {
            None => format!("credentialMaxAge {}", show(after)),
            Some(_) => format!("credentialMaxAge {} → {}", show(before), show(after)),
        });
    }
    for rule in &stage.quotas {
        let old = previous.and_then(|p| p.quota(&rule.client, &rule.endpoint));
        let head = format!("quota {} → {}:", rule.client, rule.endpoint);
        match old {
            Some(old) if old == rule.quota => {}
            Some(old) => lines.push(format!(
                "{head} {} → {}",
                show_quota(old),
                show_quota(rule.quota)
            )),
            None if previous.is_none() => lines.push(format!("{head} {}", show_quota(rule.quota))),
            None => lines.push(format!("{head} new, {}", show_quota(rule.quota))),
        }
    }
    for rule in previous.map(|p| p.quotas.as_slice()).unwrap_or_default() {
        if stage.quota(&rule.client, &rule.endpoint).is_none() {
            lines.push(format!(
                "quota {} → {}: removed (quota 0 from now on)",
                rule.client, rule.endpoint
            ));
        }
    }
    // Credentials that are already too old the moment the stage begins:
    // the stage's owner has to rotate them before it starts.
    for client in c.clients() {
        for cred in &client.credentials {
            let stale_now = stage.credential_stale(cred, stage.starts_at);
            let stale_before = previous.is_some_and(|p| p.credential_stale(cred, stage.starts_at));
            if stale_now && !stale_before {
                lines.push(format!(
                    "credential {} of {} becomes stale (issued {}, older than {})",
                    cred.fingerprint.short(),
                    client.name,
                    format_rfc3339(cred.issued_at),
                    stage
                        .credential_max_age
                        .map(format_duration)
                        .unwrap_or_default()
                ));
            }
        }
    }
    lines
}

/// `rampwatch contract schema`: prints the JSON Schema of the contract
/// file (the content of `docs/contract.schema.json`).
pub fn run_schema(out: &mut impl Write) -> io::Result<Outcome> {
    out.write_all(schema_json().as_bytes())?;
    Ok(Outcome::Success)
}

/// Credentials longer than this are certainly not what the user meant to
/// pipe in.
const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

/// `rampwatch fingerprint [--header NAME]`: reads one credential from
/// `input` (stdin), strips one trailing newline, and prints its
/// fingerprint as a contract lists it ([`crate::identity::credential::fingerprint`];
/// `header` defaults to `authorization`, so both `TOKEN` and
/// `Bearer TOKEN` give the token's fingerprint).
pub fn run_fingerprint(
    header: Option<&str>,
    input: &mut impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Outcome> {
    let mut raw = Vec::new();
    input.take(MAX_CREDENTIAL_BYTES + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_CREDENTIAL_BYTES {
        writeln!(
            err,
            "the input is larger than {MAX_CREDENTIAL_BYTES} bytes; pipe in one credential only"
        )?;
        return Ok(Outcome::Invalid);
    }
    let value = raw
        .strip_suffix(b"\r\n")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(&raw);
    if value.trim_ascii().is_empty() {
        writeln!(
            err,
            "no credential on standard input; pipe one in, e.g. `printf %s \"$TOKEN\" | rampwatch fingerprint`"
        )?;
        return Ok(Outcome::Invalid);
    }
    let fp = identity::credential_fingerprint(header.unwrap_or("authorization"), value);
    writeln!(out, "{fp}")?;
    Ok(Outcome::Success)
}

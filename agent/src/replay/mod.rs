//! `rampwatch replay`: pcap and pcapng files through the engine the live
//! agent runs, with packet timestamps as the clock (or `--at` for the
//! contract's terms). Prints flows, violations and a summary as JSON lines
//! or as tables for 80 columns; with `--stage NAME`, judged at that stage's
//! start and followed by the capture's readiness for it. Exit 0 clean, 1
//! violations (or not ready), 2 unusable input.

mod output;

use std::{
    io::{self, IsTerminal, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use self::output::{Printer, Summary};
// The arguments are with the rest of what a person types, in `cli`.
pub use crate::cli::{OutputFormat as Format, ReplayArgs};
use crate::{
    contract::{Contract, ContractError},
    event::{Event, Nanos},
    pcap::PcapReader,
    policy::{Engine, EngineOptions, Output, RateWindow},
    sinks::api::readiness::ReadinessView,
};

/// Exit codes.
pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_VIOLATIONS: u8 = 1;
pub const EXIT_UNUSABLE: u8 = 2;

/// Packets between looks at the clock for progress and output flushing.
const BATCH: u64 = 1 << 16;
/// Flows reported per step at the end of a capture.
const FINISH_BATCH: usize = 4096;

/// Runs a replay, writing results to `out` and problems (and progress, on
/// a terminal) to stderr. Returns the exit code.
pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> u8 {
    let stderr = io::stderr();
    let mut err = stderr.lock();
    match replay(args, out, &mut err, io::stderr().is_terminal()) {
        Ok(code) => code,
        Err(e) => {
            // Broken pipe on stdout (`| head`) is not the input's fault.
            if e.kind() != io::ErrorKind::BrokenPipe {
                let _ = writeln!(err, "rampwatch replay: cannot write the output: {e}");
            }
            EXIT_UNUSABLE
        }
    }
}

/// A capture file holds packets, not the sockets' cgroups or processes:
/// clients the contract names by workload are identified in a replay only
/// by their credentials, certificates or sources. Says so, once.
pub fn workload_note(contract: &Contract) -> Option<String> {
    let named: Vec<&str> = contract
        .clients()
        .iter()
        .filter(|c| !c.workloads.is_empty())
        .map(|c| &*c.name)
        .collect();
    if named.is_empty() {
        return None;
    }
    Some(format!(
        "rampwatch replay: note: a capture file has no workloads, so {} `{}` {} identified here only by {} credentials, certificates or sources, never by `workloads`",
        if named.len() == 1 {
            "client"
        } else {
            "clients"
        },
        named.join("`, `"),
        if named.len() == 1 { "is" } else { "are" },
        if named.len() == 1 { "its" } else { "their" },
    ))
}

/// Endpoints served by workloads: without sockets a replay cannot see
/// which pod served a connection, so an endpoint named only by `workloads`
/// never matches, and one that also lists `hosts` matches by those. Says
/// so, once.
pub fn endpoint_workload_note(contract: &Contract) -> Option<String> {
    let served = || {
        contract
            .endpoints()
            .iter()
            .filter(|e| !e.workloads.is_empty())
    };
    let only: Vec<&str> = served()
        .filter(|e| e.hosts.is_empty())
        .map(|e| &*e.name)
        .collect();
    let also: Vec<&str> = served()
        .filter(|e| !e.hosts.is_empty())
        .map(|e| &*e.name)
        .collect();
    let plural = |v: &[&str], one: &'static str, many: &'static str| {
        if v.len() == 1 { one } else { many }
    };
    let mut parts = Vec::new();
    if !only.is_empty() {
        parts.push(format!(
            "{} `{}` {} named only by `workloads`, so {} traffic never matches here",
            plural(&only, "endpoint", "endpoints"),
            only.join("`, `"),
            plural(&only, "is", "are"),
            plural(&only, "its", "their"),
        ));
    }
    if !also.is_empty() {
        parts.push(format!(
            "{} `{}` {} matched here only by {} `hosts`, never by `workloads`",
            plural(&also, "endpoint", "endpoints"),
            also.join("`, `"),
            plural(&also, "is", "are"),
            plural(&also, "its", "their"),
        ));
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "rampwatch replay: note: a capture file has no workloads: {}",
        parts.join("; ")
    ))
}

/// [`run`] with explicit streams, for tests.
pub fn replay(
    args: &ReplayArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> io::Result<u8> {
    let contract = match Contract::load(&args.contract) {
        Ok(c) => Arc::new(c),
        Err(e @ ContractError::Read { .. }) => {
            writeln!(err, "rampwatch replay: {e}")?;
            return Ok(EXIT_UNUSABLE);
        }
        Err(e) => {
            writeln!(err, "{e}")?;
            writeln!(
                err,
                "rampwatch replay: {} is not a valid contract; fix the errors above (`rampwatch contract check` shows them too)",
                args.contract.display()
            )?;
            return Ok(EXIT_UNUSABLE);
        }
    };
    for note in [workload_note(&contract), endpoint_workload_note(&contract)]
        .into_iter()
        .flatten()
    {
        writeln!(err, "{note}")?;
    }
    // Open every file first: a typo in the last name should not cost a
    // long replay of the others.
    let mut readers = Vec::with_capacity(args.pcaps.len());
    for path in &args.pcaps {
        match PcapReader::open(path) {
            Ok(r) => readers.push(r),
            Err(e) => {
                writeln!(err, "rampwatch replay: {e}")?;
                return Ok(EXIT_UNUSABLE);
            }
        }
    }
    // `--stage NAME`: its terms, judged at its start.
    let at = match &args.stage {
        None => args.at,
        Some(name) => match contract.stage(name) {
            Some(stage) => Some(stage.starts_at),
            None => {
                let known: Vec<&str> = contract.stages().iter().map(|s| &*s.name).collect();
                writeln!(
                    err,
                    "rampwatch replay: the contract has no stage named `{name}`; its stages are: {}",
                    known.join(", ")
                )?;
                return Ok(EXIT_UNUSABLE);
            }
        },
    };
    let opts = EngineOptions {
        fixed_time: at,
        quiet_period: None,
        rate_window: RateWindow(args.rate_window),
        report_classified: false,
        ..EngineOptions::default()
    };
    let mut engine = Engine::new(contract.clone(), opts);
    // Output is many small writes per flow; stdout is line-buffered.
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut printer = Printer::new(args.output, &mut out);
    let mut summary = Summary {
        files: readers.len(),
        at,
        ..Summary::default()
    };
    let started = Instant::now();
    let mut last_progress = started;
    let mut corrupt = 0usize;
    for mut reader in readers {
        let mut n: u64 = 0;
        loop {
            match reader.next_packet() {
                Ok(Some(p)) => {
                    summary.first_packet =
                        Some(summary.first_packet.map_or(p.ts, |f: Nanos| f.min(p.ts)));
                    summary.last_packet =
                        Some(summary.last_packet.map_or(p.ts, |l: Nanos| l.max(p.ts)));
                    engine.handle(Event::Packet(p));
                    n += 1;
                    if n.is_multiple_of(BATCH) {
                        emit(&mut engine, &mut printer, &mut summary)?;
                        if progress && last_progress.elapsed() >= Duration::from_millis(250) {
                            last_progress = Instant::now();
                            let pr = reader.progress();
                            let pct = pr.bytes_done.saturating_mul(100) / pr.bytes_total.max(1);
                            write!(
                                err,
                                "\r{}: {pct:>3}%  {} packets  {} flows",
                                reader.path().display(),
                                summary.packets + n,
                                engine.flow_stats().flows
                            )?;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if progress {
                        write!(err, "\r\x1b[K")?;
                    }
                    writeln!(err, "rampwatch replay: {e}")?;
                    corrupt += 1;
                    break;
                }
            }
        }
        summary.packets += n;
        summary.decode.merge(&reader.stats());
    }
    if progress {
        write!(err, "\r\x1b[K")?;
    }
    // Flows still open at the end are reported a batch at a time, so their
    // records are printed as they are made rather than all held at once.
    while engine.finish_some(FINISH_BATCH) {
        emit(&mut engine, &mut printer, &mut summary)?;
    }
    emit(&mut engine, &mut printer, &mut summary)?;
    let violations = engine.violations();
    summary.elapsed = started.elapsed();
    summary.flow_stats = engine.flow_stats();
    summary.engine_stats = engine.stats();
    summary.malformed_requests = engine.request_totals().iter().map(|r| r.malformed).sum();
    summary.stage = engine.stage();
    summary.corrupt_files = corrupt;
    let readiness = match &args.stage {
        Some(name) => match engine.readiness(Some(name)) {
            Ok(r) => Some(ReadinessView::from(&r)),
            Err(e) => {
                writeln!(err, "rampwatch replay: {e}")?;
                return Ok(EXIT_UNUSABLE);
            }
        },
        None => None,
    };
    printer.finish(&violations, &summary, readiness.as_ref())?;
    let not_ready = readiness.as_ref().is_some_and(|r| !r.rows.is_empty());
    Ok(if summary.packets == 0 && corrupt > 0 {
        EXIT_UNUSABLE
    } else if violations.is_empty() && !not_ready {
        EXIT_CLEAN
    } else {
        EXIT_VIOLATIONS
    })
}

fn emit(engine: &mut Engine, printer: &mut Printer<'_>, summary: &mut Summary) -> io::Result<()> {
    for o in engine.drain() {
        if let Output::Flow(f) = o {
            summary.flows += 1;
            summary.requests += f.requests;
            printer.flow(&f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_naming_workloads_gets_one_note_naming_those_clients() {
        let base = "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: n\nspec:\n  clients:\n    - name: a\n      sources: [\"10.0.0.0/8\"]\n    - name: b\n      workloads: [{namespace: x}]\n      sources: [\"10.1.0.0/16\"]\n  stages:\n    - name: s\n      startsAt: \"2026-01-01T00:00:00Z\"\n";
        let c = Contract::parse(base, "n.yaml").expect("valid");
        let note = workload_note(&c).expect("a note");
        assert!(
            note.contains(
                "client `b` is identified here only by its credentials, certificates or sources"
            ),
            "{note}"
        );
        assert!(!note.contains("`a`"), "{note}");
        let plain = Contract::parse(
            &base.replace("      workloads: [{namespace: x}]\n", ""),
            "n.yaml",
        )
        .expect("valid");
        assert_eq!(workload_note(&plain), None);
        assert_eq!(endpoint_workload_note(&plain), None);
    }

    #[test]
    fn endpoints_served_by_workloads_get_one_note() {
        let text = "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: n\nspec:\n  dataClasses:\n    - {name: p, encryption: optional}\n  endpoints:\n    - {name: pay, dataClass: p, workloads: [{namespace: payments}], ports: [8080]}\n    - {name: web, dataClass: p, hosts: [127.0.0.1], workloads: [{pod: web}], ports: [80]}\n    - {name: old, dataClass: p, hosts: [127.0.0.1], ports: [81]}\n  stages:\n    - name: s\n      startsAt: \"2026-01-01T00:00:00Z\"\n";
        let c = Contract::parse(text, "n.yaml").expect("valid");
        let note = endpoint_workload_note(&c).expect("a note");
        assert_eq!(
            note,
            "rampwatch replay: note: a capture file has no workloads: endpoint `pay` is named only by `workloads`, so its traffic never matches here; endpoint `web` is matched here only by its `hosts`, never by `workloads`"
        );
        assert_eq!(workload_note(&c), None);
    }
}

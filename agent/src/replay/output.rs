//! Replay output: JSON lines (one object per flow, per violation, and a
//! final summary) or tables that read well at 80 columns.

use std::{collections::BTreeMap, io, io::Write, time::Duration};

use serde_json::{Value, json};

// `-o` values: the CLI's, shared with the API commands.
use crate::cli::OutputFormat as Format;
use crate::{
    event::Nanos,
    flow::FlowTableStats,
    pcap::DecodeStats,
    policy::{EngineStats, FlowRecord, Kind, StageInfo, Violation, fmt_time},
    sinks::api::{
        readiness::ReadinessView,
        views::{FlowRow, ViolationRow},
    },
};

/// Flows listed in table output; JSON lists all.
const TABLE_FLOWS: usize = 50;

/// Totals for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub corrupt_files: usize,
    pub packets: u64,
    pub flows: u64,
    pub requests: u64,
    /// Of `requests`, heads only a lenient server takes.
    pub malformed_requests: u64,
    pub first_packet: Option<Nanos>,
    pub last_packet: Option<Nanos>,
    pub at: Option<Nanos>,
    pub stage: StageInfo,
    pub decode: DecodeStats,
    pub flow_stats: FlowTableStats,
    pub engine_stats: EngineStats,
    pub elapsed: Duration,
}

pub struct Printer<'a> {
    format: Format,
    out: &'a mut dyn Write,
    /// Flows kept for the table.
    flows: Vec<FlowRecord>,
    /// The JSON row refilled for each flow, and the row's JSON.
    row: FlowRow,
    json: Vec<u8>,
}

/// A flow or violation line: the API's row (one builder for both) with its
/// `type`.
#[derive(serde::Serialize)]
struct Line<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    row: T,
}

/// The JSON object of a violation.
pub fn violation_json(v: &Violation) -> Value {
    serde_json::to_value(Line {
        kind: "violation",
        row: ViolationRow::from(v),
    })
    .unwrap_or(Value::Null)
}

fn by_kind(violations: &[Violation]) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for v in violations {
        *m.entry(v.key.kind.as_str()).or_insert(0) += v.count;
    }
    m
}

fn summary_json(violations: &[Violation], s: &Summary) -> Value {
    let secs = s.elapsed.as_secs_f64();
    json!({
        "type": "summary",
        "contract": &*s.stage.contract,
        "stage": s.stage.active.as_deref(),
        "at": s.at.map(fmt_time),
        "files": s.files,
        "packets": s.packets,
        "flows": s.flows,
        "requests": s.requests,
        "malformed_requests": s.malformed_requests,
        "violations": violations.len(),
        "by_kind": by_kind(violations),
        "first_packet": s.first_packet.map(fmt_time),
        "last_packet": s.last_packet.map(fmt_time),
        "skipped_frames": s.decode.skipped(),
        "corrupt_files": s.corrupt_files,
        "reassembly_gaps": s.flow_stats.gaps,
        "flows_evicted": s.flow_stats.evicted,
        "elapsed_seconds": (secs * 1000.0).round() / 1000.0,
        "packets_per_second": if secs > 0.0 { (s.packets as f64 / secs).round() } else { 0.0 },
    })
}

/// Cuts `s` to `w` characters, marking the cut.
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// "2026-11-29 19:28:05" (UTC), for tables.
fn short_time(t: Nanos) -> String {
    let s = fmt_time(t);
    s.get(..19).map_or(s.clone(), |d| d.replace('T', " "))
}

impl<'a> Printer<'a> {
    pub fn new(format: Format, out: &'a mut dyn Write) -> Self {
        Self {
            format,
            out,
            flows: Vec::new(),
            row: FlowRow::default(),
            json: Vec::new(),
        }
    }

    pub fn flow(&mut self, f: &FlowRecord) -> io::Result<()> {
        match self.format {
            Format::Json => {
                // `Line { kind: "flow", row }`, byte for byte (a test says
                // so), without the cost of `flatten`: the row's object with
                // the type first.
                self.row.fill(f);
                self.json.clear();
                serde_json::to_writer(&mut self.json, &self.row)?;
                match self.json.strip_prefix(b"{") {
                    Some(fields) if fields != b"}" => {
                        self.out.write_all(br#"{"type":"flow","#)?;
                        self.out.write_all(fields)?;
                    }
                    _ => serde_json::to_writer(
                        &mut *self.out,
                        &Line {
                            kind: "flow",
                            row: &self.row,
                        },
                    )?,
                }
                self.out.write_all(b"\n")
            }
            Format::Table => {
                if self.flows.len() < TABLE_FLOWS {
                    self.flows.push(f.clone());
                }
                Ok(())
            }
        }
    }

    /// Violations, readiness rows (`replay --stage`), then the summary.
    pub fn finish(
        &mut self,
        violations: &[Violation],
        s: &Summary,
        readiness: Option<&ReadinessView>,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => {
                for v in violations {
                    serde_json::to_writer(&mut *self.out, &violation_json(v))?;
                    self.out.write_all(b"\n")?;
                }
                for row in readiness.iter().flat_map(|r| &r.rows) {
                    let line = Line {
                        kind: "readiness",
                        row,
                    };
                    serde_json::to_writer(&mut *self.out, &line)?;
                    self.out.write_all(b"\n")?;
                }
                let mut summary = summary_json(violations, s);
                if let (Some(r), Some(obj)) = (readiness, summary.as_object_mut()) {
                    obj.insert(
                        "readiness".into(),
                        json!({
                            "stage": r.stage,
                            "starts_at": r.starts_at,
                            "starts_in_secs": r.starts_in_secs,
                            "window_secs": r.window_secs,
                            "problems": r.rows.len(),
                        }),
                    );
                }
                serde_json::to_writer(&mut *self.out, &summary)?;
                self.out.write_all(b"\n")?;
            }
            Format::Table => {
                self.tables(violations, s)?;
                if let Some(r) = readiness {
                    writeln!(self.out)?;
                    crate::cli::readiness::table(r, &mut *self.out)?;
                }
            }
        }
        self.out.flush()
    }

    fn tables(&mut self, violations: &[Violation], s: &Summary) -> io::Result<()> {
        let out = &mut *self.out;
        // 22 + 22 + 6 + 4 + 11 + 9 + 5 spaces = 79 columns.
        writeln!(
            out,
            "{:<22} {:<22} {:<5} {:<3} {:<10} {:<9} {:>3}",
            "CLIENT ADDR", "SERVER ADDR", "PROTO", "TLS", "ENDPOINT", "CLIENT", "REQ"
        )?;
        for f in &self.flows {
            writeln!(
                out,
                "{:<22} {:<22} {:<5} {:<3} {:<10} {:<9} {:>3}",
                fit(&f.id.client.to_string(), 22),
                fit(&f.id.server.to_string(), 22),
                f.protocol.as_str(),
                f.tls_version.map_or("-", |v| v.as_str()),
                fit(&f.endpoint, 10),
                fit(&f.client, 9),
                if f.requests > 999 {
                    "999+".to_owned()
                } else {
                    f.requests.to_string()
                },
            )?;
        }
        if s.flows > self.flows.len() as u64 {
            writeln!(
                out,
                "… and {} more flows (-o json lists every flow)",
                s.flows - self.flows.len() as u64
            )?;
        }
        writeln!(out)?;
        if violations.is_empty() {
            writeln!(out, "No violations.")?;
        } else {
            writeln!(
                out,
                "{:<17} {:<12} {:<12} {:>6}  {:<19} SEVERITY",
                "VIOLATION", "ENDPOINT", "CLIENT", "COUNT", "FIRST SEEN (UTC)"
            )?;
            for v in violations {
                writeln!(
                    out,
                    "{:<17} {:<12} {:<12} {:>6}  {:<19} {}",
                    v.key.kind.as_str(),
                    fit(&v.key.endpoint, 12),
                    fit(&v.key.client, 12),
                    v.count,
                    short_time(v.first_seen),
                    v.severity.as_str(),
                )?;
                writeln!(out, "  {}", fit(&v.detail, 76))?;
                let row = ViolationRow::from(v);
                if let Some(o) = row.outcome {
                    writeln!(out, "  answered: {}", o.summary())?;
                } else if let Some(t) = row.throttled {
                    writeln!(out, "  answered 429 (throttled): {t}")?;
                }
            }
        }
        writeln!(out)?;
        let stage = match (&s.stage.active, s.at) {
            (Some(st), Some(at)) => format!("stage {st} (at {})", fmt_time(at)),
            (Some(st), None) => format!("stage {st}"),
            (None, _) => match (&s.stage.next, s.stage.next_starts_at) {
                (Some(n), Some(t)) => {
                    format!("no stage active (first, {n}, starts {})", fmt_time(t))
                }
                _ => "no stage active".to_owned(),
            },
        };
        writeln!(out, "contract {}, {stage}", s.stage.contract)?;
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .filter_map(|k| {
                let n: u64 = violations
                    .iter()
                    .filter(|v| v.key.kind == *k)
                    .map(|v| v.count)
                    .sum();
                (n > 0).then(|| format!("{} {n}", k.as_str()))
            })
            .collect();
        writeln!(
            out,
            "{} packets, {} flows, {} requests, {} violations",
            s.packets,
            s.flows,
            s.requests,
            violations.len(),
        )?;
        // Occurrences per kind, wrapped at 80 columns.
        let mut line = String::new();
        for k in kinds {
            if !line.is_empty() && line.len() + k.len() + 2 > 78 {
                writeln!(out, "  {line}")?;
                line.clear();
            }
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str(&k);
        }
        if !line.is_empty() {
            writeln!(out, "  {line}")?;
        }
        let skipped = s.decode.skipped();
        if skipped > 0 || s.flow_stats.gaps > 0 || s.flow_stats.evicted > 0 {
            writeln!(
                out,
                "{skipped} frames skipped, {} reassembly gaps, {} flows evicted",
                s.flow_stats.gaps, s.flow_stats.evicted
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        event::{FlowEndReason, FlowId},
        flow::{Protocol, TlsVersion},
        identity::{Via, workload::FlowWorkload},
    };

    fn tls_flow() -> FlowRecord {
        FlowRecord {
            id: FlowId {
                client: "127.1.2.3:40000".parse().expect("address"),
                server: "127.0.0.1:18443".parse().expect("address"),
            },
            first_seen: 1_764_444_485_965_759_000,
            last_seen: 1_764_444_486_000_000_123,
            protocol: Protocol::Tls,
            tls_version: Some(TlsVersion::Tls12),
            cipher: Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()),
            sni: Some("api.\"quoted\".example".into()),
            alpn: Some("h2".into()),
            endpoint: Arc::from("payments"),
            client: Arc::from("acme"),
            identified_by: Via::Certificate,
            watched: true,
            requests: 3,
            packets: [7, 5],
            bytes: [900, 4000],
            gaps: 1,
            plaintext: false,
            end: Some(FlowEndReason::Fin),
            client_workload: Some(Arc::new(FlowWorkload {
                namespace: Some("ns".into()),
                pid: Some(42),
                ..FlowWorkload::default()
            })),
            server_workload: None,
        }
    }

    fn plain_flow() -> FlowRecord {
        FlowRecord {
            id: FlowId {
                client: "[fd00::1]:40001".parse().expect("address"),
                server: "[::1]:18080".parse().expect("address"),
            },
            protocol: Protocol::Http,
            tls_version: None,
            cipher: None,
            sni: None,
            alpn: None,
            identified_by: Via::Unknown,
            end: None,
            client_workload: None,
            ..tls_flow()
        }
    }

    /// The flow lines `Printer` writes are the serde form of
    /// `Line { kind: "flow", row: FlowRow::from(..) }`, byte for byte, also
    /// when a row is refilled from a flow with fewer facts than the last.
    #[test]
    fn flow_lines_are_the_rows_serde_form() {
        let flows = [tls_flow(), plain_flow(), tls_flow()];
        let mut out = Vec::new();
        let mut printer = Printer::new(Format::Json, &mut out);
        for f in &flows {
            printer.flow(f).expect("writes to memory");
        }
        drop(printer);
        let mut want = String::new();
        for f in &flows {
            let line = Line {
                kind: "flow",
                row: FlowRow::from(f),
            };
            want.push_str(&serde_json::to_string(&line).expect("serialises"));
            want.push('\n');
        }
        assert_eq!(String::from_utf8(out).expect("UTF-8"), want);
    }
}

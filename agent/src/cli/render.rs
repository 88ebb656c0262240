//! Tables that read well at 80 columns, and JSON lines for scripts.

use std::io::{self, Write};

use crate::{
    identity::workload::FlowWorkload,
    sinks::api::views::{
        ClientRow, FlowRow, Response, StageView, StatusView, TlsView, ViolationRow, WatchEvent,
    },
};

/// One JSON object per line: lists are printed one element per line so
/// `jq` and `grep` work on them directly.
pub fn json(response: &Response, out: &mut dyn Write) -> io::Result<()> {
    let line = |v: &dyn erased::Json, out: &mut dyn Write| -> io::Result<()> {
        writeln!(out, "{}", v.to_json())
    };
    match response {
        Response::Clients { clients } => clients.iter().try_for_each(|c| line(c, out)),
        Response::Flows { flows } => flows.iter().try_for_each(|f| line(f, out)),
        Response::Violations { violations } => violations.iter().try_for_each(|v| line(v, out)),
        Response::Watch(ev) => line(ev, out),
        Response::Status(s) => line(s, out),
        Response::Stage(s) => line(s, out),
        Response::Readiness(r) => r.rows.iter().try_for_each(|row| line(row, out)),
        Response::Acked(a) => line(a, out),
        Response::Error { message } => writeln!(out, "{}", serde_json::json!({ "error": message })),
    }
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
    }
}

/// Columns sized to their content, each capped so a row fits 80 columns.
struct Table {
    headers: Vec<&'static str>,
    caps: Vec<usize>,
    rows: Vec<Vec<String>>,
    /// A line printed under a row (indented, clipped), by row index.
    notes: Vec<(usize, String)>,
}

impl Table {
    fn new(columns: &[(&'static str, usize)]) -> Self {
        Self {
            headers: columns.iter().map(|c| c.0).collect(),
            caps: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A line under the last row (a violation's detail), when not empty.
    fn note(&mut self, text: &str) {
        if !text.is_empty() && !self.rows.is_empty() {
            self.notes.push((self.rows.len() - 1, text.to_owned()));
        }
    }

    fn print(&self, header: bool, out: &mut dyn Write) -> io::Result<()> {
        self.print_with(&self.widths(), header, out)
    }

    /// Every column at its cap, for streams printed one row at a time.
    fn print_fixed(&self, header: bool, out: &mut dyn Write) -> io::Result<()> {
        self.print_with(&self.caps, header, out)
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.headers.len())
            .map(|i| {
                let content = self
                    .rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0);
                content.max(self.headers[i].len()).min(self.caps[i])
            })
            .collect()
    }

    fn print_with(&self, widths: &[usize], header: bool, out: &mut dyn Write) -> io::Result<()> {
        let fmt = |cells: &mut dyn Iterator<Item = &str>| -> String {
            let line: Vec<String> = cells
                .zip(widths)
                .map(|(c, w)| {
                    let c = clip(c, *w);
                    format!("{c:<w$}")
                })
                .collect();
            line.join("  ").trim_end().to_owned()
        };
        if header {
            writeln!(out, "{}", fmt(&mut self.headers.iter().copied()))?;
        }
        for (i, row) in self.rows.iter().enumerate() {
            writeln!(out, "{}", fmt(&mut row.iter().map(String::as_str)))?;
            for (_, note) in self.notes.iter().filter(|(r, _)| *r == i) {
                writeln!(out, "  {}", clip(note, 76))?;
            }
        }
        Ok(())
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// Times are RFC 3339; tables show them to the second, without the date
/// when it is today's (the common case when someone is on call).
fn short_time(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

fn violations_table(rows: &[ViolationRow]) -> Table {
    let mut t = Table::new(&[
        ("ID", 11),
        ("KIND", 17),
        ("ENDPOINT", 10),
        ("CLIENT", 8),
        ("SEVERITY", 8),
        ("NEXT", 9),
        ("COUNT", 5),
    ]);
    for v in rows {
        t.row(vec![
            v.id.clone(),
            v.kind.clone(),
            v.endpoint.clone(),
            v.client.clone(),
            severity(v),
            next_step(v),
            v.count.to_string(),
        ]);
        t.note(&detail(v));
        // The client's workload on its own line: a column would not fit
        // 80 wide (flows show it as columns).
        // The root cgroup names no workload (every unconfined process is
        // there): no line for it; `-o json` still has the field.
        if let Some(w) = v.client_workload.as_ref().filter(|w| w.short() != "/") {
            t.note(&format!("client workload {}", w.short()));
        }
        if let Some(by) = &v.acknowledged_by {
            t.note(&format!(
                "acknowledged by {by} at {}",
                v.acknowledged_at.as_deref().unwrap_or("?")
            ));
        }
    }
    t
}

/// The detail line, with what the API answered in front when the kind
/// counts it: `[served/refused/unknown]` or `[N x429]`.
fn detail(v: &ViolationRow) -> String {
    match v.answered().as_str() {
        "-" => v.detail.clone(),
        a => format!("[{a}] {}", v.detail),
    }
}

/// The next step and the time to it, short enough for 80 columns:
/// `crit 12m`, `breach 3d`; `-` when nothing comes next (`-o json` has
/// `next_step`, `next_step_at` and `next_step_in_secs`).
fn next_step(v: &ViolationRow) -> String {
    let step = match v.next_step.as_deref() {
        Some("critical") => "crit",
        Some(other) => other,
        None => return "-".to_owned(),
    };
    match v.next_step_in_secs {
        Some(secs) => format!(
            "{step} {}",
            crate::policy::fmt_duration(secs.saturating_mul(1_000_000_000))
        ),
        None => step.to_owned(),
    }
}

fn workload_cell(w: Option<&FlowWorkload>) -> String {
    w.map_or_else(|| "-".to_owned(), FlowWorkload::short)
}

/// A resolved violation shows as such instead of its last severity.
fn severity(v: &ViolationRow) -> String {
    if v.state == "resolved" {
        "resolved".to_owned()
    } else {
        v.severity.clone()
    }
}

/// `response` as a table (or lines) for people; `first` is true for the
/// first event of a `watch` stream, which prints the header.
pub fn table(response: &Response, first: bool, out: &mut dyn Write) -> io::Result<()> {
    match response {
        Response::Status(s) => status_table(s, out),
        Response::Stage(s) => stage_table(s, out),
        Response::Clients { clients } => clients_table(clients, out),
        Response::Flows { flows } => flows_table(flows, out),
        Response::Violations { violations } => {
            if violations.is_empty() {
                return writeln!(out, "no violations");
            }
            violations_table(violations).print(true, out)
        }
        Response::Watch(ev) => watch_row(ev, first, out),
        Response::Readiness(r) => super::readiness::table(r, out),
        Response::Acked(a) => writeln!(
            out,
            "acknowledged {} ({} on {} by {}, {}) as {} (uid {}) at {}; its clock keeps running until it resolves",
            a.id, a.kind, a.endpoint, a.client, a.severity, a.by, a.uid, a.at
        ),
        Response::Error { message } => writeln!(out, "error: {message}"),
    }
}

fn status_table(s: &StatusView, out: &mut dyn Write) -> io::Result<()> {
    let stage = opt(&s.stage);
    writeln!(
        out,
        "contract     {} (sha256 {})",
        s.contract,
        clip(&s.contract_sha256, 16)
    )?;
    writeln!(
        out,
        "reload       {}",
        if s.contract_reload_ok {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", opt(&s.last_reload_error))
        }
    )?;
    writeln!(out, "stage        {stage}")?;
    if let (Some(next), Some(at)) = (&s.next_stage, &s.next_change) {
        writeln!(out, "next stage   {next} at {}", short_time(at))?;
    }
    writeln!(out, "capture      {}", s.capture)?;
    writeln!(out, "started      {}", short_time(&s.started_at))?;
    writeln!(out, "flows        {} active", s.flows_active)?;
    writeln!(out, "violations   {} open", s.violations_open)?;
    let lost: u64 = s.events_lost.values().sum();
    writeln!(out, "events lost  {lost}")?;
    for (reason, n) in s.events_lost.iter().filter(|(_, n)| **n > 0) {
        writeln!(out, "  {reason:<24} {n}")?;
    }
    if s.audit.writable {
        writeln!(out, "audit log    ok, last seq {}", s.audit.last_seq)?;
    } else {
        writeln!(
            out,
            "audit log    NOT WRITABLE, {} records lost: {}",
            s.audit.records_lost,
            opt(&s.audit.problem)
        )?;
    }
    tls_status(&s.tls, out)
}

/// The TLS probes' part of `rampwatch status`: what is probed, and what
/// could not be.
fn tls_status(t: &TlsView, out: &mut dyn Write) -> io::Result<()> {
    if !t.active {
        let why = t.unavailable.as_deref().unwrap_or("off");
        return writeln!(out, "tls probes   off: {}", clip(why, 60));
    }
    writeln!(out, "tls probes   on, {} processes", t.processes.len())?;
    for p in &t.processes {
        writeln!(
            out,
            "  {:>7} {:<15} {:<6} {}",
            p.pid,
            clip(&p.comm, 15),
            p.role,
            clip(&p.library, 46)
        )?;
    }
    let failed: Vec<String> = t
        .failures
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !failed.is_empty() {
        writeln!(out, "  not probed: {}", clip(&failed.join(", "), 64))?;
    }
    if t.late_clients > 0 {
        writeln!(
            out,
            "  {} clients probed after their first requests",
            t.late_clients
        )?;
    }
    Ok(())
}

fn stage_table(s: &StageView, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "contract {}  now {}", s.contract, short_time(&s.now))?;
    writeln!(out, "active   {}", opt(&s.active))?;
    if let Some(next) = &s.next {
        writeln!(
            out,
            "next     {next} at {}",
            short_time(&opt(&s.next_starts_at))
        )?;
    }
    let mut t = Table::new(&[
        ("STAGE", 14),
        ("STARTS", 19),
        ("MAX KEY AGE", 11),
        ("QUOTAS (client/endpoint rps)", 30),
    ]);
    for st in &s.stages {
        let quotas: Vec<String> = st
            .quotas
            .iter()
            .map(|q| format!("{}/{} {}", q.client, q.endpoint, q.requests_per_second))
            .collect();
        t.row(vec![
            st.name.clone(),
            short_time(&st.starts_at),
            st.credential_max_age.clone(),
            quotas.join(", "),
        ]);
    }
    t.print(true, out)
}

fn clients_table(clients: &[ClientRow], out: &mut dyn Write) -> io::Result<()> {
    let mut t = Table::new(&[
        ("CLIENT", 12),
        ("ENDPOINT", 14),
        ("RATE", 7),
        ("QUOTA", 7),
        ("HEADROOM", 8),
        ("NEXT", 7),
        ("IN", 10),
    ]);
    for c in clients {
        let num = |v: &Option<f64>| v.map_or_else(|| "0".to_owned(), |v| format!("{v:.1}"));
        t.row(vec![
            c.client.clone(),
            c.endpoint.clone(),
            format!("{:.1}", c.rate),
            num(&c.quota),
            c.headroom
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            c.next_quota
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            c.next_starts_in_secs
                .map_or_else(|| "-".to_owned(), human_secs),
        ]);
    }
    t.print(true, out)
}

fn flows_table(flows: &[FlowRow], out: &mut dyn Write) -> io::Result<()> {
    let workloads = flows
        .iter()
        .any(|f| f.client_workload.is_some() || f.server_workload.is_some());
    let mut cols = vec![
        ("CLIENT ADDR", 20),
        ("SERVER ADDR", 20),
        ("PROTO", 7),
        ("ENDPOINT", 10),
        ("CLIENT", 8),
        ("REQS", 5),
    ];
    if workloads {
        cols.extend([("CLIENT WORKLOAD", 40), ("SERVER WORKLOAD", 40)]);
    }
    let mut t = Table::new(&cols);
    for f in flows {
        let proto = match &f.tls_version {
            Some(v) => format!("tls {v}"),
            None => f.protocol.clone(),
        };
        let mut cells = vec![
            f.src.clone(),
            f.dst.clone(),
            proto,
            f.endpoint.clone(),
            f.client.clone(),
            f.requests.to_string(),
        ];
        if workloads {
            cells.push(workload_cell(f.client_workload.as_ref()));
            cells.push(workload_cell(f.server_workload.as_ref()));
        }
        t.row(cells);
    }
    t.print(true, out)
}

/// One `watch` event; fixed widths keep a stream's rows aligned with its
/// header.
fn watch_row(ev: &WatchEvent, first: bool, out: &mut dyn Write) -> io::Result<()> {
    let v = &ev.violation;
    let mut t = Table::new(&[
        ("EVENT", 9),
        ("ID", 11),
        ("KIND", 17),
        ("ENDPOINT", 10),
        ("CLIENT", 8),
        ("SEVERITY", 8),
    ]);
    t.row(vec![
        ev.event.clone(),
        v.id.clone(),
        v.kind.clone(),
        v.endpoint.clone(),
        v.client.clone(),
        severity(v),
    ]);
    t.note(&detail(v));
    // Fixed widths keep a stream's rows aligned with its header.
    t.print_fixed(first, out)
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 0 => "-".to_owned(),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::api::views::ClientRow;

    #[test]
    fn next_step_shows_the_time_left() {
        let row = |step: Option<&str>, secs: Option<i64>| ViolationRow {
            next_step: step.map(Into::into),
            next_step_in_secs: secs,
            ..ViolationRow::default()
        };
        assert_eq!(next_step(&row(Some("critical"), Some(720))), "crit 12m");
        assert_eq!(
            next_step(&row(Some("breach"), Some(3 * 86_400))),
            "breach 3d"
        );
        assert_eq!(next_step(&row(Some("breach"), None)), "breach");
        assert_eq!(next_step(&row(None, None)), "-");
    }

    #[test]
    fn violations_show_id_detail_and_acknowledgement() {
        let v = ViolationRow {
            id: "v0123456789".into(),
            kind: "weak_tls".into(),
            detail: "TLS 1.1".into(),
            state: "open".into(),
            acknowledged_by: Some("alice".into()),
            acknowledged_at: Some("2026-12-02T04:00:00Z".into()),
            ..ViolationRow::default()
        };
        let mut out = Vec::new();
        table(
            &Response::Violations {
                violations: vec![v],
            },
            true,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID "), "{text}");
        assert!(lines[1].starts_with("v0123456789  weak_tls"), "{text}");
        assert_eq!(lines[2], "  TLS 1.1");
        assert_eq!(lines[3], "  acknowledged by alice at 2026-12-02T04:00:00Z");
    }

    #[test]
    fn tables_fit_80_columns() {
        let long = "x".repeat(200);
        let v = ViolationRow {
            kind: "quota_overshoot".into(),
            endpoint: long.clone(),
            client: long.clone(),
            severity: "critical".into(),
            detail: long.clone(),
            count: 123_456,
            state: "open".into(),
            next_step: Some("breach".into()),
            next_step_in_secs: Some(59 * 60),
            ..Default::default()
        };
        let c = ClientRow {
            client: long.clone(),
            endpoint: long,
            rate: 12345.6,
            quota: Some(50.0),
            headroom: Some(-12295.6),
            next_quota: Some(100.0),
            next_stage: Some("ramp-2x".into()),
            next_starts_in_secs: Some(90_000),
        };
        for r in [
            Response::Violations {
                violations: vec![v.clone()],
            },
            Response::Clients { clients: vec![c] },
            Response::Watch(crate::sinks::api::views::WatchEvent {
                event: "escalated".into(),
                violation: v,
            }),
        ] {
            let mut out = Vec::new();
            table(&r, true, &mut out).unwrap();
            for line in String::from_utf8(out).unwrap().lines() {
                assert!(
                    line.chars().count() <= 80,
                    "{} columns: {line}",
                    line.chars().count()
                );
            }
        }
    }
}

//! The readiness table, shared by `rampwatch readiness` (live) and
//! `rampwatch replay --stage`.

use std::io::{self, Write};

use crate::sinks::api::readiness::ReadinessView;

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

/// `text` in lines of at most `width` characters, broken at spaces (a
/// longer word is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let (n, w) = (line.chars().count(), word.chars().count());
        if n > 0 && n + 1 + w > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&fit(word, width));
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x}"))
}

/// A heading line, then one row per problem with its explanation below.
pub fn table(r: &ReadinessView, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "stage {} starts {} ({})",
        r.stage, r.starts_at, r.starts_in
    )?;
    writeln!(
        out,
        "rates over the {}s up to {}",
        r.window_secs.round(),
        r.at
    )?;
    if r.rows.is_empty() {
        writeln!(
            out,
            "ready: no rate above its quotas, no client without one,"
        )?;
        return writeln!(
            out,
            "no credential stale at its start, no endpoint opening or closing"
        );
    }
    writeln!(
        out,
        "{:<16} {:<12} {:<16} {:>9} {:>9}",
        "PROBLEM", "CLIENT", "ENDPOINT", "RATE/S", "QUOTA/S"
    )?;
    for row in &r.rows {
        writeln!(
            out,
            "{:<16} {:<12} {:<16} {:>9} {:>9}",
            fit(&row.problem, 16),
            fit(row.client.as_deref().unwrap_or("-"), 12),
            fit(row.endpoint.as_deref().unwrap_or("-"), 16),
            num(row.rate),
            num(row.quota),
        )?;
        for line in wrap(&row.detail, 76) {
            writeln!(out, "  {line}")?;
        }
    }
    let n = r.rows.len();
    writeln!(
        out,
        "not ready: {n} problem{} to fix before {} starts",
        if n == 1 { "" } else { "s" },
        r.stage
    )
}

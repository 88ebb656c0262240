//! The Markdown form of `rampwatch report`: sections an SRE can paste into
//! a contract review (GitHub-flavoured tables).

use std::io::{self, Write};

use super::report::{Quota, Report};

/// A table cell: pipes and newlines would break the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "—".to_owned(), cell)
}

fn quota(q: Option<&Quota>) -> String {
    q.map_or_else(
        || "none".to_owned(),
        |q| format!("{} rps (burst {})", q.rps, q.burst),
    )
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

pub fn markdown(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "# Stage report: {}{}",
        cell(&r.stage),
        r.contract
            .as_deref()
            .map(|c| format!(" (contract {})", cell(c)))
            .unwrap_or_default()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "- Span: {} → {}{}",
        r.from,
        r.to,
        if r.still_active {
            " (still active at the newest record)"
        } else {
            ""
        }
    )?;
    let t = &r.totals;
    writeln!(
        out,
        "- Nodes: {} audit logs, each verified intact",
        r.nodes.len()
    )?;
    writeln!(
        out,
        "- Requests: {}; violations opened {}, escalated {}, resolved {}; SLA breaches {}; acknowledgements {}",
        t.requests,
        t.violations_opened,
        t.violations_escalated,
        t.violations_resolved,
        t.sla_breaches,
        t.acknowledgements
    )?;
    writeln!(
        out,
        "- Contract loads {}, reload rejections {}; agent starts {}, stops {}, recoveries {}, records lost {}",
        t.contract_loads,
        t.reload_rejections,
        t.agent_starts,
        t.agent_stops,
        t.recoveries,
        t.records_lost
    )?;
    if !r.usage_complete {
        writeln!(
            out,
            "- **Usage incomplete:** a log has no usage records for this stage (written by an agent before usage records existed); its requests are not counted"
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Requests against quota")?;
    writeln!(out)?;
    if r.usage.is_empty() {
        writeln!(out, "No requests recorded in this stage.")?;
    } else {
        writeln!(
            out,
            "| client | endpoint | requests | quota | peak interval | over quota | responses | nodes |"
        )?;
        writeln!(out, "|---|---|---:|---|---|---:|---|---:|")?;
        for u in &r.usage {
            let over = u.quota.as_ref().is_some_and(|q| u.peak_rps > q.rps);
            let responses: Vec<String> = u
                .responses
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            let mut peak = format!("{} rps at {}", u.peak_rps, u.peak_at);
            if over {
                peak = format!("**{peak}**");
            }
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} of {} intervals | {} | {} |",
                cell(&u.client),
                cell(&u.endpoint),
                u.requests,
                quota(u.quota.as_ref()),
                peak,
                u.intervals_over_quota,
                u.intervals,
                cell(&responses.join(", ")),
                u.nodes
            )?;
        }
        if r.usage_other.pairs > 0 {
            writeln!(
                out,
                "\nPlus {} pairs past the agents' per-interval cap, {} requests (in the total).",
                r.usage_other.pairs, r.usage_other.requests
            )?;
        }
    }
    writeln!(out)?;

    writeln!(out, "## Violations")?;
    writeln!(out)?;
    if r.violations.is_empty() {
        writeln!(out, "None.")?;
    } else {
        writeln!(
            out,
            "| id | kind | endpoint | client | opened | escalations | resolved | time to resolve | severity | count | acked | node |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|---|---:|---|---|")?;
        for v in &r.violations {
            let esc: Vec<String> = v
                .escalations
                .iter()
                .map(|e| format!("{} at {}", e.value, e.at))
                .collect();
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                opt(v.id.as_deref()),
                cell(&v.kind),
                cell(&v.endpoint),
                cell(&v.client),
                opt(v.opened_at.as_deref()),
                if esc.is_empty() {
                    "—".to_owned()
                } else {
                    cell(&esc.join("; "))
                },
                opt(v.resolved_at.as_deref()),
                v.open_secs.map_or_else(|| "—".to_owned(), duration),
                cell(&v.severity),
                v.count,
                if v.acknowledged { "yes" } else { "no" },
                cell(&v.audit_dir)
            )?;
        }
    }
    writeln!(out)?;

    writeln!(out, "## SLA breaches")?;
    writeln!(out)?;
    if r.sla_breaches.is_empty() {
        writeln!(out, "None.")?;
    }
    for b in &r.sla_breaches {
        writeln!(
            out,
            "- {}: {} on {} by {} ({}) breached its remediation window — {}",
            b.at,
            cell(&b.kind),
            cell(&b.endpoint),
            cell(&b.client),
            opt(b.id.as_deref()),
            cell(&b.audit_dir)
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Acknowledgements")?;
    writeln!(out)?;
    if r.acknowledgements.is_empty() {
        writeln!(out, "None.")?;
    }
    for a in &r.acknowledgements {
        writeln!(
            out,
            "- {}: {} (uid {}) acknowledged {} ({} on {} by {}, {}): {}",
            a.at,
            cell(&a.by),
            a.uid,
            cell(&a.id),
            cell(&a.kind),
            cell(&a.endpoint),
            cell(&a.client),
            cell(&a.severity),
            if a.note.is_empty() {
                "no note".to_owned()
            } else {
                cell(&a.note)
            }
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Contracts and stage changes")?;
    writeln!(out)?;
    for c in &r.contracts {
        match c.event {
            "loaded" => writeln!(
                out,
                "- {}: contract {} loaded (sha256 {}) — {}",
                c.at,
                opt(c.contract.as_deref()),
                c.sha256,
                cell(&c.audit_dir)
            )?,
            _ => writeln!(
                out,
                "- {}: reload rejected (sha256 {}): {} — {}",
                c.at,
                c.sha256,
                cell(&c.errors.join("; ")),
                cell(&c.audit_dir)
            )?,
        }
    }
    for s in &r.stage_changes {
        writeln!(
            out,
            "- {}: stage {} → {} — {}",
            s.at,
            opt(s.from.as_deref()),
            cell(&s.to),
            cell(&s.audit_dir)
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Nodes")?;
    writeln!(out)?;
    writeln!(
        out,
        "| audit dir | records | head (seq:hash) | starts | stops | recoveries | records lost | usage records |"
    )?;
    writeln!(out, "|---|---:|---|---:|---:|---:|---:|---:|")?;
    for n in &r.nodes {
        writeln!(
            out,
            "| {} | {} | {}:{} | {} | {} | {} | {} | {} |",
            cell(&n.audit_dir),
            n.records,
            n.head_seq,
            n.head_hash,
            n.agent_starts.len(),
            n.agent_stops.len(),
            n.recoveries.len(),
            n.records_lost.iter().map(|l| l.lost).sum::<u64>(),
            n.usage_records
        )?;
    }
    let mut events = Vec::new();
    for n in &r.nodes {
        let dir = cell(&n.audit_dir);
        for s in &n.agent_stops {
            events.push(format!(
                "- {}: agent stopped ({}) — {dir}",
                s.at,
                cell(&s.value)
            ));
        }
        for rec in &n.recoveries {
            events.push(format!(
                "- {}: recovery: {} — {dir}",
                rec.at,
                cell(&rec.value)
            ));
        }
        for l in &n.records_lost {
            events.push(format!(
                "- {}: {} records lost after seq {} ({}) — {dir}",
                l.at,
                l.lost,
                l.after_seq,
                cell(&l.reason)
            ));
        }
    }
    if !events.is_empty() {
        writeln!(out)?;
        for e in events {
            writeln!(out, "{e}")?;
        }
    }
    Ok(())
}

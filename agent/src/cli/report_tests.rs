//! Tests of `rampwatch report`'s aggregation: stage spans, several nodes
//! summed, interval edges, logs with and without format versions.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::report::{NodeLog, ReportError, build, read_node};
use crate::{
    contract::format_rfc3339,
    event::Nanos,
    sinks::audit::{
        AuditEntry, AuditLog, AuditOptions, HmacKey, RecordKind, UsageQuota, UsageRecord,
        ViolationRecord,
    },
};

const S: Nanos = 1_000_000_000;
/// 2026-12-01T00:00:00Z.
const T0: Nanos = 1_796_083_200 * S;

fn entry(seq: u64, t: Nanos, kind: RecordKind) -> AuditEntry {
    AuditEntry {
        seq,
        time: format_rfc3339(t),
        v: Some(2),
        kind,
        hash: "ab".repeat(32),
    }
}

fn node(dir: &str, kinds: Vec<(Nanos, RecordKind)>) -> NodeLog {
    let entries: Vec<AuditEntry> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, (t, k))| entry(i as u64 + 1, t, k))
        .collect();
    NodeLog {
        dir: PathBuf::from(dir),
        head: entries.last().map(|e| (e.seq, "ab".repeat(32))),
        entries,
    }
}

fn stage(from: Option<&str>, to: &str) -> RecordKind {
    RecordKind::StageChanged {
        contract: "shop".into(),
        from: from.map(str::to_owned),
        to: to.into(),
    }
}

fn usage(client: &str, stage: &str, from: Nanos, to: Nanos, requests: u64) -> RecordKind {
    RecordKind::Usage(UsageRecord {
        client: client.into(),
        endpoint: "orders".into(),
        stage: Some(stage.into()),
        from: format_rfc3339(from),
        to: format_rfc3339(to),
        interval_secs: 60,
        requests,
        total: requests,
        quota: Some(UsageQuota {
            rps: "1".into(),
            burst: "5".into(),
        }),
        responses: BTreeMap::from([("2xx".to_owned(), requests)]),
    })
}

fn violation(severity: &str, open_secs: Option<u64>) -> ViolationRecord {
    ViolationRecord {
        violation: "quota_overshoot".into(),
        endpoint: "orders".into(),
        client: "acme".into(),
        severity: severity.into(),
        count: 3,
        detail: "over | quota".into(),
        outcome: None,
        throttled: Some(0),
        id: Some("v0000000001".into()),
        open_secs,
        client_workload: None,
    }
}

/// Two nodes: their requests are summed exactly, their aligned intervals
/// add up to the peak (each alone is under quota, together over), and the
/// partial first interval counts over its own span.
#[test]
fn nodes_are_summed_per_pair_and_interval() {
    let a = node(
        "/a",
        vec![
            (
                T0,
                RecordKind::AgentStart {
                    version: "x".into(),
                },
            ),
            (T0, stage(None, "pilot")),
            (T0 + 60 * S, usage("acme", "pilot", T0, T0 + 60 * S, 40)),
            (
                T0 + 120 * S,
                usage("acme", "pilot", T0 + 60 * S, T0 + 120 * S, 50),
            ),
        ],
    );
    let b = node(
        "/b",
        vec![
            (T0 + S, stage(None, "pilot")),
            (
                T0 + 120 * S,
                usage("acme", "pilot", T0 + 60 * S + S / 2, T0 + 120 * S, 45),
            ),
            (
                T0 + 130 * S,
                usage("beta", "pilot", T0 + 120 * S, T0 + 130 * S, 7),
            ),
        ],
    );
    let r = build("pilot", &[a, b]).expect("a report");
    assert!(r.still_active);
    assert_eq!(r.from, format_rfc3339(T0));
    assert_eq!(r.to, format_rfc3339(T0 + 130 * S));
    assert_eq!(r.totals.requests, 40 + 50 + 45 + 7);
    let acme = r.usage.iter().find(|u| u.client == "acme").expect("acme");
    assert_eq!((acme.requests, acme.nodes, acme.intervals), (135, 2, 2));
    // 50 + 45 in the interval from T0+60 s: 95 / 60 s, above 1 rps.
    assert!((acme.peak_rps - 1.58).abs() < 0.01, "{}", acme.peak_rps);
    assert_eq!(acme.peak_at, format_rfc3339(T0 + 60 * S));
    assert_eq!(
        acme.intervals_over_quota, 1,
        "40/60 s is under, 95/60 s over"
    );
    assert_eq!(acme.responses.get("2xx"), Some(&135));
    let beta = r.usage.iter().find(|u| u.client == "beta").expect("beta");
    // A 10 s tail (the flush at a stop) counts over its own span.
    assert!((beta.peak_rps - 0.7).abs() < 0.01, "{}", beta.peak_rps);
    assert_eq!(r.nodes.len(), 2);
    assert!(r.usage_complete);
}

/// The span runs from entering the stage to leaving it; records outside
/// are left out, usage is attributed by the stage it names (an interval
/// ending after the change belongs to the next stage), and a restart's
/// `from: null` continues the span.
#[test]
fn the_span_is_the_stage_s_and_usage_goes_by_its_stage() {
    let v = violation("warning", None);
    let n = node(
        "/a",
        vec![
            (T0, stage(None, "canary")),
            (
                T0 + 10 * S,
                RecordKind::ViolationOpened(violation("warning", None)),
            ),
            (T0 + 60 * S, usage("acme", "canary", T0, T0 + 60 * S, 9)),
            (T0 + 100 * S, stage(Some("canary"), "pilot")),
            (
                T0 + 110 * S,
                RecordKind::ViolationEscalated(violation("critical", None)),
            ),
            (
                T0 + 120 * S,
                usage("acme", "pilot", T0 + 60 * S, T0 + 120 * S, 11),
            ),
            (
                T0 + 130 * S,
                RecordKind::AgentStop {
                    reason: "SIGTERM".into(),
                },
            ),
            (
                T0 + 200 * S,
                RecordKind::AgentStart {
                    version: "x".into(),
                },
            ),
            (T0 + 200 * S, stage(None, "pilot")),
            (
                T0 + 250 * S,
                RecordKind::ViolationEscalated(violation("breach", None)),
            ),
            (
                T0 + 260 * S,
                RecordKind::ViolationResolved(violation("breach", Some(250))),
            ),
            (T0 + 300 * S, stage(Some("pilot"), "general")),
            (T0 + 400 * S, RecordKind::ViolationOpened(v)),
        ],
    );
    let r = build("pilot", &[n]).expect("a report");
    assert!(!r.still_active);
    assert_eq!(
        (r.from.clone(), r.to.clone()),
        (format_rfc3339(T0 + 100 * S), format_rfc3339(T0 + 300 * S))
    );
    assert_eq!(r.totals.requests, 11, "only the usage naming pilot");
    assert_eq!(r.totals.agent_stops, 1);
    assert_eq!(r.totals.agent_starts, 1);
    let [row] = r.violations.as_slice() else {
        panic!("one violation: {:?}", r.violations);
    };
    assert_eq!(row.opened_at, None, "it opened before the stage");
    assert_eq!(row.escalations.len(), 2);
    assert_eq!(row.resolved_at, Some(format_rfc3339(T0 + 260 * S)));
    assert_eq!(row.open_secs, Some(250));
    assert_eq!(r.sla_breaches.len(), 1);
    assert_eq!(r.sla_breaches[0].at, format_rfc3339(T0 + 250 * S));
    assert_eq!(
        r.stage_changes.len(),
        3,
        "into pilot, the restart, out of it"
    );

    let canary = build("canary", &[node("/a", vec![(T0, stage(None, "canary"))])])
        .expect("a stage with one record");
    assert_eq!(canary.from, canary.to);
}

#[test]
fn a_stage_never_entered_is_an_error_naming_those_seen() {
    let n = node("/a", vec![(T0, stage(None, "canary"))]);
    let Err(e) = build("pilot", &[n]) else {
        panic!("pilot was never entered");
    };
    assert!(matches!(e, ReportError::NeverEntered { .. }));
    assert_eq!(
        e.to_string(),
        "stage \"pilot\" was never entered in these audit logs (stages entered: canary)"
    );
    assert_eq!(e.exit_code(), 2);
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sinks/audit/tests/testdata/unversioned")
}

fn fixture_key() -> HmacKey {
    HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef-test-key".to_vec()).expect("long key")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// A log written before format versions (and usage records) existed
/// verifies and reports; an agent of this version appends versioned
/// records to it, and the mixed log verifies and reports both.
#[test]
fn unversioned_logs_report_and_take_versioned_records() {
    let old = read_node(&fixture(), Some(&fixture_key()), None).expect("the old log verifies");
    assert!(old.entries.iter().all(|e| e.v.is_none()));
    let r = build("pilot", &[old]).expect("a report of the old log");
    assert!(!r.usage_complete, "no usage records: requests unknown");
    assert_eq!(r.totals.requests, 0);
    let [v] = r.violations.as_slice() else {
        panic!("one violation: {:?}", r.violations);
    };
    assert_eq!(v.kind, "revoked_client");
    assert!(v.acknowledged);
    assert_eq!(v.open_secs, Some(640));
    assert_eq!(r.totals.reload_rejections, 1);
    assert_eq!(r.totals.records_lost, 2);
    assert_eq!(r.nodes[0].formats, [1]);

    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), tmp.path());
    let (mut log, _) =
        AuditLog::open(tmp.path(), Some(fixture_key()), AuditOptions::default()).expect("open");
    log.append(RecordKind::AgentStart {
        version: "new".into(),
    })
    .expect("append");
    log.append(stage(None, "general")).expect("append");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * S;
    log.append(usage("acme", "general", now - 60 * S, now, 12))
        .expect("append");
    drop(log);
    let mixed = read_node(tmp.path(), Some(&fixture_key()), None).expect("the mixed log verifies");
    assert!(mixed.entries.iter().rev().take(3).all(|e| e.v == Some(2)));
    let r = build("general", &[mixed]).expect("a report");
    assert_eq!(r.totals.requests, 12);
    assert_eq!(r.nodes[0].formats, [1, 2]);
}

/// A tampered log gets no report; the error names the directory and seq.
#[test]
fn a_broken_chain_refuses_the_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), tmp.path());
    let seg = tmp.path().join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&seg).expect("read");
    std::fs::write(&seg, text.replacen("\"warning\"", "\"critical\"", 1)).expect("write");
    let Err(e) = read_node(tmp.path(), None, None) else {
        panic!("a tampered log must be refused");
    };
    let msg = e.to_string();
    assert_eq!(e.exit_code(), 1);
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(msg.contains("(seq 4): hash mismatch"), "{msg}");
    assert!(msg.contains("no report is built"), "{msg}");
}

/// With an anchor kept earlier: the intact log passes, a cut tail gets no
/// report.
#[test]
fn an_anchor_catches_a_cut_tail() {
    let head = read_node(&fixture(), None, None)
        .expect("intact")
        .head
        .expect("a head");
    let anchor: crate::sinks::audit::AnchorSpec =
        format!("{}:{}", head.0, head.1).parse().expect("an anchor");
    read_node(&fixture(), None, Some(&anchor)).expect("the anchor holds");

    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), tmp.path());
    let last = tmp.path().join("audit-000003.jsonl");
    let text = std::fs::read_to_string(&last).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    let cut = if lines.is_empty() {
        String::new()
    } else {
        lines.join("\n") + "\n"
    };
    std::fs::write(&last, cut).expect("cut the tail");
    let e = read_node(tmp.path(), None, Some(&anchor)).expect_err("cut");
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("were deleted from the end"), "{e}");
}

/// A record of a newer format (a higher `v` the hash covers) is named as
/// such; the same `v` edited in is a hash mismatch.
#[test]
fn a_newer_format_is_named_not_called_tampered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = AuditLog::open(tmp.path(), None, AuditOptions::default()).expect("open");
    log.append(RecordKind::AgentStart {
        version: "x".into(),
    })
    .expect("append");
    drop(log);
    let seg = tmp.path().join("audit-000001.jsonl");
    let line = std::fs::read_to_string(&seg).expect("read");
    let body = line.split_once(",\"hash\":").expect("sealed").0.replace(
        "\"v\":2,\"kind\":\"agent_start\"",
        "\"v\":3,\"kind\":\"agent_begin\"",
    ) + "}";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let newer = format!("{},\"hash\":\"{hash}\"}}\n", body.trim_end_matches('}'));
    std::fs::write(&seg, &newer).expect("write");
    let e = read_node(tmp.path(), None, None).expect_err("not readable here");
    assert!(
        e.to_string()
            .contains("audit format 3, newer than this rampwatch reads"),
        "{e}"
    );
    std::fs::write(&seg, newer.replace(&hash, &"0".repeat(64))).expect("write");
    let e = read_node(tmp.path(), None, None).expect_err("tampered");
    assert!(e.to_string().contains("hash mismatch"), "{e}");
}

/// Markdown: every section, cells with pipes escaped.
#[test]
fn markdown_renders_every_section() {
    let n = node(
        "/a",
        vec![
            (T0, stage(None, "pilot")),
            (
                T0 + 5 * S,
                RecordKind::ViolationOpened(violation("warning", None)),
            ),
            (T0 + 60 * S, usage("acme", "pilot", T0, T0 + 60 * S, 120)),
        ],
    );
    let r = build("pilot", &[n]).expect("a report");
    let mut out = Vec::new();
    super::report_md::markdown(&r, &mut out).expect("render");
    let md = String::from_utf8(out).expect("utf8");
    for section in [
        "# Stage report: pilot (contract shop)",
        "## Requests against quota",
        "## Violations",
        "## SLA breaches",
        "## Acknowledgements",
        "## Contracts and stage changes",
        "## Nodes",
    ] {
        assert!(md.contains(section), "{section} in:\n{md}");
    }
    assert!(
        md.contains("| acme | orders | 120 | 1 rps (burst 5) | **2 rps at"),
        "{md}"
    );
    assert!(!md.contains("over | quota"), "{md}");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["usage"][0]["requests"], 120);
    assert_eq!(json["violations"][0]["id"], "v0000000001");
}

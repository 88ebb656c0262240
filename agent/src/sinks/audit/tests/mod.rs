//! Tests of the audit log. Tampering tests edit the files the way an attacker (or a crash)
//! would and assert where and why `verify` stops.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{record, segment, *};

mod anchor;
mod lifecycle;
mod tamper;

fn key() -> HmacKey {
    HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef-test-key".to_vec()).expect("long key")
}

fn violation(n: u64) -> RecordKind {
    RecordKind::ViolationOpened(ViolationRecord {
        violation: "quota_overshoot".to_owned(),
        endpoint: "payments".to_owned(),
        client: "billing".to_owned(),
        severity: "warning".to_owned(),
        count: n,
        detail: format!("{n} requests over quota"),
        outcome: None,
        throttled: None,
        // As records written before ids existed: they hash the same.
        id: None,
        open_secs: None,
        client_workload: None,
    })
}

fn small() -> AuditOptions {
    AuditOptions {
        max_segment_bytes: 700,
    }
}

/// A log with `n` violation records in `dir` (seq 1..=n unless segments rotate, which adds a
/// `segment_end` record per rotation).
fn write_log(dir: &Path, key: Option<HmacKey>, opts: AuditOptions, n: u64) {
    let (mut log, _) = AuditLog::open(dir, key, opts).expect("open");
    let mut last = 0;
    for i in 1..=n {
        let a = log.append(violation(i)).expect("append");
        assert!(a.seq > last, "seq went from {last} to {}", a.seq);
        last = a.seq;
    }
}

fn seg(dir: &Path, n: u64) -> PathBuf {
    dir.join(segment::name(n))
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read segment")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).expect("write segment");
}

fn bad(dir: &Path, key: Option<&HmacKey>) -> Finding {
    let report = verify(dir, key);
    match report.first_bad.clone() {
        Some(f) => f,
        None => panic!("verify passed a tampered log:\n{report}"),
    }
}

fn assert_intact(dir: &Path, key: Option<&HmacKey>) -> VerifyReport {
    let report = verify(dir, key);
    assert!(report.is_intact(), "verify failed:\n{report}");
    report
}

/// Rewrites record `index` (0-based line) of `path` with `edit` applied and a correctly
/// recomputed hash, as an attacker without the key would. With `rechain`, every following
/// record in the file is re-chained too (a full rewrite). HMACs are dropped: the attacker
/// cannot compute them.
fn forge(path: &Path, index: usize, rechain: bool, edit: impl Fn(&mut RecordKind)) {
    let mut all = lines(path);
    let mut prev: Option<String> = None;
    for (i, line) in all.iter_mut().enumerate() {
        if i < index || (i > index && !rechain) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let parsed = record::parse_line(line.as_bytes()).expect("intact before forging");
        let mut kind = parsed.kind.clone();
        if i == index {
            edit(&mut kind);
        }
        let prev_hash = prev.clone().unwrap_or(parsed.prev.clone());
        let time = v["time"].as_str().expect("time").to_owned();
        let body =
            record::body_bytes(parsed.seq, &time, parsed.v, &kind, &prev_hash).expect("body");
        let hash = record::hash_hex(&body);
        // Keep the old hmac (the attacker cannot make a new one); it no longer matches.
        let hmac = v.get("hmac").and_then(|h| h.as_str().map(str::to_owned));
        let mut sealed = record::sealed_line(&body, &hash, hmac.as_deref());
        sealed.pop();
        *line = String::from_utf8(sealed).expect("utf8");
        prev = Some(hash);
    }
    write_lines(path, &all);
}

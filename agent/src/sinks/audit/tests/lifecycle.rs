//! Writing, rotation, crash recovery, reopening, locking and key files.

use std::{fs, io::Write, path::Path};

use super::*;

#[test]
fn intact_log_verifies_and_reports_anchor() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), AuditOptions::default(), 5);
    let report = assert_intact(dir.path(), Some(&key()));
    assert_eq!(report.records, 5);
    assert_eq!(report.hmac_records, 5);
    let last = report.last.expect("anchor");
    assert_eq!(last.seq, 5);
    let mut out = Vec::new();
    assert_eq!(run_verify(dir.path(), None, &mut out), 0);
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains(": INTACT") && text.contains(&last.hash),
        "{text}"
    );
}

#[test]
fn lines_are_canonical_json_with_documented_field_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), AuditOptions::default(), 1);
    let line = &lines(&seg(dir.path(), 1))[0];
    assert!(line.starts_with("{\"seq\":1,\"time\":\""), "{line}");
    assert!(
        line.contains(
            "\"kind\":\"violation_opened\",\"violation\":\"quota_overshoot\",\"endpoint\":\"payments\""
        ),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"prev\":\"{GENESIS_PREV}\",\"hash\":\"")),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    let time = v["time"].as_str().expect("time");
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    // The documented recipe: hash = sha256(line without hash/hmac members).
    let body = line.split(",\"hash\":").next().expect("body").to_owned() + "}";
    assert_eq!(
        v["hash"].as_str(),
        Some(record::hash_hex(body.as_bytes()).as_str())
    );
    assert_eq!(
        v["hmac"].as_str(),
        Some(key().mac_hex(body.as_bytes()).as_str())
    );
}

#[test]
fn rotation_chains_segments_and_respects_the_size_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), small(), 12);
    let segments = segment::list(dir.path()).expect("list");
    assert!(segments.len() >= 3, "only {} segments", segments.len());
    for s in &segments[..segments.len() - 1] {
        let all = lines(&s.path);
        let len = fs::metadata(&s.path).expect("stat").len();
        let seal = all.last().expect("seal").len() as u64 + 1;
        assert!(len - seal <= 700, "{} is {len} bytes", s.path.display());
        assert!(
            all.last()
                .expect("seal")
                .contains("\"kind\":\"segment_end\"")
        );
    }
    // Each segment's first record chains to the previous segment's last one.
    let last_of_first: serde_json::Value =
        serde_json::from_str(lines(&segments[0].path).last().expect("line")).expect("json");
    let first_of_second: serde_json::Value =
        serde_json::from_str(&lines(&segments[1].path)[0]).expect("json");
    assert_eq!(first_of_second["prev"], last_of_first["hash"]);
    assert_eq!(
        first_of_second["seq"].as_u64(),
        last_of_first["seq"].as_u64().map(|s| s + 1)
    );
    let report = assert_intact(dir.path(), Some(&key()));
    // 12 violations plus one segment_end per rotation.
    assert_eq!(report.records, 12 + segments.len() as u64 - 1);
}

#[test]
fn reopen_continues_seq_and_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, report) = AuditLog::open(dir.path(), Some(key()), small()).expect("open");
    assert!(report.created && report.recovered.is_empty());
    log.append(RecordKind::AgentStart {
        version: "0.1.0".to_owned(),
    })
    .expect("append");
    let second = log.append(violation(1)).expect("append");
    drop(log);

    let (mut log, report) = AuditLog::open(dir.path(), Some(key()), small()).expect("reopen");
    assert!(!report.created && report.recovered.is_empty() && report.warnings.is_empty());
    assert_eq!(
        (report.last_seq, report.last_hash.as_str()),
        (second.seq, second.hash.as_str())
    );
    let mut prev = second;
    for i in 3..=10 {
        let a = log.append(violation(i)).expect("append");
        assert!(a.seq > prev.seq, "seq went from {} to {}", prev.seq, a.seq);
        prev = a;
    }
    let (seq, _) = log.last();
    drop(log);
    let report = assert_intact(dir.path(), Some(&key()));
    assert_eq!(report.last.expect("anchor").seq, seq);
}

#[test]
fn torn_write_is_recovered_and_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), AuditOptions::default(), 3);
    let path = seg(dir.path(), 1);
    // A crash mid-write: half of what would have been record 4, no newline.
    let (line, _) =
        record::seal(4, "2026-01-01T00:00:00Z", &violation(4), "ab", None).expect("seal");
    let half = &line[..line.len() / 2];
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(half))
        .expect("append torn bytes");
    assert!(matches!(
        bad(dir.path(), None).problem,
        Problem::TornLine { .. }
    ));

    let (mut log, report) =
        AuditLog::open(dir.path(), Some(key()), AuditOptions::default()).expect("reopen");
    let [rec] = report.recovered.as_slice() else {
        panic!("expected one recovery, got {:?}", report.recovered);
    };
    assert_eq!((rec.last_good_seq, rec.torn_bytes), (3, half.len() as u64));
    assert_eq!(rec.record.seq, 4);
    let torn_file = rec.torn_file.clone().expect("torn file");
    assert_eq!(fs::read(&torn_file).expect("torn bytes"), half);
    for i in 5..=12 {
        log.append(violation(i)).expect("append after recovery");
    }
    drop(log);

    let report = assert_intact(dir.path(), Some(&key()));
    let [note] = report.recoveries.as_slice() else {
        panic!("expected one recovery note: {report}");
    };
    assert_eq!((note.seq, note.line), (4, 4));
    assert!(
        note.found.contains("incomplete last line"),
        "{}",
        note.found
    );
    assert_eq!(report.torn_files, vec![torn_file]);
    let mut out = Vec::new();
    assert_eq!(run_verify(dir.path(), None, &mut out), 0);
    let text = String::from_utf8(out).expect("utf8");
    eprintln!("{text}");
    assert!(text.contains("recovery:   seq 4"), "{text}");
}

#[test]
fn damaged_complete_last_line_is_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 3);
    let path = seg(dir.path(), 1);
    // Blocks of the last write persisted as zeros, newline included in the persisted part.
    let mut bytes = fs::read(&path).expect("read");
    let end = bytes.len() - 1;
    bytes[end - 30..end].fill(0);
    fs::write(&path, &bytes).expect("write");

    let (mut log, report) =
        AuditLog::open(dir.path(), None, AuditOptions::default()).expect("open");
    let [rec] = report.recovered.as_slice() else {
        panic!("expected one recovery, got {:?}", report.recovered);
    };
    assert_eq!((rec.last_good_seq, rec.record.seq), (2, 3));
    log.append(violation(9)).expect("append");
    drop(log);
    assert_eq!(assert_intact(dir.path(), None).records, 4);
}

#[test]
fn crash_during_rotation_is_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, small(), 12);
    let segments = segment::list(dir.path()).expect("list");
    let last = segments.last().expect("segment").clone();
    let prev = &segments[segments.len() - 2];
    // Undo the last rotation up to "next segment created, seal half-written".
    fs::write(&last.path, b"").expect("empty next segment");
    let mut prev_lines = lines(&prev.path);
    let seal = prev_lines.pop().expect("seal");
    let mut text = prev_lines.join("\n");
    text.push('\n');
    text.push_str(&seal[..seal.len() / 2]);
    fs::write(&prev.path, text).expect("torn seal");

    let (mut log, report) = AuditLog::open(dir.path(), None, small()).expect("open");
    assert_eq!(report.removed_empty_segment.as_ref(), Some(&last.path));
    assert_eq!(report.recovered.len(), 1);
    for i in 0..10 {
        log.append(violation(100 + i)).expect("append");
    }
    drop(log);
    assert_eq!(assert_intact(dir.path(), None).recoveries.len(), 1);
}

#[test]
fn deleted_last_segment_is_recorded_at_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, small(), 12);
    let last = segment::list(dir.path())
        .expect("list")
        .pop()
        .expect("segment");
    fs::remove_file(&last.path).expect("rm");
    let (mut log, report) = AuditLog::open(dir.path(), None, small()).expect("open");
    assert_eq!(report.recovered.len(), 1);
    assert!(
        report.warnings.iter().any(|w| w.contains("was missing")),
        "{:?}",
        report.warnings
    );
    log.append(violation(1)).expect("append");
    drop(log);
    let report = assert_intact(dir.path(), None);
    assert!(
        report.recoveries[0]
            .found
            .contains("tail of the log was deleted")
    );
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, _) = AuditLog::open(dir.path(), None, AuditOptions::default()).expect("open");
    let err = AuditLog::open(dir.path(), None, AuditOptions::default()).expect_err("locked");
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
}

#[test]
fn key_files_hex_raw_empty_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("key");
    fs::write(&p, format!("{}\n", "ab".repeat(32))).expect("write");
    let hex_key = HmacKey::from_file(&p).expect("hex key");
    assert_eq!(
        hex_key.mac_hex(b"x"),
        HmacKey::from_bytes(vec![0xab; 32])
            .expect("k")
            .mac_hex(b"x")
    );
    assert!(
        !format!("{hex_key:?}").contains("ab"),
        "Debug leaks the key"
    );

    fs::write(&p, [0xffu8; 40]).expect("write");
    assert!(HmacKey::from_file(&p).is_ok());

    fs::write(&p, b" \n").expect("write");
    let e = HmacKey::from_file(&p).expect_err("empty");
    assert!(
        matches!(e, KeyError::Empty { .. }) && e.to_string().contains("is empty"),
        "{e}"
    );

    fs::write(&p, "abcd").expect("write");
    let e = HmacKey::from_file(&p).expect_err("short");
    assert!(matches!(e, KeyError::TooShort { len: 2, .. }), "{e}");

    let e = HmacKey::from_file(Path::new("/dev/zero")).expect_err("not a key file");
    assert!(matches!(e, KeyError::TooLarge { .. }), "{e}");

    let mut out = Vec::new();
    assert_eq!(run_verify(dir.path(), Some(&p), &mut out), 2);
    assert!(
        String::from_utf8(out)
            .expect("utf8")
            .contains("only 2 key bytes")
    );
}

#[test]
fn empty_or_missing_directory_cannot_be_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    assert_eq!(run_verify(dir.path(), None, &mut out), 2);
    assert_eq!(run_verify(&dir.path().join("nope"), None, &mut out), 2);
}

#[test]
fn new_nested_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("a/b");
    let (mut log, report) = AuditLog::open(&nested, None, AuditOptions::default()).expect("open");
    assert!(report.created);
    log.append(RecordKind::AgentStop {
        reason: "test".to_owned(),
    })
    .expect("append");
    let mode = fs::metadata(&nested).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o750);
    let mode = fs::metadata(seg(&nested, 1))
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode & 0o007, 0, "segment is world-accessible: {mode:o}");
}

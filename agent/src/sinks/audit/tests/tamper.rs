//! One test per kind of tampering.

use std::fs;

use super::*;

#[test]
fn edited_field_is_a_hash_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 5);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all[2] = all[2].replace("\"count\":3", "\"count\":1");
    write_lines(&path, &all);
    let f = bad(dir.path(), None);
    assert_eq!((f.line, f.seq), (Some(3), Some(3)));
    assert_eq!(f.problem, Problem::HashMismatch);
}

#[test]
fn reformatted_line_is_not_canonical() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 3);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all[1] = all[1].replacen("{\"seq\":2,", "{\"seq\":2,\"note\":\"x\",", 1);
    write_lines(&path, &all);
    let f = bad(dir.path(), None);
    assert_eq!((f.line, f.problem), (Some(2), Problem::NotCanonical));
}

#[test]
fn deleted_line_is_a_seq_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 5);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all.remove(2);
    write_lines(&path, &all);
    let f = bad(dir.path(), None);
    assert_eq!((f.line, f.seq), (Some(3), Some(4)));
    assert_eq!(
        f.problem,
        Problem::Deleted {
            expected: 3,
            found: 4
        }
    );
}

#[test]
fn swapped_lines_are_reported_as_reordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 5);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all.swap(1, 2);
    write_lines(&path, &all);
    let f = bad(dir.path(), None);
    assert_eq!((f.line, f.seq), (Some(2), Some(3)));
    assert!(
        matches!(&f.problem, Problem::Reordered { expected: 2, found: 3, later } if later == "audit-000001.jsonl line 3"),
        "{:?}",
        f.problem
    );
}

#[test]
fn truncation_mid_line_is_a_torn_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 4);
    let path = seg(dir.path(), 1);
    let len = fs::metadata(&path).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len - 40))
        .expect("truncate");
    let f = bad(dir.path(), None);
    assert_eq!(f.line, Some(4));
    assert!(
        matches!(f.problem, Problem::TornLine { .. }),
        "{:?}",
        f.problem
    );
    let mut out = Vec::new();
    assert_eq!(run_verify(dir.path(), None, &mut out), 1);
    let text = String::from_utf8(out).expect("utf8");
    eprintln!("{text}");
    assert!(
        text.contains("NOT INTACT") && text.contains("FIRST BAD:  audit-000001.jsonl line 4"),
        "{text}"
    );
}

#[test]
fn deleted_middle_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, small(), 12);
    assert!(seg(dir.path(), 3).exists());
    fs::remove_file(seg(dir.path(), 2)).expect("rm");
    let f = bad(dir.path(), None);
    assert_eq!(f.segment, Some(seg(dir.path(), 3)));
    assert_eq!(f.line, Some(1));
    assert_eq!(
        f.problem,
        Problem::MissingSegment {
            name: "audit-000002.jsonl".to_owned()
        }
    );
}

#[test]
fn renumbered_segments_after_deletion_are_still_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, small(), 12);
    fs::remove_file(seg(dir.path(), 2)).expect("rm");
    fs::rename(seg(dir.path(), 3), seg(dir.path(), 2)).expect("mv");
    let f = bad(dir.path(), None);
    assert_eq!((f.segment, f.line), (Some(seg(dir.path(), 2)), Some(1)));
    // The first segment's seal names audit-000002.jsonl, so the rename passes that check;
    // the seq gap does not.
    assert!(
        matches!(f.problem, Problem::Deleted { .. }),
        "{:?}",
        f.problem
    );
}

#[test]
fn deleted_last_segment_is_detected_by_its_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, small(), 12);
    let segments = segment::list(dir.path()).expect("list");
    let last = segments.last().expect("segments");
    fs::remove_file(&last.path).expect("rm");
    let f = bad(dir.path(), None);
    assert_eq!(
        f.problem,
        Problem::MissingLastSegment {
            next: last.file_name()
        }
    );
}

#[test]
fn forged_record_with_recomputed_hash_breaks_the_chain_or_the_hmac() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), AuditOptions::default(), 5);
    let path = seg(dir.path(), 1);
    let soften = |k: &mut RecordKind| {
        if let RecordKind::ViolationOpened(v) = k {
            v.severity = "info".to_owned();
        }
    };
    // One record forged: its own hash checks out, the next record's prev does not.
    forge(&path, 1, false, soften);
    let f = bad(dir.path(), None);
    assert_eq!(
        (f.line, f.problem),
        (Some(3), Problem::PrevMismatch { previous: 2 })
    );
    // With the key, the forged record itself is caught.
    let f = bad(dir.path(), Some(&key()));
    assert_eq!((f.line, f.problem), (Some(2), Problem::HmacMismatch));
}

#[test]
fn fully_rechained_forgery_needs_the_key_to_be_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), AuditOptions::default(), 5);
    let path = seg(dir.path(), 1);
    forge(&path, 1, true, |k| {
        if let RecordKind::ViolationOpened(v) = k {
            v.client = "someone-else".to_owned();
        }
    });
    // Without the key a complete rewrite is indistinguishable: that is what the HMAC is for.
    assert_intact(dir.path(), None);
    let f = bad(dir.path(), Some(&key()));
    assert_eq!(
        (f.line, f.seq, f.problem),
        (Some(2), Some(2), Problem::HmacMismatch)
    );
}

#[test]
fn stripped_hmac_and_wrong_key_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), Some(key()), AuditOptions::default(), 3);
    let other = HmacKey::from_bytes(vec![7; 32]).expect("key");
    let f = bad(dir.path(), Some(&other));
    assert_eq!((f.line, f.problem), (Some(1), Problem::HmacMismatch));

    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    let cut = all[2].find(",\"hmac\":").expect("hmac present");
    all[2].truncate(cut);
    all[2].push('}');
    write_lines(&path, &all);
    assert_intact(dir.path(), None);
    let f = bad(dir.path(), Some(&key()));
    assert_eq!((f.line, f.problem), (Some(3), Problem::MissingHmac));
}

#[test]
fn log_written_without_key_fails_verification_with_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 2);
    let f = bad(dir.path(), Some(&key()));
    assert_eq!((f.line, f.problem), (Some(1), Problem::MissingHmac));
}

#[test]
fn deleted_tail_of_an_earlier_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = AuditOptions {
        max_segment_bytes: 2000,
    };
    write_log(dir.path(), None, opts, 12);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all.truncate(all.len() - 2); // the last violation and the segment_end
    write_lines(&path, &all);
    let f = bad(dir.path(), None);
    assert_eq!((f.segment, f.line), (Some(seg(dir.path(), 2)), Some(1)));
    assert_eq!(f.problem, Problem::UnsealedPredecessor);
}

#[test]
fn duplicated_record_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), None, AuditOptions::default(), 4);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all.insert(3, all[1].clone());
    write_lines(&path, &all);
    let f = bad(dir.path(), None);
    assert_eq!(
        (f.line, f.problem),
        (
            Some(4),
            Problem::SeqBackwards {
                expected: 4,
                found: 2
            }
        )
    );
}

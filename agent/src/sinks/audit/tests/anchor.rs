//! `audit anchor` and `audit verify --anchor`: a truncated tail, which the
//! chain alone cannot reveal, is caught against a kept anchor.

use super::*;

/// `audit anchor DIR`: (exit code, stdout, stderr).
fn anchor(dir: &Path, json: bool) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_anchor(dir, None, json, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn verify_anchored(dir: &Path, anchor: &str) -> (i32, String) {
    let mut out = Vec::new();
    let code = run_verify_anchored(dir, None, Some(anchor), &mut out);
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn anchor_prints_the_head_and_verify_accepts_it_while_the_log_grows() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None, small(), 6);
    let report = assert_intact(dir.path(), None);
    let last = report.last.unwrap();
    let (code, out, err) = anchor(dir.path(), false);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}:{}\n", last.seq, last.hash));
    let kept = out.trim().to_owned();

    // More records later: the anchor still holds.
    write_log(dir.path(), None, small(), 4);
    let (code, out) = verify_anchored(dir.path(), &kept);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("INTACT"), "{out}");
    assert!(
        out.contains(&format!("anchor:     seq {} hash", last.seq)),
        "{out}"
    );

    // The JSON form, saved to a file, works as --anchor FILE too.
    let (code, json, _) = anchor(dir.path(), true);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["seq"].as_u64().unwrap() > last.seq);
    assert_eq!(
        v["anchor"],
        format!("{}:{}", v["seq"], v["hash"].as_str().unwrap())
    );
    assert!(v["segment"].as_str().unwrap().starts_with("audit-"));
    let kept_dir = tempfile::tempdir().unwrap();
    let file = kept_dir.path().join("anchor.json");
    fs::write(&file, &json).unwrap();
    let (code, out) = verify_anchored(dir.path(), file.to_str().unwrap());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_truncated_tail_verifies_alone_but_not_against_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None, AuditOptions::default(), 6);
    let (_, kept, _) = anchor(dir.path(), false);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all.truncate(4);
    write_lines(&path, &all);
    // The chain alone cannot tell.
    assert_intact(dir.path(), None);
    let (code, out) = verify_anchored(dir.path(), kept.trim());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT INTACT"), "{out}");
    assert!(
        out.contains(
            "the log ends at seq 4, but the anchor names seq 6: records 5..=6 were deleted from the end"
        ),
        "{out}"
    );
}

#[test]
fn a_rewritten_chain_does_not_match_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None, AuditOptions::default(), 5);
    let (_, kept, _) = anchor(dir.path(), false);
    // An attacker without the key rewrites record 3 and re-chains the rest:
    // the chain verifies, the anchor does not.
    forge(&seg(dir.path(), 1), 2, true, |k| {
        if let RecordKind::ViolationOpened(v) = k {
            v.count = 0;
        }
    });
    assert_intact(dir.path(), None);
    let (code, out) = verify_anchored(dir.path(), kept.trim());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FIRST BAD:  audit-000001.jsonl line 5 (seq 5)"),
        "{out}"
    );
    assert!(out.contains("the log was rewritten from there on"), "{out}");
}

#[test]
fn a_broken_log_has_no_anchor_and_bad_anchors_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None, AuditOptions::default(), 3);
    let path = seg(dir.path(), 1);
    let mut all = lines(&path);
    all[1] = all[1].replace("\"count\":2", "\"count\":9");
    write_lines(&path, &all);
    let (code, out, err) = anchor(dir.path(), false);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no anchor printed"), "{err}");

    for bad in ["", "12", "x:abc", "0:00", &format!("3:{}", "g".repeat(64))] {
        let (code, out) = verify_anchored(dir.path(), bad);
        assert_eq!(code, 2, "{bad:?}: {out}");
        assert!(out.starts_with("error: "), "{out}");
    }
    assert_eq!(
        format!("7:{}", "AB".repeat(32))
            .parse::<AnchorSpec>()
            .unwrap(),
        AnchorSpec {
            seq: 7,
            hash: "ab".repeat(32)
        }
    );
}

//! `rampwatch contract diff` as a pull-request gate: the binary on the
//! shipped example contract and edits of it, checked for exit codes and
//! output a CI job would read.

use std::{path::Path, process::Command};

use serde_json::Value;

const EXAMPLE: &str = include_str!("../../examples/contract.yaml");

fn diff(old: &Path, new: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampwatch"));
    cmd.args(["contract", "diff"]).arg(old).arg(new);
    if json {
        cmd.args(["-o", "json"]);
    }
    let out = cmd.output().expect("run rampwatch contract diff");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("UTF-8"),
        String::from_utf8(out.stderr).expect("UTF-8"),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write contract");
    path
}

fn edit(from: &str, to: &str) -> String {
    assert_eq!(EXAMPLE.matches(from).count(), 1, "edit {from:?}");
    EXAMPLE.replacen(from, to, 1)
}

#[test]
fn the_gate_passes_tightening_and_fails_loosening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "main.yaml", EXAMPLE);

    let (code, out, err) = diff(&main, &main, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 changes, 0 loosen, 0 tighten"), "{out}");

    // A shorter breach window: nothing loosens.
    let tighter = write(
        dir.path(),
        "tighter.yaml",
        &edit("breachAfter: 24h", "breachAfter: 12h"),
    );
    let (code, out, _) = diff(&main, &tighter, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("remediation breachAfter 1d → 12h"), "{out}");

    // The pull request doubles globex's orders quota in ramp-10x and drops
    // the revocation of the leaked key.
    let looser = edit(
        "{ client: globex, endpoint: orders, requestsPerSecond: 100, burst: 200 }",
        "{ client: globex, endpoint: orders, requestsPerSecond: 200, burst: 400 }",
    );
    let start = looser.find("  revocations:").expect("revocations");
    let end = looser.find("  remediation:").expect("remediation");
    let looser = format!("{}{}", &looser[..start], &looser[end..]);
    let pr = write(dir.path(), "pr.yaml", &looser);
    let (code, out, _) = diff(&main, &pr, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("2 changes, 2 loosen, 0 tighten"), "{out}");
    assert!(
        out.contains(
            "loosens   globex    stage ramp-10x: quota globex → orders: 100 req/s, burst 200 → 200 req/s, burst 400"
        ),
        "{out}"
    );
    let (code, out, _) = diff(&main, &pr, true);
    assert_eq!(code, 1);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    let revocation = rows
        .iter()
        .find(|r| r["area"] == "revocation")
        .expect("the revocation row");
    assert_eq!(revocation["effect"], "loosens");
    // The revoked key is acme's, so the row names acme.
    assert_eq!(revocation["client"], "acme");
    assert_eq!(revocation["old"], "2026-11-20T00:00:00Z");
    assert!(revocation["new"].is_null());
}

#[test]
fn an_invalid_contract_exits_2_with_its_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = write(dir.path(), "main.yaml", EXAMPLE);
    let bad = write(
        dir.path(),
        "bad.yaml",
        &edit("minTlsVersion: \"1.2\"", "minTlsVersion: \"1.4\""),
    );
    let (code, out, err) = diff(&main, &bad, false);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("minTlsVersion"), "{err}");
    let (code, _, err) = diff(&main, &dir.path().join("missing.yaml"), false);
    assert_eq!(code, 2);
    assert!(err.contains("missing.yaml"), "{err}");
}

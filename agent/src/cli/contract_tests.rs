//! The offline command functions (`contract check|schema`, `fingerprint`).

use std::path::PathBuf;

use super::contract::{Outcome, run_check, run_fingerprint, run_schema};
use crate::contract::{schema_json, tests::*};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampwatch-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn check(path: &std::path::Path, at: Option<&str>) -> (Outcome, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run_check(path, at.map(t), &mut out, &mut err).unwrap();
    (
        outcome,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn check_prints_the_timeline_and_the_active_stage() {
    let path = temp_file("ok.yaml", EXAMPLE);
    let (outcome, out, err) = check(&path, Some("2026-11-29T12:00:00Z"));
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(outcome.code(), 0);
    assert!(err.is_empty(), "{err}");
    assert!(
        out.contains("contract `acme-payments-ramp` is valid (sha256:"),
        "{out}"
    );
    assert!(
        out.contains("2 data classes, 3 endpoints, 2 clients, 3 stages, 1 revocation"),
        "{out}"
    );
    assert!(
        out.contains("remediation: warn after 15m, breach after 1d"),
        "{out}"
    );
    assert!(
        out.contains("  2026-11-15T00:00:00Z  ramp-2x\n      credentialMaxAge 365d → 30d\n"),
        "{out}"
    );
    assert!(
        out.contains("quota acme → payments: 5 req/s, burst 10 → 10 req/s, burst 20"),
        "{out}"
    );
    assert!(
        out.contains("quota globex → payments: new, 5 req/s, burst 10"),
        "{out}"
    );
    assert!(
        out.contains("quota acme → legacy-payments: removed (quota 0 from now on)"),
        "{out}"
    );
    assert!(
        out.contains("credential sha256:0da98e5574a5… of acme becomes stale"),
        "{out}"
    );
    assert!(out.contains(
        "at 2026-11-29T12:00:00Z: stage `ramp-2x` is active (since 2026-11-15T00:00:00Z); next: `ramp-10x` at 2027-01-15T00:00:00Z"
    ), "{out}");

    let (_, out, _) = check(&path, Some("2026-01-01T00:00:00Z"));
    assert!(out.contains(
        "at 2026-01-01T00:00:00Z: no stage active yet; first stage `pilot` starts at 2026-10-01T00:00:00Z"
    ), "{out}");
    let (_, out, _) = check(&path, Some("2027-02-01T00:00:00Z"));
    assert!(
        out.contains(
            "stage `ramp-10x` is active (since 2027-01-15T00:00:00Z); it is the last stage"
        ),
        "{out}"
    );
    // Without --at: now. Whatever stage that is, one line says so.
    let (outcome, out, _) = check(&path, None);
    assert_eq!(outcome, Outcome::Success);
    assert!(
        out.lines().last().is_some_and(|l| l.starts_with("at 20")),
        "{out}"
    );
}

#[test]
fn check_reports_every_error_as_file_line_col_and_exits_2() {
    let text = EXAMPLE
        .replace("apiVersion: rampwatch.io/v1", "apiVersion: rampwatch.io/v0")
        .replace("credentialMaxAge: 30d", "credentialMaxAge: 30 days");
    let path = temp_file("bad.yaml", &text);
    let (outcome, out, err) = check(&path, None);
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(outcome.code(), 2);
    assert!(out.is_empty(), "{out}");
    let p = path.display();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{p}:17:13: apiVersion: must be")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{p}:79:25: spec.stages[1].credentialMaxAge: `30 days` is not a duration"
        )),
        "{err}"
    );
    assert_eq!(
        lines[2],
        format!("{p}: 2 errors; the contract was not loaded")
    );

    let (outcome, _, err) = check(&path.with_file_name("absent.yaml"), None);
    assert_eq!(outcome, Outcome::Invalid);
    assert!(
        err.contains("absent.yaml: cannot read contract file"),
        "{err}"
    );
}

fn fingerprint(header: Option<&str>, input: &[u8]) -> (Outcome, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run_fingerprint(header, &mut &input[..], &mut out, &mut err).unwrap();
    (
        outcome,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn fingerprint_command() {
    // echo -n abc | sha256sum
    let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    assert_eq!(
        fingerprint(None, b"abc\n"),
        (Outcome::Success, abc.into(), String::new())
    );
    assert_eq!(fingerprint(None, b"abc").1, abc);
    assert_eq!(fingerprint(None, b"Bearer abc\r\n").1, abc);
    assert_eq!(fingerprint(Some("X-Api-Key"), b"abc\n").1, abc);
    // Other headers hash the whole value, scheme included.
    assert_ne!(fingerprint(Some("x-api-key"), b"Bearer abc\n").1, abc);
    assert_eq!(
        fingerprint(None, b"acme-demo-token\n").1,
        "sha256:79665b9580ab672b11d07c958da63e90a03b2b9fbf6365b47972b7d1762406a7\n"
    );
    let (outcome, out, err) = fingerprint(None, b"\n");
    assert_eq!(outcome, Outcome::Invalid);
    assert!(out.is_empty());
    assert!(err.contains("no credential on standard input"), "{err}");
    let (outcome, _, err) = fingerprint(None, &vec![b'a'; 70_000]);
    assert_eq!(outcome, Outcome::Invalid);
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn schema_command_prints_the_schema() {
    let mut out = Vec::new();
    assert_eq!(run_schema(&mut out).unwrap(), Outcome::Success);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out, schema_json());
    assert!(out.contains("\"title\": \"RampContract\""));
}

//! Canary test for `rampwatch replay` (issue 4, "Secrets and bad input"):
//! fresh random tokens planted in every credential-bearing place of HTTP
//! traffic must never come out of the binary, at any log level, in either
//! output format, and malformed traffic must be counted and skipped.
//!
//! The capture is built here (see `canary_replay/frames.rs`), so every run
//! plants new canaries and needs no root. A contract written next to it
//! knows most of the credentials, so they are really parsed, hashed and
//! matched (each scenario's flow must name its client, which proves the
//! canary was read), and the traffic raises every request-level violation
//! kind whose `detail` could carry request text.

#[path = "../../tests/src/canary.rs"]
mod canary;
#[path = "canary_replay/frames.rs"]
mod frames;
#[path = "canary_replay/scenarios.rs"]
mod scenarios;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use canary::{Canaries, Leak, Rng, assert_no_leaks};
use frames::Capture;
use scenarios::{Expect, build};
use serde_json::Value;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn replay(contract: &Path, pcap: &Path, format: &str) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_rampwatch"))
        .args(["replay", "--contract"])
        .arg(contract)
        .args(["-o", format])
        .arg(pcap)
        .env("RAMPWATCH_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run rampwatch replay");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn leaks_in(c: &Canaries, name: &str, run: &Run) -> Vec<Leak> {
    let mut leaks = c.scan(&format!("{name} stdout"), run.stdout.as_bytes());
    leaks.extend(c.scan(&format!("{name} stderr"), run.stderr.as_bytes()));
    leaks
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn assert_no_panic(what: &str, run: &Run) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "{what}: rampwatch panicked:\n{}",
        run.stderr
    );
}

fn setup(name: &str) -> (tempfile::TempDir, Canaries, u64, Capture, Expect, PathBuf) {
    let rng = std::env::var("RW_CANARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or_else(Rng::from_entropy, Rng::new);
    let seed = rng.seed();
    eprintln!("{name}: canary seed {seed} (RW_CANARY_SEED={seed} repeats this run)");
    let mut c = Canaries::new(rng);
    let start = agent::contract::parse_rfc3339("2026-11-29T20:00:00Z").expect("valid time");
    let (cap, yaml, expect) = build(&mut c, start);
    let dir = tempfile::tempdir().expect("temp dir");
    if std::env::var_os("RW_CANARY_KEEP").is_some() {
        eprintln!("{name}: keeping {}", dir.path().display());
    }
    let contract = dir.path().join("contract.yaml");
    std::fs::write(&contract, yaml).expect("write contract");
    (dir, c, seed, cap, expect, contract)
}

#[test]
fn replay_never_prints_a_planted_credential() {
    let (dir, c, seed, cap, expect, contract) = setup("replay");
    let pcap = dir.path().join("canary.pcap");
    std::fs::write(&pcap, cap.to_pcap()).expect("write pcap");

    let json = replay(&contract, &pcap, "json");
    let table = replay(&contract, &pcap, "table");
    for (name, run) in [("json", &json), ("table", &table)] {
        assert_no_panic(name, run);
        assert_eq!(
            run.code,
            Some(1),
            "{name}: violations expected\n{}",
            run.stderr
        );
    }

    // The scan must be able to fail: the capture holds every canary.
    let missing = c.missing_from(&cap.to_pcap());
    assert!(
        missing.is_empty(),
        "canaries not in the capture: {missing:?}"
    );

    let objs = json_lines(&json);
    let flows: Vec<&Value> = objs.iter().filter(|o| o["type"] == "flow").collect();
    for client in &expect.clients {
        assert!(
            flows.iter().any(|f| f["client"] == *client),
            "no flow attributed to client {client}: its credential was not parsed\n{}",
            json.stdout
        );
    }
    let violations: Vec<&Value> = objs.iter().filter(|o| o["type"] == "violation").collect();
    for (kind, client) in &expect.violations {
        assert!(
            violations
                .iter()
                .any(|v| v["kind"] == *kind && v["client"] == *client),
            "no {kind} violation for {client}\n{}",
            json.stdout
        );
    }
    // unlisted_endpoint details show a path's first segment only: that part
    // must be there; deeper segments, `?`, `;` and `@` parts must not.
    let details: Vec<&str> = violations
        .iter()
        .filter(|v| v["kind"] == "unlisted_endpoint")
        .filter_map(|v| v["detail"].as_str())
        .collect();
    let shown = "/v2/…";
    assert!(
        details.iter().any(|d| d.contains(shown)),
        "no unlisted_endpoint detail names {shown}: {details:?}"
    );

    let mut leaks = leaks_in(&c, "replay -o json", &json);
    leaks.extend(leaks_in(&c, "replay -o table", &table));
    assert_no_leaks(seed, &leaks);
    if std::env::var_os("RW_CANARY_KEEP").is_some() {
        let _ = dir.keep();
    }
}

#[test]
fn malformed_captures_are_counted_and_skipped() {
    let (dir, c, seed, cap, expect, contract) = setup("mutations");
    let mut rng = Rng::new(seed ^ 0x5eed);
    let pcap = dir.path().join("bad.pcap");

    // Known damage: every frame of the good capture plus, after each, a
    // frame cut inside its IP header. The flows must come out as before and
    // the damage must be counted.
    let mut damaged = Vec::new();
    for f in &cap.frames {
        damaged.push(f.clone());
        let mut cut = f.clone();
        cut.orig_len = Some(cut.data.len());
        cut.data.truncate(frames::ETH_LEN + 8);
        damaged.push(cut);
    }
    std::fs::write(&pcap, frames::write_pcap(&damaged)).expect("write pcap");
    let run = replay(&contract, &pcap, "json");
    assert_no_panic("cut frames", &run);
    assert_eq!(run.code, Some(1), "cut frames\n{}", run.stderr);
    let objs = json_lines(&run);
    let summary = objs.last().expect("a summary line");
    assert_eq!(summary["type"], "summary");
    let skipped: u64 = summary["skipped_frames"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .or_else(|| summary["skipped_frames"].as_u64())
        .unwrap_or(0);
    assert!(
        skipped >= cap.frames.len() as u64,
        "cut frames not counted: {summary}"
    );
    for client in &expect.clients {
        assert!(
            objs.iter()
                .any(|o| o["type"] == "flow" && o["client"] == *client),
            "cut frames made client {client} disappear"
        );
    }
    let mut leaks = leaks_in(&c, "replay of cut frames", &run);

    // Random damage at several rates, in both formats.
    for round in 0..24 {
        let one_in = [2, 4, 8, 20][round % 4];
        let frames = frames::mutate(&cap.frames, &mut rng, one_in);
        std::fs::write(&pcap, frames::write_pcap(&frames)).expect("write pcap");
        let format = if round % 2 == 0 { "json" } else { "table" };
        let run = replay(&contract, &pcap, format);
        let what = format!("mutation round {round} (1 in {one_in}, -o {format}, seed {seed})");
        assert_no_panic(&what, &run);
        assert!(
            matches!(run.code, Some(0 | 1)),
            "{what}: exit {:?}\n{}",
            run.code,
            run.stderr
        );
        if format == "json" {
            let objs = json_lines(&run);
            assert_eq!(
                objs.last().map(|o| &o["type"]),
                Some(&Value::from("summary")),
                "{what}"
            );
        }
        leaks.extend(leaks_in(&c, &what, &run));
    }

    // Damage to the file itself: cut anywhere, record lengths lying.
    let good = cap.to_pcap();
    for round in 0..12 {
        let mut bytes = good.clone();
        if round % 2 == 0 {
            bytes.truncate(24 + rng.below(bytes.len() - 24));
        } else {
            for _ in 0..4 {
                let at = 24 + rng.below(bytes.len() - 24);
                bytes[at] = 0xff;
            }
        }
        std::fs::write(&pcap, &bytes).expect("write pcap");
        let run = replay(&contract, &pcap, "json");
        let what = format!("file damage round {round} (seed {seed})");
        assert_no_panic(&what, &run);
        // 2 only when nothing at all could be read.
        assert!(
            matches!(run.code, Some(0..=2)),
            "{what}: exit {:?}\n{}",
            run.code,
            run.stderr
        );
        leaks.extend(leaks_in(&c, &what, &run));
    }
    assert_no_leaks(seed, &leaks);
}

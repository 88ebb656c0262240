//! The fuzz corpus and every input a fuzzer ever crashed on, replayed under
//! stable `cargo test`: each file of `agent/fuzz/corpus/<target>/` and
//! `agent/fuzz/regressions/<target>/` through that target's function (the
//! same function the libFuzzer binary runs, `agent/fuzz/src/targets.rs`).
//! A parser change that brings back a fixed crash fails here, without
//! nightly or a fuzzer.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"));
    out.sort();
    out
}

/// Runs every file of `kind/<target>/`, collecting the panics so one
/// failure names all the inputs that fail.
fn replay(kind: &str) -> usize {
    let mut failures = Vec::new();
    let mut ran = 0;
    for &(name, run) in targets::TARGETS {
        for path in files(&fuzz_dir().join(kind).join(name)) {
            let data = fs::read(&path).expect("read a corpus file");
            ran += 1;
            if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "these inputs panic again: {failures:#?}"
    );
    ran
}

#[test]
fn corpus_replays_without_a_panic() {
    let ran = replay("corpus");
    // Every target has a saved corpus: an empty one would replay nothing.
    for &(name, _) in targets::TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "agent/fuzz/corpus/{name} is empty"
        );
    }
    assert!(ran > 0);
}

#[test]
fn past_crashes_replay_without_a_panic() {
    replay("regressions");
}

/// The list of targets is one: TARGETS, the fuzz crate's `[[bin]]`s and
/// `fuzz_targets/` name the same set.
#[test]
fn every_target_has_a_binary() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz Cargo.toml");
    let mut bins: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "rampwatch-fuzz")
        .map(str::to_owned)
        .collect();
    bins.sort();
    let mut sources: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    sources.sort();
    let mut names: Vec<String> = targets::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    names.sort();
    assert_eq!(bins, names, "[[bin]]s of agent/fuzz/Cargo.toml");
    assert_eq!(sources, names, "files of agent/fuzz/fuzz_targets/");
}

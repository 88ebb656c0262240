//! `cargo xtask fuzz`: the libFuzzer targets of `agent/fuzz/` (cargo-fuzz,
//! nightly, AddressSanitizer).
//!
//! `--list` names the targets; `fuzz TARGET --seconds N` runs one, reading
//! the seeds (`agent/fuzz/seeds.py`) and the committed corpus
//! (`agent/fuzz/corpus/TARGET/`) and writing what it
//! finds to a scratch corpus under `agent/fuzz/target/`; `--merge` then
//! minimizes both into the committed one. `cargo xtask test` runs every
//! target for a share of [`TEST_BUDGET`]. A crash, hang or over-limit
//! allocation fails the run and leaves its input in
//! `agent/fuzz/artifacts/TARGET/`: fix the parser, then keep the input in
//! `agent/fuzz/regressions/TARGET/` (replayed by `cargo test`,
//! `agent/tests/fuzz_corpus.rs`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, probe, root};

/// Fuzzing time of all targets together in `cargo xtask test` (its phase
/// title in test.rs says it too).
pub const TEST_BUDGET: Duration = Duration::from_secs(180);

/// Per input: slower than this is a hang.
const TIMEOUT_SECS: u32 = 10;
/// Any single allocation above this is a bug (every buffer is bounded far
/// below it), and so is a process past the RSS limit.
const MALLOC_LIMIT_MB: u32 = 256;
const RSS_LIMIT_MB: u32 = 1024;
/// Bytes of one committed corpus input (longer ones are cut by the merge),
/// halved down to `MERGE_MIN_LEN` while a target's corpus exceeds
/// `CORPUS_BUDGET` bytes.
const MERGE_MAX_LEN: u32 = 2048;
const MERGE_MIN_LEN: u32 = 256;
const CORPUS_BUDGET: u64 = 40 * 1024;

#[derive(clap::Args)]
pub struct Options {
    /// The target to run (see --list).
    target: Option<String>,
    /// Name the targets and exit.
    #[arg(long)]
    list: bool,
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Instead of fuzzing: minimize the committed corpus and the scratch
    /// corpus into agent/fuzz/corpus/TARGET.
    #[arg(long)]
    merge: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    install()?;
    if options.list {
        for t in targets()? {
            println!("{t}");
        }
        return Ok(());
    }
    let Some(target) = &options.target else {
        bail!("name a target (`cargo xtask fuzz --list` shows them) or pass --list");
    };
    if !targets()?.contains(target) {
        bail!("there is no fuzz target {target:?}; `cargo xtask fuzz --list` shows them");
    }
    if options.merge {
        return merge(target);
    }
    fuzz(target, Duration::from_secs(options.seconds)).map(|_| ())
}

fn fuzz_dir() -> PathBuf {
    root().join("agent/fuzz")
}

/// cargo-fuzz for the installed nightly, once (`cargo install` is
/// idempotent but slow to say so).
pub fn install() -> anyhow::Result<()> {
    if probe(Command::new("cargo").args(["+nightly", "fuzz", "--version"])).is_some() {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz (about a minute)");
    cmd::run(Command::new("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"]))
        .context("could not install cargo-fuzz; the fuzz targets cannot be built without it")
}

/// `cargo +nightly fuzz <args>` from the agent crate (cargo-fuzz finds
/// `fuzz/` there). No kernel object is needed.
fn cargo_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root().join("agent"))
        .env("AYA_BUILD_SKIP", "1")
        .args(["+nightly", "fuzz"]);
    c
}

/// The targets, from the fuzz crate's manifest.
pub fn targets() -> anyhow::Result<Vec<String>> {
    let out = cargo_fuzz()
        .arg("list")
        .output()
        .context("could not run `cargo fuzz list`")?;
    if !out.status.success() {
        bail!(
            "`cargo fuzz list` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Installs cargo-fuzz if needed and builds every target (sanitizer
/// builds of all dependencies: slow once).
pub fn build() -> anyhow::Result<()> {
    install()?;
    cmd::run(cargo_fuzz().arg("build")).context("building the fuzz targets failed")
}

/// What one run did.
pub struct Ran {
    pub execs: u64,
    pub took: Duration,
}

/// Fuzzes `target` for `time`; an error names the crashing input.
pub fn fuzz(target: &str, time: Duration) -> anyhow::Result<Ran> {
    let dir = fuzz_dir();
    let scratch = dir.join("target/corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let logs = dir.join("target/logs");
    for d in [&scratch, &artifacts, &logs] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log = logs.join(format!("{target}.log"));
    let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let seeds = seeds()?.join(target);
    let mut c = cargo_fuzz();
    c.args(["run", target])
        .arg(&scratch)
        .arg(dir.join("corpus").join(target))
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", time.as_secs().max(1)))
        .args(libfuzzer_limits())
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    let dict = dir.join(format!("{target}.dict"));
    if dict.exists() {
        c.arg(format!("-dict={}", dict.display()));
    }
    let started = Instant::now();
    let status = c
        .stderr(log_file)
        .status()
        .context("could not run `cargo fuzz run`")?;
    let took = started.elapsed();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let execs = text
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({status}); its input is in {}; fix the parser, then \
             copy the input to agent/fuzz/regressions/{target}/ (full log: {}):\n{}",
            artifacts.display(),
            log.display(),
            tail.join("\n")
        );
    }
    eprintln!("fuzz: {target}: {:.0} s, {execs} execs", took.as_secs_f64());
    Ok(Ran { execs, took })
}

/// The full-size starting inputs (`seeds.py`: golden captures, HTTP/2
/// streams, contracts, an audit log), written under `agent/fuzz/target/`
/// for every run: the committed corpus is cut short to stay small, these
/// are whole.
fn seeds() -> anyhow::Result<PathBuf> {
    let dir = fuzz_dir().join("target/seeds");
    cmd::run(
        Command::new("python3")
            .arg(fuzz_dir().join("seeds.py"))
            .arg(&dir),
    )
    .context("could not write the fuzz seeds (agent/fuzz/seeds.py)")?;
    Ok(dir)
}

fn libfuzzer_limits() -> [String; 3] {
    [
        format!("-timeout={TIMEOUT_SECS}"),
        format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
    ]
}

/// Minimizes the committed corpus plus the scratch corpus into the
/// committed one: libFuzzer's `-set_cover_merge=1` on edge coverage only
/// (no hit counts), inputs cut at a length that starts at
/// [`MERGE_MAX_LEN`] and halves until the target's corpus fits
/// [`CORPUS_BUDGET`], so all of them stay a few hundred KB in git. The
/// scratch corpus keeps everything for local runs.
fn merge(target: &str) -> anyhow::Result<()> {
    let dir = fuzz_dir();
    let committed = dir.join("corpus").join(target);
    let scratch = dir.join("target/corpus").join(target);
    let fresh = dir.join("target/merged").join(target);
    for d in [&scratch, &committed] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut max_len = MERGE_MAX_LEN;
    loop {
        let _ = fs::remove_dir_all(&fresh);
        fs::create_dir_all(&fresh).with_context(|| format!("creating {}", fresh.display()))?;
        cmd::run(
            cargo_fuzz()
                .args(["run", target])
                .args([&fresh, &committed, &scratch])
                .arg("--")
                .args([
                    "-set_cover_merge=1",
                    "-use_counters=0",
                    "-use_value_profile=0",
                ])
                .arg(format!("-max_len={max_len}"))
                .args(libfuzzer_limits()),
        )
        .with_context(|| format!("merging the corpus of {target} failed"))?;
        let (n, bytes) = count(&fresh);
        if bytes <= CORPUS_BUDGET || max_len <= MERGE_MIN_LEN {
            replace_dir(&fresh, &committed)?;
            eprintln!(
                "fuzz: {target}: {n} inputs of at most {max_len} bytes, {bytes} bytes in {}",
                committed.display()
            );
            return Ok(());
        }
        max_len /= 2;
    }
}

fn replace_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(to).with_context(|| format!("reading {}", to.display()))? {
        let path = entry?.path();
        if path.is_file() && path.file_name().is_some_and(|n| n != "README.md") {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

fn count(dir: &Path) -> (usize, u64) {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
        })
        .unwrap_or_default()
}

/// `cargo xtask test`'s phase after [`build`]: every target for an equal
/// share of [`TEST_BUDGET`].
pub fn run_all() -> anyhow::Result<()> {
    let targets = targets()?;
    let share = TEST_BUDGET / u32::try_from(targets.len().max(1)).unwrap_or(1);
    let mut failed = Vec::new();
    let mut ran = Vec::new();
    for t in &targets {
        match fuzz(t, share) {
            Ok(r) => ran.push((t, r)),
            Err(e) => {
                eprintln!("{e:#}");
                failed.push(t.as_str());
            }
        }
    }
    for (t, r) in &ran {
        eprintln!(
            "  fuzz {t:<20} {:>6.1} s {:>10} execs",
            r.took.as_secs_f64(),
            r.execs
        );
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

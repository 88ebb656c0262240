//! `cargo xtask test`: every check the project has, in one command.
//!
//! Order: lints first (cheapest, and a lint failure needs no test run),
//! then unprivileged tests (unit and golden tests, alert rules,
//! manifests), then what needs root: the capture smoke tests inside the
//! agent crate, and the real-kernel tests in the `tests` crate, which share
//! kernel state and so run on one thread. Each phase's duration is printed
//! at the end, also when a phase fails, so the suite's growth stays visible
//! (CI allows 90 minutes; a fresh machine should stay under 60).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, is_root, root},
    fuzz, setup,
};

#[derive(clap::Args)]
pub struct Options {
    /// Skip the tests that need root and a real kernel.
    #[arg(long)]
    no_kernel: bool,
    /// Only run kernel tests whose name contains this (lints, unit tests
    /// and smoke tests still run).
    #[arg(long)]
    filter: Option<String>,
    /// Skip the lint phase (rustfmt, clippy).
    #[arg(long)]
    no_lint: bool,
    /// Skip the fuzz phase (build and a short run of every target).
    #[arg(long)]
    no_fuzz: bool,
}

/// Phase names, how long each took, and the disk space left after it.
#[derive(Default)]
struct Phases(Vec<(&'static str, Duration, Option<f64>)>);

/// GiB free on the filesystem holding the target directory, so a run that
/// fills the disk shows which phase did it.
fn free_gib() -> Option<f64> {
    let path = std::ffi::CString::new(root().as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `statvfs` is plain data, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as f64) * (st.f_frsize as f64) / f64::from(1u32 << 30))
}

impl Phases {
    fn run(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        eprintln!("xtask: {name}");
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        let free = free_gib();
        self.0.push((name, took, free));
        eprintln!("xtask: {name}: {:.1} s", took.as_secs_f64());
        result.with_context(|| format!("phase `{name}` failed"))
    }

    fn print(&self) {
        let total: Duration = self.0.iter().map(|(_, d, _)| *d).sum();
        eprintln!("xtask: phase timings (and GiB of disk free after each)");
        for (name, took, free) in &self.0 {
            let free = free.map_or_else(|| "?".to_owned(), |f| format!("{f:.1}"));
            eprintln!("  {name:<44} {:>8.1} s {free:>8} GiB", took.as_secs_f64());
        }
        eprintln!("  {:<44} {:>8.1} s", "total", total.as_secs_f64());
    }
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !options.no_kernel && !is_root() {
        bail!(
            "the real-kernel tests need root (they load eBPF programs and make cgroups): \
             run `sudo -E cargo xtask test`, or `cargo xtask test --no-kernel` for the rest"
        );
    }
    if let Some(free) = free_gib() {
        eprintln!(
            "xtask: {free:.1} GiB free on the disk holding {}",
            root().display()
        );
        if free < 15.0 {
            eprintln!(
                "xtask: warning: a cold run writes about 8 GiB of build output; \
                 with less free it may fail for lack of space"
            );
        }
    }
    let mut phases = Phases::default();
    let result = phases_in_order(options, &mut phases);
    phases.print();
    result
}

fn phases_in_order(options: &Options, phases: &mut Phases) -> anyhow::Result<()> {
    phases.run("setup (toolchain, packages)", || {
        setup::toolchain()?;
        if is_root() {
            setup::packages(setup::ALL_PACKAGES)?;
        }
        Ok(())
    })?;
    if !options.no_lint {
        phases.run("lint: rustfmt --check (nightly)", rustfmt_check)?;
        phases.run("lint: clippy userspace (stable)", clippy_userspace)?;
        phases.run("lint: clippy agent-ebpf (nightly, bpfel)", clippy_kernel)?;
    }
    phases.run("unit and golden tests", || {
        cmd::cargo(
            &[
                "test",
                "--workspace",
                "--exclude",
                "tests",
                "--exclude",
                "agent-ebpf",
            ],
            false,
        )
    })?;
    if !options.no_fuzz {
        phases.run("fuzz: build targets (nightly, ASan)", fuzz::build)?;
        phases.run("fuzz: every target, 180 s in all", fuzz::run_all)?;
    }
    phases.run("alert rules (promtool)", alert_rules)?;
    phases.run(
        "deployment manifests (kubernetes-validate, checkov)",
        manifests,
    )?;
    if options.no_kernel {
        eprintln!("xtask: skipping the smoke and real-kernel tests (--no-kernel)");
        return Ok(());
    }
    phases.run("capture smoke tests (root)", smoke_root)?;
    phases.run(
        "capture smoke test (unprivileged, setpriv)",
        smoke_unprivileged,
    )?;
    // The image tests run the agent's image under podman: built once.
    if options
        .filter
        .as_deref()
        .is_none_or(|f| f.contains("image") || "image_".contains(f))
    {
        phases.run("agent image (podman)", || {
            crate::image::build(crate::image::IMAGE).map(|_| ())
        })?;
    }
    phases.run("real-kernel and end-to-end tests", || {
        // The end-to-end and canary tests run the real `rampwatch` binary.
        cmd::cargo(
            &["build", "--package", "agent", "--bin", "rampwatch"],
            false,
        )?;
        let mut args = vec!["test", "--package", "tests", "--"];
        if let Some(filter) = &options.filter {
            args.push(filter);
        }
        args.push("--test-threads=1");
        cmd::cargo(&args, false)
    })
}

/// `cargo fmt --check` with the nightly rustfmt: rustfmt.toml uses
/// unstable options (grouped imports) that stable rustfmt ignores.
fn rustfmt_check() -> anyhow::Result<()> {
    cmd::run(
        Command::new("rustup")
            .current_dir(root())
            .args(["run", "nightly", "cargo", "fmt", "--all", "--", "--check"]),
    )
    .context("code is not formatted: run `cargo +nightly fmt`")
}

/// Clippy on every userspace crate and target, features included (the
/// smoke tests and benchmarks are behind features), warnings as errors.
fn clippy_userspace() -> anyhow::Result<()> {
    cmd::run(
        Command::new(env!("CARGO"))
            .current_dir(root())
            // Linting needs no kernel object; skipping its build saves the
            // nightly compile here (the tests below build it).
            .env("AYA_BUILD_SKIP", "1")
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "agent-ebpf",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]),
    )
    .context("clippy found problems in the userspace crates")
}

/// Clippy on the kernel crate for the BPF target, invoked the way aya-build
/// invokes cargo to build it (nightly, `-Z build-std=core`, the
/// `bpf_target_arch` cfg), in its own target directory so it does not
/// invalidate the build's.
fn clippy_kernel() -> anyhow::Result<()> {
    let arch = std::env::consts::ARCH;
    cmd::run(
        Command::new("rustup")
            .current_dir(root())
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("--cfg=bpf_target_arch=\"{arch}\""),
            )
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--package",
                "agent-ebpf",
                "--bins",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(root().join("target/bpf-clippy"))
            .args(["--", "-D", "warnings"]),
    )
    .context("clippy found problems in the kernel crate (agent-ebpf)")
}

/// The `root_` smoke tests of `agent::capture::smoke` (they load the
/// kernel programs), one at a time.
fn smoke_root() -> anyhow::Result<()> {
    cmd::cargo(
        &[
            "test",
            "--package",
            "agent",
            "--features",
            "kernel-smoke",
            "--lib",
            "capture::smoke::root_",
            "--",
            "--test-threads=1",
        ],
        false,
    )
}

/// `capture::smoke::unprivileged_start_says_why` as user `nobody` with no
/// capabilities: the capture must refuse to start and say why.
fn smoke_unprivileged() -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "test",
            "--package",
            "agent",
            "--features",
            "kernel-smoke",
            "--lib",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("could not run cargo to build the agent's test binary")?;
    if !out.status.success() {
        bail!(
            "building the agent's test binary failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "agent")
        .find_map(|m| m["executable"].as_str().map(str::to_owned))
        .context("cargo did not name the agent's lib test binary")?;
    cmd::run(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(&binary)
            .args(["capture::smoke::unprivileged_start_says_why", "--exact"])
            // The binary's own directory may not be writable for `nobody`.
            .current_dir("/"),
    )
    .context("the unprivileged capture smoke test failed")
}

/// `promtool check rules` and `promtool test rules` on the shipped rules.
fn alert_rules() -> anyhow::Result<()> {
    cmd::run(Command::new("sh").arg(root().join("deploy/prometheus/test-rules.sh")))
        .context("the alert rules failed promtool's checks or unit tests")
}
/// Schema-checks the Kubernetes manifests, offline (the schemas ship with
/// the PyPI package).
fn manifests() -> anyhow::Result<()> {
    let validate = || {
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .args(crate::manifests::files()?)
            .status()
            .map_err(anyhow::Error::from)
    };
    if cmd::probe(Command::new("python3").args(["-m", "kubernetes_validate", "--version"]))
        .is_none()
    {
        cmd::run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "kubernetes-validate",
        ]))
        .context("could not install kubernetes-validate from PyPI")?;
    }
    let status = validate().context("could not run kubernetes-validate")?;
    if !status.success() {
        bail!("deploy/kubernetes does not validate against the Kubernetes schemas");
    }
    crate::manifests::checkov()
}

//! `cargo xtask test`: every test the project has, in one command.
//!
//! Order: cheap and unprivileged first (unit and golden tests, alert-rule
//! tests), then the real-kernel tests in the `tests` crate, which need root
//! and share kernel state, so they run on one thread.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, is_root, root},
    setup,
};

#[derive(clap::Args)]
pub struct Options {
    /// Skip the tests that need root and a real kernel.
    #[arg(long)]
    no_kernel: bool,
    /// Only run kernel tests whose name contains this.
    #[arg(long)]
    filter: Option<String>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !options.no_kernel && !is_root() {
        bail!(
            "the real-kernel tests need root (they load eBPF programs and make cgroups): \
             run `sudo -E cargo xtask test`, or `cargo xtask test --no-kernel` for the rest"
        );
    }
    setup::toolchain()?;
    if is_root() {
        setup::packages(setup::ALL_PACKAGES)?;
    }

    eprintln!("xtask: unit and golden tests");
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
    )?;

    eprintln!("xtask: alert rules (promtool)");
    alert_rules()?;

    eprintln!("xtask: deployment manifests (kubernetes-validate, checkov)");
    manifests()?;

    if options.no_kernel {
        eprintln!("xtask: skipping the real-kernel tests (--no-kernel)");
        return Ok(());
    }
    eprintln!("xtask: real-kernel and end-to-end tests");
    // The end-to-end and canary tests run the real `rampwatch` binary.
    cmd::cargo(
        &["build", "--package", "agent", "--bin", "rampwatch"],
        false,
    )?;
    // The image tests run the agent's image under podman: build it once.
    if options
        .filter
        .as_deref()
        .is_none_or(|f| f.contains("image") || "image_".contains(f))
    {
        crate::image::build(crate::image::IMAGE)?;
    }
    let mut args = vec!["test", "--package", "tests", "--"];
    if let Some(filter) = &options.filter {
        args.push(filter);
    }
    args.push("--test-threads=1");
    cmd::cargo(&args, false)
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

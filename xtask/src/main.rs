//! Project tasks: `cargo xtask setup | build | test | run | image | bench`.
//!
//! Every task does its own set-up, so the README's two commands work on a
//! fresh machine: `cargo xtask run -- agent --contract examples/contract.yaml`
//! and `cargo xtask test`.

mod bench;
mod bench_flows;
mod bench_overhead;
mod bench_replay;
mod cmd;
mod dated;
mod demo;
mod fuzz;
mod image;
mod manifests;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "rampwatch project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: the nightly rust-src,
    /// bpf-linker against the nightly toolchain's LLVM, and (with
    /// --packages) the Debian packages the tests use.
    Setup {
        /// Also install the Debian packages the tests and the demo use.
        #[arg(long)]
        packages: bool,
    },
    /// Build the whole workspace, kernel programs included.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit, golden, alert rules, real-kernel (as root).
    Test(test::Options),
    /// Build and run `rampwatch` with the given arguments (as root for
    /// `agent`). `run -- agent --contract examples/contract.yaml` also starts
    /// the local demo traffic.
    Run {
        /// Arguments for `rampwatch`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the agent's OCI image with podman, offline (`FROM scratch`).
    Image(image::Options),
    /// Regenerate deploy/kubernetes/prometheusrule.yaml from the alert rules.
    Manifests,
    /// Fuzz the parsers (cargo-fuzz, nightly): `--list`, or a target for
    /// `--seconds N`, or `--merge` its corpus.
    Fuzz(fuzz::Options),
    /// Benchmarks; they print figures and never fail on speed.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup { packages } => {
            setup::toolchain()?;
            if packages {
                setup::packages(setup::ALL_PACKAGES)?;
            }
            Ok(())
        }
        Task::Build { release } => {
            setup::toolchain()?;
            cmd::cargo(
                &["build", "--workspace", "--exclude", "agent-ebpf"],
                release,
            )
        }
        Task::Test(options) => test::run(&options),
        Task::Run { args } => run::run(&args),
        Task::Image(options) => image::run(&options),
        Task::Manifests => manifests::generate(),
        Task::Fuzz(options) => fuzz::run(&options),
        Task::Bench { which } => bench::run(which),
    }
}

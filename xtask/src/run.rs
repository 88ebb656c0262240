//! `cargo xtask run -- <rampwatch args>`.
//!
//! With `agent --contract examples/contract.yaml` it also starts the demo
//! servers and clients (see `demo.rs`) and says what to run to look.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, is_root, root},
    demo::Demo,
    setup,
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    setup::toolchain()?;
    let live = args.first().is_some_and(|a| a == "agent");
    if live && !is_root() {
        bail!(
            "the live agent loads eBPF programs: run `sudo -E cargo xtask run -- {}`",
            args.join(" ")
        );
    }
    let demo = live && args.iter().any(|a| a.ends_with("examples/contract.yaml"));
    if demo {
        setup::packages(&["curl", "openssl", "python3"])?;
    }
    cmd::cargo(
        &["build", "--package", "agent", "--bin", "rampwatch"],
        false,
    )?;
    let bin = root().join("target/debug/rampwatch");
    if !demo {
        return cmd::run(Command::new(bin).current_dir(root()).args(args));
    }

    // Ctrl-C reaches the whole foreground group: the agent stops itself; we
    // only have to outlive it to clean up the demo.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;

    let demo = Demo::start()?;
    // The example contract is written for one day; the demo runs a copy
    // dated so that today is that day (see `dated.rs`).
    let example = root().join("examples/contract.yaml");
    let text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let contract = demo.dir().join("contract.yaml");
    std::fs::write(&contract, crate::dated::shift(&text, crate::dated::now()))
        .with_context(|| format!("writing {}", contract.display()))?;
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("--contract=") && a.ends_with("examples/contract.yaml") {
                format!("--contract={}", contract.display())
            } else if a.ends_with("examples/contract.yaml") {
                contract.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    eprintln!(
        "xtask: the demo runs {} dated relative to today; edit that copy to try a hot reload",
        contract.display()
    );
    let mut agent = Command::new(&bin);
    agent.current_dir(root()).args(&args);
    if !args.iter().any(|a| a.starts_with("--audit-dir")) {
        // The demo's audit trail goes away with the demo.
        agent.arg("--audit-dir").arg(demo.dir().join("audit"));
    }
    let mut agent = agent
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let b = bin.display();
    eprintln!(
        "\nrampwatch is watching demo traffic on 127.0.0.1 (a compliant call and one of each \
         violation every 5 s, five of them inside TLS). In another terminal, as root:\n\
         \n  {b} violations          # what broke the contract, with severity\
         \n  {b} status              # which processes' OpenSSL the TLS probes read\
         \n  {b} clients             # rate, quota and headroom per client and endpoint\
         \n  {b} readiness           # what breaks if the next stage (ramp-10x) started now\
         \n  {b} flows               # what was seen: TLS versions, endpoints, clients\
         \n  {b} watch               # violations as they open and escalate\
         \n  curl -s 127.0.0.1:9464/metrics | grep ^rampwatch_\
         \n\nCtrl-C stops the agent and the demo and removes everything they made.\n"
    );
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = agent.try_wait().context("waiting for the agent")? {
            break status;
        }
        if interrupted.load(Ordering::Relaxed) && !forwarded {
            // A terminal's Ctrl-C reaches the agent too; a signal sent to
            // xtask alone must still stop it cleanly (it detaches on SIGINT).
            let _ = Command::new("kill")
                .args(["-INT", &agent.id().to_string()])
                .status();
            forwarded = true;
        }
        thread::sleep(Duration::from_millis(100));
    };
    drop(demo);
    if !status.success() && !interrupted.load(Ordering::Relaxed) {
        bail!("the agent exited with {status}");
    }
    Ok(())
}

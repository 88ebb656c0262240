//! `cargo xtask run -- <rampwatch args>`.

use std::process::Command;

use anyhow::bail;

use crate::{
    cmd::{self, is_root, root},
    setup,
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    setup::toolchain()?;
    let live = args.first().is_some_and(|a| a == "agent");
    if live && !is_root() {
        bail!("the live agent loads eBPF programs: run `sudo -E cargo xtask run -- {}`", args.join(" "));
    }
    cmd::cargo(&["build", "--package", "agent", "--bin", "rampwatch"], false)?;
    let bin = root().join("target/debug/rampwatch");
    cmd::run(Command::new(bin).current_dir(root()).args(args))
}

//! Running commands with their failures explained.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `cmd`, failing with the command line when it does not succeed.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output, or `None` when it cannot run
/// or fails (used for probes such as `bpf-linker --version`).
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo <args>` in the workspace root.
pub fn cargo(args: &[&str], release: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root()).args(args);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// True when running as root, which the kernel tests and the live agent need.
pub fn is_root() -> bool {
    probe(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

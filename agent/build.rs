//! Builds the kernel programs (`agent-ebpf`) with the nightly toolchain, so a
//! plain `cargo build` of the agent embeds a fresh object.
//!
//! With `AYA_BUILD_SKIP=1` (editors, `cargo check`, machines without
//! bpf-linker) an empty object is embedded instead; the agent then refuses to
//! start live capture and says to run `cargo xtask setup`. Replay and every
//! other command work either way.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("rampwatch");
    // A previous build's object would otherwise survive a skipped build.
    if object.exists() {
        fs::remove_file(&object).with_context(|| format!("removing {}", object.display()))?;
    }
    let root = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = PathBuf::from(root).join("../agent-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
    .context("building the kernel programs failed; run `cargo xtask setup` to install the nightly rust-src and bpf-linker, or set AYA_BUILD_SKIP=1 to build without them")?;
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}

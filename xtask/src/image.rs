//! `cargo xtask image`: an OCI image of the agent, built offline with podman.
//!
//! `FROM scratch` with only what the agent needs to run: the stripped
//! release binary, the dynamic loader and the few glibc libraries `ldd`
//! names (copied from this machine: only the glibc target is installed, and
//! a static glibc would still want NSS modules for the contract's host
//! names), `/etc/nsswitch.conf` so `getaddrinfo` reads `/etc/hosts` and DNS,
//! and `/etc/passwd`/`/etc/group` for `--socket-group`. No shell, no
//! package manager.
//!
//! Reproducible: every file is written with fixed modes and the mtime of
//! `SOURCE_DATE_EPOCH` (0 when unset), and podman is given the same
//! `--timestamp`, so the same tree and toolchain give the same image id.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, probe, root},
    setup,
};

/// The tag `cargo xtask image` gives, and the one the tests and the
/// DaemonSet use.
pub const IMAGE: &str = concat!("localhost/rampwatch:", env!("CARGO_PKG_VERSION"));

#[derive(clap::Args)]
pub struct Options {
    /// Image name and tag.
    #[arg(long, default_value = IMAGE)]
    tag: String,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let (id, size) = build(&options.tag)?;
    println!("{} {id} ({:.1} MB)", options.tag, size as f64 / 1e6);
    Ok(())
}

/// Builds the image; returns its id and size in bytes.
pub fn build(tag: &str) -> anyhow::Result<(String, u64)> {
    setup::toolchain()?;
    setup::packages(&["podman", "runc"])?;
    cmd::cargo(&["build", "--package", "agent", "--bin", "rampwatch"], true)?;
    let epoch: u64 = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse()
            .context("SOURCE_DATE_EPOCH must be a number of seconds")?,
        Err(_) => 0,
    };

    let work = root().join("target/image");
    let rootfs = work.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    fs::create_dir_all(&rootfs)?;
    let binary = root().join("target/release/rampwatch");
    cmd::run(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(rootfs.join("rampwatch"))
            .arg(&binary),
    )
    .context("could not strip the agent binary (binutils' strip)")?;
    for lib in shared_libraries(&binary)? {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().unwrap_or(&rootfs))?;
        // The file itself, not the symlink chain the host keeps.
        fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    fs::create_dir_all(rootfs.join("etc"))?;
    for (name, text) in [
        ("nsswitch.conf", "hosts: files dns\n"),
        (
            "passwd",
            "root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n",
        ),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        fs::write(rootfs.join("etc").join(name), text)?;
    }
    normalise(&rootfs)?;
    cmd::run(
        Command::new("touch")
            .args(["--no-dereference", &format!("--date=@{epoch}")])
            .args(walk(&rootfs)?),
    )?;

    let containerfile = work.join("Containerfile");
    fs::write(
        &containerfile,
        format!(
            "FROM scratch\n\
             COPY . /\n\
             LABEL org.opencontainers.image.title=rampwatch \
             org.opencontainers.image.version={version}\n\
             ENTRYPOINT [\"/rampwatch\"]\n\
             CMD [\"agent\", \"--help\"]\n",
            version = env!("CARGO_PKG_VERSION"),
        ),
    )?;
    cmd::run(
        Command::new("podman")
            .args(["build", "--quiet", "--pull=never", "--network=none"])
            .arg(format!("--timestamp={epoch}"))
            .arg("--file")
            .arg(&containerfile)
            .args(["--tag", tag])
            .arg(&rootfs),
    )
    .context("podman could not build the image")?;
    let inspect = probe(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Size}}",
        tag,
    ]))
    .context("podman built the image but cannot inspect it")?;
    let (id, size) = inspect
        .trim()
        .split_once(' ')
        .context("unexpected podman image inspect output")?;
    Ok((id.to_owned(), size.parse().unwrap_or(0)))
}

/// The loader and libraries `ldd` resolves for `binary` (not the vDSO).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = probe(Command::new("ldd").arg(binary)).context("could not run ldd on the agent")?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no path.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("ldd cannot find a library of the agent: {line}"),
            _ => {}
        }
    }
    if libs.is_empty() {
        bail!("ldd named no libraries; expected a dynamically linked agent");
    }
    libs.sort();
    Ok(libs)
}

/// Every path under `dir`, sorted, `dir` itself included.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let mut children: Vec<PathBuf> = fs::read_dir(&out[i])?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out.sort();
    Ok(out)
}

/// Directories and the executables 0755, other files 0644, whatever the
/// umask and the host's modes were.
fn normalise(rootfs: &Path) -> anyhow::Result<()> {
    for path in walk(rootfs)? {
        let exec = path.is_dir()
            || path
                .file_name()
                .is_some_and(|n| n == "rampwatch" || n.to_string_lossy().starts_with("ld-linux"));
        let mode = if exec { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

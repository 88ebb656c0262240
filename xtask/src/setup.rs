//! Idempotent installation of the build and test prerequisites.
//!
//! The kernel crate is built with the installed nightly toolchain and linked by
//! bpf-linker. bpf-linker 0.13 must link against an LLVM 22; rather than
//! install one, we point it at the LLVM library the nightly toolchain ships
//! (`lib/libLLVM.so.22.1-rust-<version>`) through a small prefix directory
//! holding the library links and an `llvm-config` that describes them.
//! Each step checks first, so a set-up machine pays a few probes only.

use std::{
    env, fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{probe, run};

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests, benchmarks and demo use.
pub const ALL_PACKAGES: &[&str] = &[
    "bpftool",
    "curl",
    "iproute2",
    "nghttp2-client",
    "nghttp2-server",
    "nginx",
    "openssl",
    "podman",
    "prometheus",
    "prometheus-alertmanager",
    // Debian's python3 (its ssl module links the system libssl): the TLS probe tests.
    "python3",
    // The gRPC live test's server and clients (tests/tests/grpc).
    "python3-grpcio",
    // PyJWT: the JWT tests mint real tokens with it.
    "python3-jwt",
    "runc",
    "tcpdump",
    "tshark",
    "wrk",
];

/// rust-src for nightly and a working bpf-linker.
pub fn toolchain() -> anyhow::Result<()> {
    let sysroot = probe(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context(
        "the nightly toolchain is missing: the kernel programs need it \
             (`rustup toolchain install nightly`), then run `cargo xtask setup` again",
    )?;
    let sysroot = PathBuf::from(sysroot.trim());

    let installed = probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    // rust-src builds the kernel crate; rustfmt (unstable options in
    // rustfmt.toml) and clippy (BPF target) lint with the nightly.
    for component in ["rust-src", "rustfmt", "clippy"] {
        if installed.lines().any(|l| l.starts_with(component)) {
            continue;
        }
        eprintln!("setup: adding {component} to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            component,
            "--toolchain",
            "nightly",
        ]))
        .with_context(|| {
            format!("could not add {component} to the nightly toolchain; the build and lint steps need it")
        })?;
    }

    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    // `--version` also fails when the LLVM library it was linked against moved
    // (a nightly update), which is exactly when it must be rebuilt.
    if probe(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.trim() == want) {
        return Ok(());
    }
    let prefix = llvm_prefix(&sysroot)?;
    eprintln!(
        "setup: building {want} against {} (about 90 s)",
        prefix.display()
    );
    run(Command::new(env!("CARGO"))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .env("LLVM_PREFIX", &prefix))
    .context("could not install bpf-linker; the kernel programs cannot be linked without it")?;
    Ok(())
}

/// Lays out `<cache>/llvm-<real name>/{lib,bin}` for the nightly's libLLVM.
fn llvm_prefix(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let lib_dir = sysroot.join("lib");
    let real = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so.22"))
        .with_context(|| {
            format!(
                "no libLLVM.so.22* in {}: bpf-linker {BPF_LINKER_VERSION} needs the LLVM 22 \
                 that the nightly toolchain ships",
                lib_dir.display()
            )
        })?;
    // "libLLVM.so.22.1-rust-1.97.0-nightly" → "22.1"
    let llvm_version = real
        .trim_start_matches("libLLVM.so.")
        .split('-')
        .next()
        .unwrap_or("22.1")
        .to_owned();

    let prefix = cache_dir().join(format!("llvm-{real}"));
    let (lib, bin) = (prefix.join("lib"), prefix.join("bin"));
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let target = lib_dir.join(&real);
    for link in [lib.join("libLLVM.so"), lib.join(&real)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    let p = prefix.display();
    let script = format!(
        r#"#!/bin/sh
# Describes the nightly toolchain's libLLVM to llvm-sys (written by cargo xtask setup).
for arg in "$@"; do
  case "$arg" in
    --version) echo {llvm_version}.0 ;;
    --prefix) echo {p} ;;
    --libdir) echo {p}/lib ;;
    --bindir) echo {p}/bin ;;
    --includedir) echo {p}/include ;;
    --shared-mode) echo shared ;;
    --libs) echo -lLLVM ;;
    --libnames) echo libLLVM.so ;;
    --cflags|--cxxflags) echo -I{p}/include ;;
    --ldflags) echo -L{p}/lib ;;
    --system-libs|--link-shared|--link-static) ;;
    --components) echo all ;;
    --targets-built) echo BPF X86 ;;
  esac
done
"#
    );
    let config = bin.join("llvm-config");
    fs::write(&config, script).with_context(|| format!("writing {}", config.display()))?;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", config.display()))?;
    Ok(prefix)
}

fn cache_dir() -> PathBuf {
    env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("rampwatch")
}

/// Installs the Debian packages of `wanted` that are missing.
pub fn packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| {
            probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if probe(Command::new("apt-get").arg("--version")).is_none() {
        bail!(
            "these packages are missing and there is no apt-get to install them: {}; install them and run again",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    // Keep package scripts from starting services (prometheus, nginx): tests
    // start their own on free ports. policy-rc.d is Debian's switch for that.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        fs::write(policy, "#!/bin/sh\nexit 101\n")
            .and_then(|()| fs::set_permissions(policy, fs::Permissions::from_mode(0o755)))
            .with_context(|| format!("writing {}", policy.display()))?;
    }
    let result = apt_install(&missing);
    if own_policy {
        let _ = fs::remove_file(policy);
    }
    result
}

fn apt_install(missing: &[&str]) -> anyhow::Result<()> {
    run(Command::new("apt-get")
        .args(["-q", "update"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update failed; check the package mirror, then run again")?;
    run(Command::new("apt-get")
        .args(["-q", "install", "-y", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("could not install {}", missing.join(" ")))?;
    Ok(())
}

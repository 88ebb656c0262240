//! Makes cargo rebuild the kernel programs when bpf-linker changes: a new
//! linker can change the object even when no source did.
use which::which;

fn main() {
    if let Ok(path) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

//! Real-kernel integration tests. Run as root, one at a time:
//! `cargo test -p tests -- --test-threads=1` (or `cargo xtask test`).

mod fixtures;

/// Path of the `rw-helper` binary built with this test.
pub fn rw_helper() -> &'static str {
    env!("CARGO_BIN_EXE_rw-helper")
}

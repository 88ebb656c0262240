//! Poll-with-deadline helpers: tests never sleep a fixed time and hope; they
//! wait for the condition they need and fail with what they were waiting for.

use std::time::{Duration, Instant};

/// Default deadline for anything that should happen "promptly" on loopback.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Poll `check` every few milliseconds until it returns `Some`, or panic after
/// `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Like [`wait_until`], with `explain`'s account of the state in the panic
/// message: for waits whose failure is rare and needs more than the
/// condition to understand.
pub fn wait_until_explained<T>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let mut check = check;
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_until`] for a boolean condition.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    wait_until(what, timeout, || check().then_some(()));
}

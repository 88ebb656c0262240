//! Contract hot reload: on SIGHUP and whenever the file's content changes.
//!
//! The file is polled by content hash rather than watched with inotify: in
//! Kubernetes a ConfigMap update swaps a symlink two levels up, which inotify
//! on the file misses, while a hash of what `read` returns is always right.
//! An invalid contract never replaces the last good one.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the watcher reports to the agent.
#[derive(Debug)]
pub enum Reload<T> {
    /// A new, valid contract; `sha256` is of the file's bytes.
    Loaded { contract: T, sha256: String },
    /// The file changed (or SIGHUP arrived) but does not load; the last good
    /// contract stays active.
    Rejected { errors: String, sha256: String },
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Polls `path` every `interval` and on each `hup` tick; sends a [`Reload`]
/// when the content differs from the last content seen (a SIGHUP forces a
/// reload even when it does not). `initial_sha256` is the hash of the
/// contract the agent started with.
pub async fn watch<T, E, F>(
    path: PathBuf,
    initial_sha256: String,
    interval: Duration,
    mut hup: mpsc::Receiver<()>,
    load: F,
    tx: mpsc::Sender<Reload<T>>,
    cancel: CancellationToken,
) where
    F: Fn(&Path, &[u8]) -> Result<T, E>,
    E: std::fmt::Display,
{
    let mut last = initial_sha256;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let forced = tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => false,
            Some(()) = hup.recv() => true,
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                // A ConfigMap swap can briefly hide the file: say it once per
                // change of state, keep the last good contract.
                let sha256 = format!("unreadable: {e}");
                if forced || sha256 != last {
                    last.clone_from(&sha256);
                    let errors = format!("cannot read {}: {e}", path.display());
                    if tx.send(Reload::Rejected { errors, sha256 }).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let sha256 = sha256_hex(&bytes);
        if !forced && sha256 == last {
            continue;
        }
        last.clone_from(&sha256);
        let msg = match load(&path, &bytes) {
            Ok(contract) => Reload::Loaded { contract, sha256 },
            Err(e) => Reload::Rejected {
                errors: e.to_string(),
                sha256,
            },
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(_: &Path, b: &[u8]) -> Result<String, String> {
        let s = String::from_utf8_lossy(b).into_owned();
        if s.starts_with("bad") {
            Err(format!("invalid: {s}"))
        } else {
            Ok(s)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reloads_on_change_rejects_bad_and_forces_on_hup() {
        let dir = std::env::temp_dir().join(format!("rw-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, "v1").unwrap();
        let (hup_tx, hup_rx) = mpsc::channel(1);
        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(
            path.clone(),
            sha256_hex(b"v1"),
            Duration::from_secs(1),
            hup_rx,
            parse,
            tx,
            cancel.clone(),
        ));
        // Unchanged content: nothing, even after many polls.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_err());

        std::fs::write(&path, "bad contract").unwrap();
        match rx.recv().await.unwrap() {
            Reload::Rejected { errors, .. } => assert!(errors.contains("invalid")),
            other => panic!("expected a rejection, got {other:?}"),
        }
        std::fs::write(&path, "v2").unwrap();
        match rx.recv().await.unwrap() {
            Reload::Loaded { contract, sha256 } => {
                assert_eq!(contract, "v2");
                assert_eq!(sha256, sha256_hex(b"v2"));
            }
            other => panic!("expected v2, got {other:?}"),
        }
        // SIGHUP reloads the same content again.
        hup_tx.send(()).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), Reload::Loaded { .. }));
        cancel.cancel();
        task.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The audit log's writer thread.
//!
//! Every record is fsynced before `append` returns; doing that on the
//! engine's task would stall packet processing, so records go through a
//! channel to one thread that owns the log. A record the log cannot take is
//! logged and counted (`audit_write_failed`), never silently dropped.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

use crate::sinks::audit::{AuditLog, AuditOptions, HmacKey, RecordKind};

pub struct AuditWriter {
    tx: Option<mpsc::Sender<RecordKind>>,
    thread: Option<thread::JoinHandle<()>>,
    pub failed: Arc<AtomicU64>,
}

impl AuditWriter {
    /// Opens the log in `dir` (recovering a torn tail) and starts the thread.
    pub fn open(dir: &Path, key_file: Option<&Path>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let key = key_file
            .map(HmacKey::from_file)
            .transpose()
            .context("the audit key file cannot be used")?;
        let (mut log, report) = AuditLog::open(dir, key, AuditOptions::default())
            .with_context(|| format!("cannot open the audit log in {}", dir.display()))?;
        for r in &report.recovered {
            tracing::warn!(
                found = %r.found,
                segment = %r.segment.display(),
                torn_bytes = r.torn_bytes,
                last_good_seq = r.last_good_seq,
                "the audit log ended in a torn record (a crash mid-write); it was moved aside and the chain continues with a recovery record"
            );
        }
        for w in &report.warnings {
            tracing::warn!("audit log: {w}");
        }
        let (tx, rx) = mpsc::channel::<RecordKind>();
        let failed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&failed);
        let thread = thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                for record in rx {
                    if let Err(e) = log.append(record) {
                        counter.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "writing the audit log failed; the record is lost");
                    }
                }
            })
            .context("cannot start the audit thread")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            failed,
        })
    }

    pub fn record(&self, record: RecordKind) {
        if let Some(tx) = &self.tx
            && tx.send(record).is_err()
        {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued and stops the thread.
    pub fn close(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! Where verdicts go: Prometheus metrics, the local API, the audit log.

pub mod api;
pub mod audit;
pub mod family;
pub mod metrics;

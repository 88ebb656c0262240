//! Sinks: where the engine's findings leave the process (audit log, metrics, local API).

pub mod audit;

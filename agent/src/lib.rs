//! rampwatch: checks API ramp contracts against live or captured traffic.
//!
//! The modules follow the pipeline a packet takes:
//! capture → decode → flow → protocol (tls, http) → identity → policy → sinks.
//! `docs/architecture.md` walks one packet through all of them.

pub mod capture;
pub mod cli;
pub mod contract;
pub mod decode;
pub mod event;
pub mod flow;
pub mod identity;
pub mod policy;
pub mod protocol;
pub mod replay;
pub mod runtime;
pub mod sinks;

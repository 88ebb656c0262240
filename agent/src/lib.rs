//! rampwatch: checks API ramp contracts against live or captured traffic.
//!
//! The modules follow the pipeline a packet takes:
//! capture (live) | pcap (files) → flow → protocol (tls, http) → identity → policy
//! → sinks; `cli` is what a person types and reads.
//! `docs/architecture.md` walks one packet through all of them.

pub mod capture;
pub mod cli;
pub mod contract;
pub mod event;
pub mod flow;
pub mod identity;
pub mod pcap;
pub mod policy;
pub mod protocol;
pub mod replay;
pub mod runtime;
pub mod sinks;

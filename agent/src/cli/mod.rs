//! Everything a person types and reads: the clap definitions (`args`), the
//! API client and its tables (`client`, `render`), and the offline commands
//! (`contract`: `contract check|diff|schema`, `fingerprint`; `diff`,
//! `diff_parties`, `diff_stages`: what `contract diff` compares; `report`,
//! `report_build`, `report_model`,
//! `report_md`: `rampwatch report` from audit logs). `main.rs` only
//! dispatches. The agent's side of the API (the socket server and the views
//! it serves) is `sinks::api`.

mod args;
pub mod client;
pub mod contract;
#[cfg(test)]
mod contract_tests;
pub mod diff;
mod diff_parties;
mod diff_stages;
#[cfg(test)]
mod diff_tests;
pub(crate) mod readiness;
mod render;
pub mod report;
mod report_build;
mod report_md;
mod report_model;
#[cfg(test)]
mod report_tests;

pub use args::*;

//! The local API: a unix socket the `rampwatch status|stage|clients|flows|
//! violations|watch` commands talk to.
//!
//! One JSON request line, one JSON response line (a stream for `watch`). The
//! socket is mode 0660, owned by root and an optional group; every peer's
//! credentials (SO_PEERCRED, plus its supplementary groups) are checked, and
//! anyone but root or that group is refused with a message saying why.

mod admission;
pub mod readiness;
mod server;
pub mod views;

pub use server::{
    AckCommand, ApiError, ApiServer, FlowsCommand, MAX_REQUEST_LINE, StateSource, answer,
    read_request,
};

/// Where the agent listens and the CLI connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/rampwatch/rampwatch.sock";

//! Passive HTTP/2 (RFC 9113) for one connection: frames and HPACK of both
//! directions, fed as in-order bytes, turned into requests and responses.
//!
//! Use: one [`H2Connection`] per flow once it speaks HTTP/2 -
//! [`H2Connection::new`] for prior knowledge (the client's bytes start with
//! the preface), [`H2Connection::after_upgrade`] after an HTTP/1.1
//! `Upgrade: h2c` request and its `101` (the client's bytes after the
//! request, the server's after the 101 head; stream 1 is the upgraded
//! request, already counted by HTTP/1). Then
//! `feed(dir, bytes, creds, out)` each direction's bytes in order,
//! `gap(dir, len, out)` when `len` bytes of a direction were lost (it may
//! emit the request whose header block the loss cut), and
//! `finish(creds, out)` at the end (a HEADERS frame or header block cut
//! short counts, like a partial HTTP/1 head). Events are appended to `out`;
//! counters ([`H2Stats`], for metrics) are in [`H2Connection::stats`],
//! heap use in [`H2Connection::buffered`].
//!
//! Requests: every HEADERS frame that opens a new client stream (an odd id
//! above every one before) is one [`H2Event::Request`], decoded or not.
//! HEADERS on a stream already open (trailers), PUSH_PROMISE and pushed
//! streams are not requests. Credential headers are hashed as their field
//! is decoded, with the same names and rule as HTTP/1
//! ([`CredentialHeaders`], [`crate::identity::credential_fingerprint`]);
//! `cookie` crumbs are joined with "; " first, as HTTP/1 sends them.
//!
//! Lost bytes: a gap inside a DATA (or other skipped) payload of known
//! length costs nothing. Any other gap breaks that direction's HPACK state
//! (counted once per break): header blocks are still looked at, and one
//! that decodes without the lost state (static table, literals, entries
//! inserted by the blocks read since the loss) gives exact fields, but the
//! others yield requests with empty method and path (responses without a
//! status) and `header_state_broken: true`. When the frame boundaries themselves
//! are lost, the reader scans for two consecutive plausible frame headers
//! and goes on from there (counted in `resyncs`).
//!
//! Bounds: a header block is kept up to [`H2Limits::max_header_block`]
//! bytes (past it the block is undecodable and the state broken), each
//! HPACK table up to [`H2Limits::max_table_size`], streams awaiting a
//! response up to [`H2Limits::max_streams`] (the oldest are forgotten).
//! DATA is never copied. Nothing panics on any input (see the tests).

mod conn;
mod fields;
mod frame;
mod hpack;
mod huffman;
mod rules;

pub use conn::H2Connection;

pub use crate::protocol::http::CredentialHeaders;
use crate::{event::Direction, protocol::http::Request};

/// Memory bounds of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Limits {
    /// Bytes of one header block (HEADERS or PUSH_PROMISE and its
    /// CONTINUATIONs) kept for decoding.
    pub max_header_block: usize,
    /// Largest HPACK dynamic table followed, per direction. A peer may
    /// announce more with SETTINGS_HEADER_TABLE_SIZE; the state breaks
    /// only if the encoder then grows its table past this.
    pub max_table_size: usize,
    /// Streams tracked while awaiting their response.
    pub max_streams: usize,
}

impl Default for H2Limits {
    fn default() -> Self {
        Self {
            max_header_block: 64 * 1024,
            max_table_size: 64 * 1024,
            max_streams: 1024,
        }
    }
}

/// What the connection said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// A client-opened stream: one request.
    Request {
        stream_id: u32,
        /// Method from `:method`, path from `:path` (for gRPC
        /// `/package.Service/Method`), host from `:authority` or `host`
        /// (normalised like HTTP/1's Host), credentials hashed. Empty method
        /// and path when `header_state_broken`.
        request: Request,
        /// `content-type: application/grpc*`.
        grpc: bool,
        /// The header block could not be decoded (lost bytes, a broken
        /// HPACK state, a malformed or oversized block): only the fact of
        /// the request is known.
        header_state_broken: bool,
    },
    /// The final (non-1xx) response head of a client stream. `status` is
    /// `None` when the server's header block could not be decoded.
    Response { stream_id: u32, status: Option<u16> },
    /// RST_STREAM from `from`.
    Reset {
        stream_id: u32,
        from: Direction,
        error_code: u32,
    },
    /// GOAWAY from `from`: streams above `last_stream_id` were not
    /// processed by its sender.
    GoAway {
        from: Direction,
        last_stream_id: u32,
        error_code: u32,
    },
}

/// Counters of one connection, for metrics (add them up across flows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    /// Frames read (both directions, while frame boundaries were known).
    pub frames: u64,
    /// Request events emitted (decoded or not).
    pub requests: u64,
    /// Response events emitted.
    pub responses: u64,
    /// Frames or header blocks breaking RFC 9113/7541 rules (bad lengths,
    /// padding, stream ids, interleaved CONTINUATION, a bad preface).
    pub malformed: u64,
    /// Calls to [`H2Connection::gap`] with a length above 0.
    pub gaps: u64,
    /// Times a direction's HPACK state became unknown.
    pub header_state_broken: u64,
    /// Times a broken HPACK state became known again (a table size update
    /// to 0).
    pub header_state_recovered: u64,
    /// Header blocks that could not be decoded (includes every block while
    /// broken that refers to unknown entries).
    pub undecodable_blocks: u64,
    /// Something past a limit: a header block, a frame above the peer's
    /// SETTINGS_MAX_FRAME_SIZE, a SETTINGS frame, an announced table size,
    /// or credential fields past the per-block cap.
    pub oversized: u64,
    /// Streams forgotten while awaiting a response ([`H2Limits::max_streams`]).
    pub streams_evicted: u64,
    /// Times frame boundaries were found again after being lost.
    pub resyncs: u64,
}

impl H2Stats {
    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Self) {
        let Self {
            frames,
            requests,
            responses,
            malformed,
            gaps,
            header_state_broken,
            header_state_recovered,
            undecodable_blocks,
            oversized,
            streams_evicted,
            resyncs,
        } = other;
        self.frames += frames;
        self.requests += requests;
        self.responses += responses;
        self.malformed += malformed;
        self.gaps += gaps;
        self.header_state_broken += header_state_broken;
        self.header_state_recovered += header_state_recovered;
        self.undecodable_blocks += undecodable_blocks;
        self.oversized += oversized;
        self.streams_evicted += streams_evicted;
        self.resyncs += resyncs;
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lossy;

//! Connection state: frames of both directions into events.

use std::collections::VecDeque;

use super::{
    H2Event, H2Limits, H2Stats,
    fields::{RequestFields, ResponseFields, unknown_request},
    frame::{
        self, DEFAULT_MAX_FRAME_SIZE, FrameHeader, FrameReader, GapEffect, KeepCaps, Kind,
        MAX_MAX_FRAME_SIZE, Step, flags,
    },
    hpack::HeaderDecoder,
};
use crate::{event::Direction, protocol::http::CredentialHeaders};

/// SETTINGS payload bytes looked at (a real one holds a handful of 6-byte
/// parameters).
const SETTINGS_KEEP: usize = 1024;
/// Room for padding length, padding, priority and promised stream id
/// around a header block fragment.
const FRAME_OVERHEAD: usize = 1 + 255 + 5 + 4;

/// SETTINGS parameters (RFC 9113 6.5.2) this parser uses.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// A header block being collected.
struct Block {
    stream: u32,
    push: bool,
    /// Header block fragments so far.
    bytes: Vec<u8>,
    /// Some of the block is missing (lost, oversized, malformed padding).
    lost: bool,
    /// The HEADERS frame opened a new client stream.
    new_request: bool,
    end_stream: bool,
}

/// One direction's reader and HPACK state.
struct Side {
    reader: FrameReader,
    hpack: HeaderDecoder,
    block: Option<Block>,
    /// SETTINGS_MAX_FRAME_SIZE the *other* side announced: the largest
    /// frame this side may send.
    max_frame: u32,
    /// Highest stream id seen in a frame from this side.
    max_stream: u32,
}

/// Passive HTTP/2 decoder for one connection. See the module docs.
pub struct H2Connection {
    limits: H2Limits,
    sides: [Side; 2],
    /// Highest client stream id opened.
    last_client_stream: u32,
    /// Client streams awaiting their final response, oldest first
    /// (ascending: client stream ids only grow).
    awaiting: VecDeque<u32>,
    stats: H2Stats,
}

impl std::fmt::Debug for H2Connection {
    // Counters only: the HPACK tables hold header values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Connection")
            .field("last_client_stream", &self.last_client_stream)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl H2Connection {
    /// A prior-knowledge connection: the client's bytes start with the
    /// preface, the server's with its SETTINGS.
    pub fn new(limits: H2Limits) -> Self {
        let caps = KeepCaps {
            header_frame: limits.max_header_block.saturating_add(FRAME_OVERHEAD),
            settings: SETTINGS_KEEP,
        };
        let side = |from_client| Side {
            reader: FrameReader::new(from_client, from_client, caps),
            hpack: HeaderDecoder::new(limits.max_table_size),
            block: None,
            max_frame: DEFAULT_MAX_FRAME_SIZE,
            max_stream: 0,
        };
        Self {
            limits,
            sides: [side(true), side(false)],
            last_client_stream: 0,
            awaiting: VecDeque::new(),
            stats: H2Stats::default(),
        }
    }

    /// After `Upgrade: h2c` and `101 Switching Protocols`: feed the client's
    /// bytes after its HTTP/1.1 request (they start with the preface) and
    /// the server's after the 101 head. Stream 1 is the upgraded request:
    /// not reported again, but its response is.
    pub fn after_upgrade(limits: H2Limits) -> Self {
        let mut conn = Self::new(limits);
        conn.last_client_stream = 1;
        conn.sides[0].max_stream = 1;
        conn.awaiting.push_back(1);
        conn
    }

    pub fn stats(&self) -> &H2Stats {
        &self.stats
    }

    /// Heap bytes held by buffers (HPACK tables not included: each is at
    /// most [`H2Limits::max_table_size`] plus per-entry overhead).
    pub fn buffered(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.reader.buffered() + s.block.as_ref().map_or(0, |b| b.bytes.capacity()))
            .sum::<usize>()
            + self.awaiting.capacity() * 4
    }

    /// Whether `dir`'s HPACK state is unknown.
    pub fn header_state_broken(&self, dir: Direction) -> bool {
        self.sides[dir.index()].hpack.is_broken()
    }

    /// The next in-order bytes of `dir`.
    pub fn feed(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        creds: &CredentialHeaders,
        out: &mut Vec<H2Event>,
    ) {
        let i = dir.index();
        let mut input = bytes;
        loop {
            let side = &mut self.sides[i];
            let (max_len, max_stream) = (side.max_frame, side.max_stream);
            match side.reader.next(&mut input, max_len, max_stream) {
                Step::NeedMore => return,
                Step::Frame { header, complete } => {
                    // The reader's buffer is lent to `on_frame` and put back.
                    let payload = self.sides[i].reader.take_payload();
                    self.on_frame(dir, header, &payload, complete, creds, out);
                    self.sides[i].reader.restore_payload(payload);
                }
                Step::BadPreface => {
                    self.stats.malformed += 1;
                    self.lose_sync(dir, out);
                }
                Step::Resynced => {
                    // The bytes from the boundary on go through again (a
                    // reader in sync never rescans, so this recurses once).
                    self.stats.resyncs += 1;
                    let mut held = self.sides[i].reader.take_resynced();
                    held.extend_from_slice(input);
                    self.feed(dir, &held, creds, out);
                    return;
                }
            }
        }
    }

    /// `len` bytes of `dir` were lost (a hole in reassembly, a truncated
    /// capture).
    pub fn gap(&mut self, dir: Direction, len: u64, out: &mut Vec<H2Event>) {
        if len == 0 {
            return;
        }
        self.stats.gaps += 1;
        let i = dir.index();
        match self.sides[i].reader.gap(len) {
            GapEffect::Harmless => {}
            // A lost SETTINGS/RST/GOAWAY payload is dropped when the frame
            // arrives incomplete.
            GapEffect::PayloadLost {
                header_block: false,
            } => {}
            GapEffect::PayloadLost { header_block: true } => {
                // The block is lost and with it the HPACK state.
                if let Some(block) = &mut self.sides[i].block {
                    block.lost = true;
                }
                self.break_state(dir);
            }
            GapEffect::SyncLost => self.lose_sync(dir, out),
        }
    }

    /// The connection ended: a HEADERS frame cut short, or a header block
    /// still waiting for its CONTINUATION, counts as it stands (like a
    /// partial HTTP/1 head).
    pub fn finish(&mut self, creds: &CredentialHeaders, out: &mut Vec<H2Event>) {
        for dir in [Direction::ToServer, Direction::ToClient] {
            // A payload whose last bytes were lost to a gap is finished.
            self.feed(dir, &[], creds, out);
            if let Some(header) = self.sides[dir.index()].reader.abort() {
                let payload = self.sides[dir.index()].reader.take_payload();
                self.on_frame(dir, header, &payload, false, creds, out);
            }
            if let Some(mut block) = self.sides[dir.index()].block.take() {
                block.lost = true;
                self.finish_block(dir, block, creds, out);
            }
        }
    }

    fn break_state(&mut self, dir: Direction) {
        if self.sides[dir.index()].hpack.break_state() {
            self.stats.header_state_broken += 1;
        }
    }

    /// Frame boundaries of `dir` are gone: so is its HPACK state, and a
    /// block being collected counts as it stands.
    fn lose_sync(&mut self, dir: Direction, out: &mut Vec<H2Event>) {
        self.break_state(dir);
        if let Some(mut block) = self.sides[dir.index()].block.take() {
            block.lost = true;
            // No fields are decoded from a lost block: the credential list
            // is not needed.
            self.finish_block(dir, block, &CredentialHeaders::STANDARD, out);
        }
    }

    fn on_frame(
        &mut self,
        dir: Direction,
        h: FrameHeader,
        payload: &[u8],
        complete: bool,
        creds: &CredentialHeaders,
        out: &mut Vec<H2Event>,
    ) {
        let i = dir.index();
        let from_client = dir == Direction::ToServer;
        self.stats.frames += 1;
        if h.len > self.sides[i].max_frame {
            // FRAME_SIZE_ERROR for the receiver; the length still frames it.
            self.stats.oversized += 1;
        }
        if h.violates_frame_rules() {
            self.stats.malformed += 1;
        }
        // Stream ids near the highest seen are what a scan accepts; a
        // client only opens odd ones.
        if !from_client || h.stream % 2 == 1 {
            let side = &mut self.sides[i];
            side.max_stream = side.max_stream.max(h.stream);
        }
        // Only CONTINUATION of the same stream may follow an unfinished
        // header block (RFC 9113 6.10).
        if let Some(block) = &self.sides[i].block
            && (h.kind != Kind::Continuation || h.stream != block.stream)
        {
            self.stats.malformed += 1;
            if let Some(mut block) = self.sides[i].block.take() {
                block.lost = true;
                self.finish_block(dir, block, creds, out);
            }
            if h.kind == Kind::Continuation {
                return;
            }
        }
        match h.kind {
            Kind::Headers | Kind::PushPromise => {
                self.start_block(dir, h, payload, complete, creds, out)
            }
            Kind::Continuation => {
                let Some(block) = &mut self.sides[i].block else {
                    self.stats.malformed += 1;
                    return;
                };
                if !complete {
                    block.lost = true;
                }
                if !block.lost {
                    if block.bytes.len() + payload.len() > self.limits.max_header_block {
                        self.stats.oversized += 1;
                        block.lost = true;
                        block.bytes = Vec::new();
                    } else {
                        block.bytes.extend_from_slice(payload);
                    }
                }
                if h.has(flags::END_HEADERS)
                    && let Some(block) = self.sides[i].block.take()
                {
                    self.finish_block(dir, block, creds, out);
                }
            }
            Kind::Data => {
                if !from_client && h.has(flags::END_STREAM) {
                    // A response body ended without a HEADERS we could read.
                    self.forget_stream(h.stream);
                }
            }
            Kind::RstStream => {
                if let Ok(code) = <[u8; 4]>::try_from(payload)
                    && h.stream != 0
                    && h.len == 4
                {
                    if !from_client {
                        // The server will not answer. A client's reset may
                        // cross a response already on its way: that one
                        // still counts.
                        self.forget_stream(h.stream);
                    }
                    out.push(H2Event::Reset {
                        stream_id: h.stream,
                        from: dir,
                        error_code: u32::from_be_bytes(code),
                    });
                }
            }
            Kind::GoAway => {
                if let Some(&[l0, l1, l2, l3, c0, c1, c2, c3]) = payload.first_chunk::<8>()
                    && h.stream == 0
                {
                    let last_stream_id = u32::from_be_bytes([l0, l1, l2, l3]) & 0x7fff_ffff;
                    let code = [c0, c1, c2, c3];
                    if !from_client {
                        // Streams above it will get no response.
                        while self.awaiting.back().is_some_and(|&s| s > last_stream_id) {
                            self.awaiting.pop_back();
                        }
                    }
                    out.push(H2Event::GoAway {
                        from: dir,
                        last_stream_id,
                        error_code: u32::from_be_bytes(code),
                    });
                }
            }
            Kind::Settings => self.settings(dir, h, payload),
            Kind::Priority | Kind::Ping | Kind::WindowUpdate | Kind::Unknown(_) => {}
        }
    }

    fn settings(&mut self, dir: Direction, h: FrameHeader, payload: &[u8]) {
        if h.has(flags::ACK) || h.violates_frame_rules() {
            return;
        }
        if h.len as usize > SETTINGS_KEEP {
            self.stats.oversized += 1;
        }
        // These settings bind what the other side sends.
        let other = 1 - dir.index();
        for p in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([p[0], p[1]]);
            let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
            match id {
                SETTINGS_HEADER_TABLE_SIZE if value as usize > self.limits.max_table_size => {
                    // The other side's encoder may now grow its table past
                    // what is followed; decoding fails only if it does.
                    self.stats.oversized += 1;
                }
                SETTINGS_MAX_FRAME_SIZE
                    if (DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
                {
                    self.sides[other].max_frame = value;
                }
                SETTINGS_MAX_FRAME_SIZE => self.stats.malformed += 1,
                _ => {}
            }
        }
    }

    fn start_block(
        &mut self,
        dir: Direction,
        h: FrameHeader,
        payload: &[u8],
        complete: bool,
        creds: &CredentialHeaders,
        out: &mut Vec<H2Event>,
    ) {
        let from_client = dir == Direction::ToServer;
        let push = h.kind == Kind::PushPromise;
        if push && from_client {
            // Only servers push; the block is not the client's HPACK state.
            self.stats.malformed += 1;
            return;
        }
        let mut new_request = false;
        if from_client && !push {
            if h.stream.is_multiple_of(2) {
                self.stats.malformed += 1;
            } else if h.stream > self.last_client_stream {
                new_request = true;
                self.last_client_stream = h.stream;
            }
        }
        let mut block = Block {
            stream: h.stream,
            push,
            bytes: Vec::new(),
            lost: !complete,
            new_request,
            end_stream: h.has(flags::END_STREAM),
        };
        if complete {
            match frame::header_block_fragment(&h, payload) {
                Some(fragment) if fragment.len() <= self.limits.max_header_block => {
                    block.bytes.extend_from_slice(fragment);
                }
                Some(_) => {
                    self.stats.oversized += 1;
                    block.lost = true;
                }
                None => {
                    self.stats.malformed += 1;
                    block.lost = true;
                }
            }
        } else if h.len as usize > self.limits.max_header_block {
            self.stats.oversized += 1;
        }
        if h.has(flags::END_HEADERS) {
            self.finish_block(dir, block, creds, out);
        } else {
            self.sides[dir.index()].block = Some(block);
        }
    }

    /// A header block is complete (or given up): decode it and report.
    fn finish_block(
        &mut self,
        dir: Direction,
        block: Block,
        creds: &CredentialHeaders,
        out: &mut Vec<H2Event>,
    ) {
        if block.lost {
            self.break_state(dir);
            self.stats.undecodable_blocks += 1;
        }
        if dir == Direction::ToServer {
            self.client_block(block, creds, out);
        } else {
            self.server_block(block, out);
        }
    }

    fn client_block(&mut self, block: Block, creds: &CredentialHeaders, out: &mut Vec<H2Event>) {
        let mut fields = RequestFields::new(creds);
        let decoded = !block.lost
            && self.decode(Direction::ToServer, &block.bytes, |n, v| fields.field(n, v));
        if fields.dropped {
            self.stats.oversized += 1;
        }
        if !block.new_request {
            return;
        }
        let (request, grpc) = if decoded {
            fields.finish()
        } else {
            (unknown_request(), false)
        };
        self.stats.requests += 1;
        self.await_response(block.stream);
        out.push(H2Event::Request {
            stream_id: block.stream,
            request,
            grpc,
            header_state_broken: !decoded,
        });
    }

    fn server_block(&mut self, block: Block, out: &mut Vec<H2Event>) {
        let mut fields = ResponseFields::default();
        let decoded = !block.lost
            && self.decode(Direction::ToClient, &block.bytes, |n, v| fields.field(n, v));
        if block.push || block.stream.is_multiple_of(2) {
            return;
        }
        let Ok(at) = self.awaiting.binary_search(&block.stream) else {
            // Trailers, a stream forgotten, or one never opened.
            return;
        };
        let status = if decoded { fields.status } else { None };
        if status.is_some_and(|s| (100..200).contains(&s)) && !block.end_stream {
            // Informational: the final response follows.
            return;
        }
        self.awaiting.remove(at);
        self.stats.responses += 1;
        out.push(H2Event::Response {
            stream_id: block.stream,
            status,
        });
    }

    /// Decodes a block with `dir`'s HPACK state; counts what went wrong.
    fn decode(&mut self, dir: Direction, bytes: &[u8], field: impl FnMut(&[u8], &[u8])) -> bool {
        let hpack = &mut self.sides[dir.index()].hpack;
        let was_broken = hpack.is_broken();
        match hpack.decode(bytes, field) {
            Ok(recovered) => {
                if recovered {
                    self.stats.header_state_recovered += 1;
                }
                true
            }
            Err(_) => {
                self.stats.undecodable_blocks += 1;
                if !was_broken {
                    self.stats.malformed += 1;
                    self.stats.header_state_broken += 1;
                }
                false
            }
        }
    }

    fn await_response(&mut self, stream: u32) {
        if self.awaiting.len() >= self.limits.max_streams.max(1) {
            self.awaiting.pop_front();
            self.stats.streams_evicted += 1;
        }
        self.awaiting.push_back(stream);
    }

    fn forget_stream(&mut self, stream: u32) {
        if let Ok(at) = self.awaiting.binary_search(&stream) {
            self.awaiting.remove(at);
        }
    }
}

//! HTTP/2 frame headers (RFC 9113 section 4) and the per-direction reader
//! that cuts one direction's in-order bytes into frames.
//!
//! The reader keeps only what the connection needs from each frame: header
//! block frames whole (up to a cap), the first bytes of RST_STREAM and
//! GOAWAY, SETTINGS up to a cap; DATA and everything else are skipped by
//! length without being copied. When bytes are lost it keeps its place if
//! the loss falls inside a payload of known length, and otherwise scans for
//! two consecutive plausible frame headers to find the frame boundaries
//! again.

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE until a peer announces another (RFC 9113 6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Largest SETTINGS_MAX_FRAME_SIZE a peer may announce.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// Longest frame a scan for lost boundaries accepts as the first one found:
/// it holds that many bytes waiting for the next header to confirm it.
const SCAN_MAX_LEN: u32 = 64 * 1024;
/// Payload buffer capacity kept between frames.
const KEEP_CAPACITY: usize = 4096;
/// The client connection preface.
pub const PREFACE: &[u8] = crate::protocol::http::H2_PREFACE;

/// Frame flags (RFC 9113 section 6).
pub mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Frame types (RFC 9113 section 6); other types are extensions, ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    Unknown(u8),
}

impl Kind {
    const fn from_u8(t: u8) -> Self {
        match t {
            0 => Self::Data,
            1 => Self::Headers,
            2 => Self::Priority,
            3 => Self::RstStream,
            4 => Self::Settings,
            5 => Self::PushPromise,
            6 => Self::Ping,
            7 => Self::GoAway,
            8 => Self::WindowUpdate,
            9 => Self::Continuation,
            other => Self::Unknown(other),
        }
    }

    /// Flags this type defines; others must be ignored by a receiver, but a
    /// frame header found by scanning that sets them is most likely not one.
    const fn defined_flags(self) -> u8 {
        match self {
            Self::Data => flags::END_STREAM | flags::PADDED,
            Self::Headers => {
                flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY
            }
            Self::PushPromise => flags::END_HEADERS | flags::PADDED,
            Self::Continuation => flags::END_HEADERS,
            Self::Settings | Self::Ping => flags::ACK,
            Self::Priority
            | Self::RstStream
            | Self::GoAway
            | Self::WindowUpdate
            | Self::Unknown(_) => 0,
        }
    }

    /// Carries (part of) a header block.
    pub const fn is_header_block(self) -> bool {
        matches!(self, Self::Headers | Self::PushPromise | Self::Continuation)
    }
}

/// One frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    pub kind: Kind,
    pub flags: u8,
    /// Stream identifier, reserved bit cleared.
    pub stream: u32,
    /// The reserved bit was set (must be ignored; a scan treats it as noise).
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let [l0, l1, l2, t, f, s0, s1, s2, s3] = *b;
        let stream = u32::from_be_bytes([s0, s1, s2, s3]);
        Self {
            len: u32::from_be_bytes([0, l0, l1, l2]),
            kind: Kind::from_u8(t),
            flags: f,
            stream: stream & 0x7fff_ffff,
            reserved: stream & 0x8000_0000 != 0,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The fixed-size and stream rules of RFC 9113 section 6 that make a
    /// frame malformed whatever the connection state.
    pub fn violates_frame_rules(&self) -> bool {
        let len = self.len;
        match self.kind {
            Kind::Data | Kind::Headers | Kind::PushPromise | Kind::Continuation => self.stream == 0,
            Kind::Priority => self.stream == 0 || len != 5,
            Kind::RstStream => self.stream == 0 || len != 4,
            Kind::Settings => {
                self.stream != 0 || !len.is_multiple_of(6) || (self.has(flags::ACK) && len != 0)
            }
            Kind::Ping => self.stream != 0 || len != 8,
            Kind::GoAway => self.stream != 0 || len < 8,
            Kind::WindowUpdate => len != 4,
            Kind::Unknown(_) => false,
        }
    }

    /// Could this be a real frame header found by scanning lost bytes?
    /// Stricter than what a receiver accepts: known types only, only
    /// defined flags, no reserved bit, a length the receiver allows, and a
    /// stream id near the ones seen. `from_client` adds the direction's
    /// rules (clients open odd streams, only servers push).
    pub fn plausible(&self, max_len: u32, max_stream: u32, from_client: bool) -> bool {
        if self.reserved
            || matches!(self.kind, Kind::Unknown(_))
            || self.flags & !self.kind.defined_flags() != 0
            || self.len > max_len
            || self.violates_frame_rules()
            || self.stream > max_stream
        {
            return false;
        }
        match self.kind {
            Kind::Headers if from_client => self.stream % 2 == 1,
            Kind::PushPromise => !from_client,
            _ => true,
        }
    }
}

/// The header block fragment inside a HEADERS or PUSH_PROMISE payload:
/// padding, priority fields and the promised stream id removed. `None` when
/// the padding is longer than the payload (a PROTOCOL_ERROR).
pub fn header_block_fragment<'a>(h: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut rest = payload;
    let mut pad = 0usize;
    if h.has(flags::PADDED) {
        let (&p, after) = rest.split_first()?;
        pad = usize::from(p);
        rest = after;
    }
    let skip = match h.kind {
        Kind::Headers if h.has(flags::PRIORITY) => 5,
        Kind::PushPromise => 4,
        _ => 0,
    };
    let rest = rest.get(skip..)?;
    rest.get(..rest.len().checked_sub(pad)?)
}

/// Where the reader is in its direction's byte stream.
#[derive(Debug)]
enum State {
    /// Matching the client preface; `matched` bytes of it seen.
    Preface { matched: usize },
    /// Collecting a frame header.
    Header { buf: [u8; HEADER_LEN], have: usize },
    /// Inside a payload: `remaining` bytes to go, of which the first
    /// `keep - kept` are copied.
    Payload {
        header: FrameHeader,
        remaining: u32,
        keep: usize,
        /// Bytes of the payload lost to a gap or not kept.
        incomplete: bool,
    },
    /// Frame boundaries unknown: scanning for them.
    Lost,
}

/// What a gap did to the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapEffect {
    /// The lost bytes were inside a payload that is skipped anyway.
    Harmless,
    /// The lost bytes were inside the payload of a frame whose content
    /// matters (the frame is delivered with `complete: false`);
    /// `header_block` for HEADERS, PUSH_PROMISE and CONTINUATION.
    PayloadLost { header_block: bool },
    /// Frame boundaries are lost; the reader scans for them.
    SyncLost,
}

/// Outcome of one step of [`FrameReader::next`].
#[derive(Debug)]
pub enum Step {
    /// A frame is finished; its kept payload start is
    /// [`FrameReader::take_payload`]. `complete`: every payload byte was
    /// seen and kept.
    Frame { header: FrameHeader, complete: bool },
    /// All input consumed.
    NeedMore,
    /// Scanning found frame boundaries again (counted by the caller).
    Resynced,
    /// The client preface did not match: the stream is scanned instead.
    BadPreface,
}

/// Caps on what the reader copies.
#[derive(Clone, Copy, Debug)]
pub struct KeepCaps {
    /// Payload bytes kept of one header block frame.
    pub header_frame: usize,
    /// Payload bytes kept of one SETTINGS frame.
    pub settings: usize,
}

/// Cuts one direction's bytes into frames. Not `Debug`: its buffers hold
/// header blocks, raw credential values included.
pub struct FrameReader {
    state: State,
    caps: KeepCaps,
    /// The kept payload of the current frame.
    payload: Vec<u8>,
    /// Bytes held while scanning for frame boundaries.
    scan: Vec<u8>,
    /// First offset in `scan` not yet ruled out.
    scan_from: usize,
    /// Bytes lost or scanned since boundaries were lost (widens the stream
    /// ids a found header may carry).
    lost_bytes: u64,
    from_client: bool,
}

impl FrameReader {
    /// A reader for the client's direction starts at the preface
    /// (`expect_preface`), the server's at its first frame.
    pub fn new(from_client: bool, expect_preface: bool, caps: KeepCaps) -> Self {
        Self {
            state: if expect_preface {
                State::Preface { matched: 0 }
            } else {
                State::Header {
                    buf: [0; HEADER_LEN],
                    have: 0,
                }
            },
            caps,
            payload: Vec::new(),
            scan: Vec::new(),
            scan_from: 0,
            lost_bytes: 0,
            from_client,
        }
    }

    /// Heap bytes held.
    pub fn buffered(&self) -> usize {
        self.payload.capacity() + self.scan.capacity()
    }

    fn keep_for(&self, h: &FrameHeader) -> usize {
        let cap = match h.kind {
            k if k.is_header_block() => self.caps.header_frame,
            Kind::Settings => self.caps.settings,
            Kind::RstStream => 4,
            Kind::GoAway => 8,
            _ => 0,
        };
        cap.min(h.len as usize)
    }

    /// Takes bytes from `input` until a frame is finished or `input` is
    /// used up. `max_len` and `max_stream` bound what a scan accepts as a
    /// frame header (see [`FrameHeader::plausible`]).
    pub fn next(&mut self, input: &mut &[u8], max_len: u32, max_stream: u32) -> Step {
        loop {
            match &mut self.state {
                State::Preface { matched } => {
                    let want = &PREFACE[*matched..];
                    let n = want.len().min(input.len());
                    if input[..n] != want[..n] {
                        self.state = State::Lost;
                        return Step::BadPreface;
                    }
                    *matched += n;
                    *input = &input[n..];
                    if *matched == PREFACE.len() {
                        self.state = State::Header {
                            buf: [0; HEADER_LEN],
                            have: 0,
                        };
                    } else {
                        return Step::NeedMore;
                    }
                }
                State::Header { buf, have } => {
                    let n = (HEADER_LEN - *have).min(input.len());
                    buf[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    *input = &input[n..];
                    if *have < HEADER_LEN {
                        return Step::NeedMore;
                    }
                    let header = FrameHeader::parse(buf);
                    let keep = self.keep_for(&header);
                    self.payload.clear();
                    // Exactly what will be kept: no doubling past the cap.
                    self.payload.reserve_exact(keep);
                    self.state = State::Payload {
                        header,
                        remaining: header.len,
                        keep,
                        incomplete: false,
                    };
                }
                State::Payload {
                    header,
                    remaining,
                    keep,
                    incomplete,
                } => {
                    let n = (*remaining as usize).min(input.len());
                    let copy = keep.saturating_sub(self.payload.len()).min(n);
                    self.payload.extend_from_slice(&input[..copy]);
                    *input = &input[n..];
                    // `n <= remaining`, a u32.
                    *remaining -= n as u32;
                    if *remaining > 0 {
                        return Step::NeedMore;
                    }
                    let header = *header;
                    let complete = !*incomplete && self.payload.len() == header.len as usize;
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                    return Step::Frame { header, complete };
                }
                State::Lost => {
                    let max_stream = max_stream.saturating_add(
                        u32::try_from(self.lost_bytes / HEADER_LEN as u64 + 1024)
                            .unwrap_or(u32::MAX)
                            .saturating_mul(2),
                    );
                    self.lost_bytes = self.lost_bytes.saturating_add(input.len() as u64);
                    self.scan.extend_from_slice(input);
                    *input = &[];
                    match self.find_boundary(max_len.min(SCAN_MAX_LEN), max_stream) {
                        Some(at) => {
                            let rest = self.scan.split_off(at);
                            self.scan = Vec::new();
                            self.scan_from = 0;
                            self.lost_bytes = 0;
                            self.state = State::Header {
                                buf: [0; HEADER_LEN],
                                have: 0,
                            };
                            // The bytes after the boundary are fed again by
                            // the caller.
                            self.payload = rest;
                            return Step::Resynced;
                        }
                        None => return Step::NeedMore,
                    }
                }
            }
        }
    }

    /// The input ended inside a frame's payload: the frame's header, its
    /// kept start left in [`FrameReader::take_payload`]. The reader is done
    /// with that frame.
    pub fn abort(&mut self) -> Option<FrameHeader> {
        let State::Payload { header, .. } = self.state else {
            return None;
        };
        self.state = State::Lost;
        Some(header)
    }

    /// The kept payload of the frame [`Step::Frame`] finished; hand it
    /// back with [`FrameReader::restore_payload`] to reuse its allocation.
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    pub fn restore_payload(&mut self, mut payload: Vec<u8>) {
        // One large header block must not pin its buffer for the rest of
        // the connection.
        if payload.capacity() <= KEEP_CAPACITY {
            payload.clear();
            self.payload = payload;
        }
    }

    /// After [`Step::Resynced`]: the buffered bytes from the boundary on,
    /// to feed through [`FrameReader::next`] again.
    pub fn take_resynced(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// Scans `scan` for a plausible frame header followed by another.
    fn find_boundary(&mut self, max_len: u32, max_stream: u32) -> Option<usize> {
        let from_client = self.from_client;
        let header_at = |buf: &[u8], i: usize| -> Option<FrameHeader> {
            let b: &[u8; HEADER_LEN] = buf.get(i..i + HEADER_LEN)?.try_into().ok()?;
            Some(FrameHeader::parse(b))
        };
        let mut i = self.scan_from;
        while let Some(h) = header_at(&self.scan, i) {
            // A CONTINUATION cannot start a resumed stream: its block's
            // start is gone.
            if h.kind != Kind::Continuation && h.plausible(max_len, max_stream, from_client) {
                let next = i + HEADER_LEN + h.len as usize;
                match header_at(&self.scan, next) {
                    Some(n) if n.plausible(max_len, max_stream, from_client) => return Some(i),
                    Some(_) => {}
                    None => {
                        // Wait for the next header to confirm this one.
                        self.scan.drain(..i);
                        self.scan_from = 0;
                        return None;
                    }
                }
            }
            i += 1;
        }
        self.scan.drain(..i);
        self.scan_from = 0;
        None
    }

    /// `len` bytes of this direction were lost.
    pub fn gap(&mut self, len: u64) -> GapEffect {
        if len == 0 {
            return GapEffect::Harmless;
        }
        match &mut self.state {
            State::Preface { matched } if len <= (PREFACE.len() - *matched) as u64 => {
                // `len` fits in the preface's 24 bytes.
                *matched += len as usize;
                if *matched == PREFACE.len() {
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                }
                GapEffect::Harmless
            }
            State::Payload {
                header,
                remaining,
                keep,
                incomplete,
            } if len <= u64::from(*remaining) => {
                // `len <= remaining`, a u32.
                *remaining -= len as u32;
                if *keep == 0 {
                    return GapEffect::Harmless;
                }
                *incomplete = true;
                *keep = self.payload.len();
                GapEffect::PayloadLost {
                    header_block: header.kind.is_header_block(),
                }
            }
            State::Lost => {
                // Bytes before the loss cannot start a frame that continues
                // after it.
                self.scan.clear();
                self.scan_from = 0;
                self.lost_bytes = self.lost_bytes.saturating_add(len);
                GapEffect::SyncLost
            }
            _ => {
                self.state = State::Lost;
                self.scan.clear();
                self.scan_from = 0;
                self.payload = Vec::new();
                self.lost_bytes = len;
                GapEffect::SyncLost
            }
        }
    }
}

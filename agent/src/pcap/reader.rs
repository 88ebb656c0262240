//! Streaming pcap/pcapng reader.
//!
//! The file is read in chunks of [`CHUNK_SIZE`] into a [`Bytes`] buffer and
//! pcap-parser's block parsers run over that buffer; the payload of every
//! [`Packet`] is a `Bytes` slice of the chunk, so no payload is copied. The
//! price: a payload kept alive keeps its whole chunk alive, so consumers that
//! retain payloads for long (reassembly buffers) should copy what they keep.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use pcap_parser::{
    Block, PcapError,
    nom::{self, Err as NomErr},
    pcap::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header},
    pcapng::{parse_block_be, parse_block_le},
};

use super::{DecodeError, DecodeStats, SkipReason, ip, link::LinkType};
use crate::event::{Nanos, Packet};

/// Bytes read from the file at a time. 256 KiB rather than 1 MiB: the
/// kernel's copy into the chunk and the decoding after it then work in a
/// quarter of the CPU's 2 MiB L2 instead of half of it, next to the flow
/// state the packets update (less replay CPU on the bench capture in an
/// alternating comparison); 400 MB is still under 2 000 reads.
pub const CHUNK_SIZE: usize = 1 << 18;
/// A record larger than this is corruption, not a packet (the largest
/// snaplen any tool writes is 256 KiB; pcapng blocks may carry options).
const MAX_RECORD: usize = 16 << 20;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// A pcapng section header block's type, the same in either byte order.
const SHB_MAGIC_BYTES: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// How far reading has got, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the file decoded so far.
    pub bytes_done: u64,
    /// Size of the file when it was opened.
    pub bytes_total: u64,
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Legacy {
        big_endian: bool,
        /// Record header has 8 more bytes ("modified" pcap by Alexey Kuznetsov).
        modified: bool,
        /// Multiplier from the fractional field to nanoseconds.
        frac_to_ns: i64,
        link: LinkType,
    },
    Ng {
        big_endian: bool,
    },
}

/// A pcapng interface: its link type (if supported) and clock.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: Option<LinkType>,
    /// Timestamp units per second (if_tsresol).
    units_per_sec: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset_ns: i64,
}

/// Reads TCP [`Packet`]s from a pcap or pcapng file.
///
/// Iterate it, or call [`next_packet`](Self::next_packet). Frames that are not
/// TCP over IP are skipped and counted in [`stats`](Self::stats). An error
/// (I/O, corrupt container) ends the iteration.
pub struct PcapReader {
    path: PathBuf,
    file: File,
    file_size: u64,
    /// Current chunk; `buf[pos..]` is not decoded yet.
    buf: Bytes,
    pos: usize,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    eof: bool,
    done: bool,
    format: Format,
    interfaces: Vec<Interface>,
    /// Last timestamp seen, for pcapng simple packet blocks (which have none).
    last_ts: Nanos,
    stats: DecodeStats,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("progress", &self.progress())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PcapReader {
    /// Opens `path` and reads its file header.
    ///
    /// Fails when the file cannot be read, is not pcap/pcapng, or (legacy
    /// pcap) has a link type rampwatch does not decode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DecodeError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| DecodeError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let mut reader = Self {
            path,
            file,
            file_size,
            buf: Bytes::new(),
            pos: 0,
            buf_offset: 0,
            eof: false,
            done: false,
            format: Format::Ng { big_endian: false },
            interfaces: Vec::new(),
            last_ts: 0,
            stats: DecodeStats::default(),
        };
        reader.refill(24)?;
        reader.read_file_header()?;
        Ok(reader)
    }

    /// Counters of frames read and skipped so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Bytes decoded so far and the file size.
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_done: self.buf_offset + self.pos as u64,
            bytes_total: self.file_size,
        }
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_file_header(&mut self) -> Result<(), DecodeError> {
        let magic = self.buf.first_chunk::<4>().copied().unwrap_or_default();
        if magic == SHB_MAGIC_BYTES {
            // pcapng: the section header block is decoded like any block.
            return Ok(());
        }
        let header = match parse_pcap_header(&self.buf) {
            Ok((_, header)) => header,
            Err(_) => {
                return Err(DecodeError::NotPcap {
                    path: self.path.clone(),
                });
            }
        };
        let Some(link) = LinkType::from_number(header.network.0) else {
            return Err(DecodeError::UnsupportedLinkType {
                path: self.path.clone(),
                linktype: header.network.0,
            });
        };
        self.format = Format::Legacy {
            big_endian: header.is_bigendian(),
            modified: header.is_modified_format(),
            frac_to_ns: if header.is_nanosecond_precision() {
                1
            } else {
                1000
            },
            link,
        };
        self.pos = header.size();
        Ok(())
    }

    /// The next TCP packet, `Ok(None)` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        let result = match self.format {
            Format::Legacy {
                big_endian,
                modified,
                frac_to_ns,
                link,
            } => self.next_legacy(big_endian, modified, frac_to_ns, link),
            Format::Ng { .. } => self.next_ng(),
        };
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn next_legacy(
        &mut self,
        big_endian: bool,
        modified: bool,
        frac_to_ns: i64,
        link: LinkType,
    ) -> Result<Option<Packet>, DecodeError> {
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            let parsed = if modified {
                parse_pcap_frame_modified(rest)
            } else if big_endian {
                parse_pcap_frame_be(rest)
            } else {
                parse_pcap_frame(rest)
            };
            let (frame, consumed, ts) = match parsed {
                Ok((remaining, block)) => {
                    let start = self.pos + (rest.len() - remaining.len()) - block.data.len();
                    let ts = i64::from(block.ts_sec) * NANOS_PER_SEC
                        + i64::from(block.ts_usec) * frac_to_ns;
                    (
                        start..start + block.data.len(),
                        rest.len() - remaining.len(),
                        ts,
                    )
                }
                Err(NomErr::Incomplete(needed)) => {
                    let caplen = caplen_hint(rest, big_endian);
                    if caplen > MAX_RECORD {
                        return Err(self.corrupt("a packet record claims more than 16 MiB"));
                    }
                    if !self.more(needed)? {
                        return Ok(None);
                    }
                    continue;
                }
                Err(_) => return Err(self.corrupt("unreadable packet record header")),
            };
            self.pos += consumed;
            if let Some(packet) = self.decode_frame(link, frame, ts) {
                return Ok(Some(packet));
            }
        }
    }

    fn next_ng(&mut self) -> Result<Option<Packet>, DecodeError> {
        loop {
            let Format::Ng { big_endian } = self.format else {
                return Ok(None);
            };
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            // Peek at the block length first: a huge one is corruption, and
            // knowing it tells "needs more file" from "lies inside itself".
            let mut block_len = usize::MAX;
            if let Some(&[m0, m1, m2, m3, l0, l1, l2, l3]) = rest.first_chunk::<8>() {
                let len_bytes = [l0, l1, l2, l3];
                // A section header's own byte-order magic says how to read it.
                let be = if [m0, m1, m2, m3] == SHB_MAGIC_BYTES {
                    rest.get(8..12) == Some(&[0x1a, 0x2b, 0x3c, 0x4d])
                } else {
                    big_endian
                };
                let len = if be {
                    u32::from_be_bytes(len_bytes)
                } else {
                    u32::from_le_bytes(len_bytes)
                };
                block_len = len as usize;
                if block_len > MAX_RECORD {
                    return Err(self.corrupt("a block claims more than 16 MiB"));
                }
                // Type, length and trailing length take 12 bytes. pcap-parser
                // 0.17 subtracts 12 from a process information block's length
                // unchecked (an overflow panic with overflow checks, found by
                // fuzzing, pcapng target): refuse such a block before it does.
                if block_len < 12 {
                    return Err(self.corrupt("a block is shorter than 12 bytes"));
                }
            }
            let parsed = if big_endian {
                parse_block_be(rest)
            } else {
                parse_block_le(rest)
            };
            let block = match parsed {
                Ok((remaining, block)) => {
                    let consumed = rest.len() - remaining.len();
                    let base = self.pos;
                    self.pos += consumed;
                    ng_block(block, base, rest)
                }
                Err(NomErr::Incomplete(_)) if rest.len() >= block_len => {
                    // The whole block is here, yet its contents ask for
                    // more (a packet length beyond the block): reading on
                    // would buffer the rest of the file for nothing.
                    return Err(self.corrupt("a packet is longer than its block"));
                }
                Err(NomErr::Incomplete(needed)) => {
                    if !self.more(needed)? {
                        return Ok(None);
                    }
                    continue;
                }
                Err(NomErr::Error(PcapError::HeaderNotRecognized)) if self.stats.frames == 0 => {
                    return Err(DecodeError::NotPcap {
                        path: self.path.clone(),
                    });
                }
                Err(_) => return Err(self.corrupt("unreadable pcapng block")),
            };
            match block {
                NgBlock::Packet { iface, frame, ts } => {
                    let Some(interface) = self.interfaces.get(iface as usize).copied() else {
                        self.stats.frames += 1;
                        self.stats.count(SkipReason::Malformed);
                        continue;
                    };
                    let Some(link) = interface.link else {
                        self.stats.frames += 1;
                        self.stats.count(SkipReason::UnsupportedLinkType);
                        continue;
                    };
                    let ts = match ts {
                        Some(raw) => interface.to_nanos(raw),
                        None => self.last_ts,
                    };
                    if let Some(packet) = self.decode_frame(link, frame, ts) {
                        return Ok(Some(packet));
                    }
                }
                NgBlock::Section { big_endian } => {
                    self.format = Format::Ng { big_endian };
                    self.interfaces.clear();
                }
                NgBlock::Interface(interface) => self.interfaces.push(interface),
                NgBlock::Other => {}
            }
        }
    }

    /// Turns the frame at `buf[frame]` into a packet, or counts why not.
    fn decode_frame(
        &mut self,
        link: LinkType,
        frame: std::ops::Range<usize>,
        ts: Nanos,
    ) -> Option<Packet> {
        self.stats.frames += 1;
        self.last_ts = ts;
        let bytes = self.buf.get(frame.clone()).unwrap_or_default();
        let decoded = link
            .ip_offset(bytes)
            .and_then(|off| Ok((off, ip::decode_ip(bytes.get(off..).unwrap_or_default())?)));
        match decoded {
            Ok((off, seg)) => {
                self.stats.packets += 1;
                let start = frame.start + off + seg.payload.start;
                let end = frame.start + off + seg.payload.end;
                let payload = if start == end {
                    Bytes::new()
                } else {
                    self.buf.slice(start..end)
                };
                Some(seg.into_packet(ts, payload))
            }
            Err(reason) => {
                self.stats.count(reason);
                None
            }
        }
    }

    /// Reads more of the file after a parser asked for `needed` more bytes.
    /// `Ok(false)` at the end of the file; a partial record there is counted
    /// as truncated (a capture cut off by a killed tcpdump).
    fn more(&mut self, needed: nom::Needed) -> Result<bool, DecodeError> {
        let needed = match needed {
            nom::Needed::Size(n) => n.get(),
            nom::Needed::Unknown => 1,
        };
        if self.eof {
            if self.pos < self.buf.len() {
                self.stats.frames += 1;
                self.stats.count(SkipReason::Truncated);
            }
            return Ok(false);
        }
        self.refill(needed)?;
        Ok(true)
    }

    /// Starts a new chunk holding the undecoded rest plus at least `needed`
    /// more bytes (unless the file ends first).
    ///
    /// The chunk's memory is reused when no packet still holds a slice of
    /// it (the usual case: consumers copy what they keep): a fresh buffer
    /// per chunk is fresh pages for the kernel to fault in and zero, which
    /// cost replay more than decoding the packets in them.
    fn refill(&mut self, needed: usize) -> Result<(), DecodeError> {
        let pos = self.pos.min(self.buf.len());
        let rest = self.buf.len() - pos;
        let capacity = CHUNK_SIZE.max(rest + needed);
        let mut chunk = match std::mem::take(&mut self.buf).try_into_mut() {
            Ok(unique) => {
                let mut chunk = Vec::from(unique);
                chunk.drain(..pos);
                chunk
            }
            Err(shared) => {
                let mut chunk = Vec::with_capacity(capacity);
                chunk.extend_from_slice(shared.get(pos..).unwrap_or_default());
                chunk
            }
        };
        chunk.reserve(capacity - chunk.len());
        let want = (capacity - chunk.len()) as u64;
        let read = (&mut self.file)
            .take(want)
            .read_to_end(&mut chunk)
            .map_err(|source| DecodeError::Io {
                path: self.path.clone(),
                source,
            })?;
        if (read as u64) < want {
            self.eof = true;
        }
        self.buf_offset += pos as u64;
        self.pos = 0;
        self.buf = Bytes::from(chunk);
        Ok(())
    }

    fn corrupt(&self, what: &'static str) -> DecodeError {
        DecodeError::Corrupt {
            path: self.path.clone(),
            offset: self.buf_offset + self.pos as u64,
            what,
        }
    }
}

impl Iterator for PcapReader {
    type Item = Result<Packet, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_packet().transpose()
    }
}

impl std::iter::FusedIterator for PcapReader {}

enum NgBlock {
    Section {
        big_endian: bool,
    },
    Interface(Interface),
    Packet {
        iface: u32,
        frame: std::ops::Range<usize>,
        ts: Option<u64>,
    },
    Other,
}

impl Interface {
    fn to_nanos(self, raw: u64) -> Nanos {
        let ns = match self.units_per_sec {
            1_000_000 => i128::from(raw) * 1000,
            1_000_000_000 => i128::from(raw),
            units => i128::from(raw) * 1_000_000_000 / i128::from(units.max(1)),
        };
        i64::try_from(ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_ns)
    }
}

/// Timestamp units per second for an if_tsresol value: 10^n, or 2^n when
/// the top bit is set. (pcap-parser's `ts_resolution` rejects every 2^n
/// value, so this is done here.) Out-of-range values fall back to the
/// default, microseconds.
fn units_per_sec(tsresol: u8) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp)
    } else {
        1u64.checked_shl(exp).filter(|_| exp < 64)
    };
    units.unwrap_or(1_000_000)
}

/// The captured length a legacy record header announces (for the size check).
fn caplen_hint(rest: &[u8], big_endian: bool) -> usize {
    match rest.get(8..12) {
        Some(&[a, b, c, d]) if big_endian => u32::from_be_bytes([a, b, c, d]) as usize,
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// Interprets one pcapng block whose bytes start at `buf[base..]`; `rest`
/// is `buf[base..]`, the slice the block was parsed from.
fn ng_block(block: Block<'_>, base: usize, rest: &[u8]) -> NgBlock {
    let range_of = |data: &[u8]| {
        // `data` points into `rest`: its offset there is the pointer distance.
        let start = base + (data.as_ptr() as usize).saturating_sub(rest.as_ptr() as usize);
        start..start + data.len()
    };
    match block {
        Block::SectionHeader(shb) => NgBlock::Section {
            big_endian: shb.big_endian(),
        },
        Block::InterfaceDescription(idb) => NgBlock::Interface(Interface {
            link: LinkType::from_number(idb.linktype.0),
            units_per_sec: units_per_sec(idb.if_tsresol),
            offset_ns: idb.ts_offset().saturating_mul(NANOS_PER_SEC),
        }),
        Block::EnhancedPacket(epb) => {
            let caplen = (epb.caplen as usize).min(epb.data.len());
            let data = epb.data.get(..caplen).unwrap_or_default();
            NgBlock::Packet {
                iface: epb.if_id,
                frame: range_of(data),
                ts: Some(u64::from(epb.ts_high) << 32 | u64::from(epb.ts_low)),
            }
        }
        Block::SimplePacket(spb) => {
            let len = (spb.origlen as usize).min(spb.data.len());
            let data = spb.data.get(..len).unwrap_or_default();
            NgBlock::Packet {
                iface: 0,
                frame: range_of(data),
                ts: None,
            }
        }
        _ => NgBlock::Other,
    }
}

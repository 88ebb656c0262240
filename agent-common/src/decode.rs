//! Decoding of ring-buffer records, field by field from little-endian bytes.
//!
//! Records come from the kernel, so they are trusted to be well-formed, but a
//! decoder bug or a kernel/user version mismatch must surface as a counted
//! error, never as a panic or a misread: every length is checked.

use crate::{
    DirStats, FLOW_END_LEN, FlowEndRecord, FlowKey, FlowStats, SAMPLE_HEADER_LEN, SNAPLEN_MAX,
    SampleHeader, TLS_CHUNK_MAX, TLS_DATA_HEADER_LEN, TLS_TRIGGER_LEN, TlsDataHeader, TlsTrigger,
    event_id, tls_call, tls_trigger,
};

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for {what} ({need} bytes)")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown record id {0:#x}")]
    UnknownEvent(u32),
    #[error("sample claims {claimed} captured bytes but carries {present}")]
    BadCapturedLen { claimed: u32, present: usize },
    #[error("invalid field {field} = {value}")]
    BadField { field: &'static str, value: u64 },
}

/// A decoded ring-buffer record; the payload borrows from the record.
#[derive(Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Sample {
        header: SampleHeader,
        payload: &'a [u8],
    },
    FlowEnd(FlowEndRecord),
    /// One chunk of a TLS call's plaintext; `data` is the copied bytes.
    TlsData {
        header: TlsDataHeader,
        data: &'a [u8],
    },
}

/// `Debug` shows a sample's payload length, never its bytes: they can hold
/// credentials in clear.
impl core::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sample { header, payload } => f
                .debug_struct("Sample")
                .field("header", header)
                .field("payload_len", &payload.len())
                .finish(),
            Self::FlowEnd(r) => f.debug_tuple("FlowEnd").field(r).finish(),
            Self::TlsData { header, data } => f
                .debug_struct("TlsData")
                .field("header", header)
                .field("data_len", &data.len())
                .finish(),
        }
    }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Callers check the total length first; a short read still returns
    /// zeros rather than panicking.
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }

    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    fn flow_key(&mut self) -> FlowKey {
        FlowKey {
            client_addr: self.bytes(),
            server_addr: self.bytes(),
            client_port: self.u16(),
            server_port: self.u16(),
            observer: self.u8(),
            _pad0: self.u8(),
            _pad1: self.u16(),
            ifindex: self.u32(),
        }
    }

    fn dir_stats(&mut self) -> DirStats {
        DirStats {
            packets: self.u64(),
            bytes: self.u64(),
            payload_bytes: self.u64(),
            payload_segments: self.u64(),
            request_starts: self.u64(),
            first_seen_ns: self.u64(),
            last_seen_ns: self.u64(),
            samples: self.u64(),
            tcp_flags: self.u64(),
        }
    }

    fn flow_stats(&mut self) -> FlowStats {
        FlowStats {
            dirs: [self.dir_stats(), self.dir_stats()],
            cgroup_id: self.u64(),
            state: self.u64(),
            endpoint_id: self.u32(),
            _pad: self.u32(),
        }
    }
}

fn need(what: &'static str, buf: &[u8], n: usize) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError::Truncated {
            what,
            len: buf.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

impl TryFrom<&[u8]> for FlowKey {
    type Error = DecodeError;
    fn try_from(buf: &[u8]) -> Result<Self, DecodeError> {
        need("flow key", buf, core::mem::size_of::<FlowKey>())?;
        Ok(Reader::new(buf).flow_key())
    }
}

impl TryFrom<&[u8]> for FlowStats {
    type Error = DecodeError;
    fn try_from(buf: &[u8]) -> Result<Self, DecodeError> {
        need("flow stats", buf, core::mem::size_of::<FlowStats>())?;
        Ok(Reader::new(buf).flow_stats())
    }
}

impl TryFrom<&[u8]> for SampleHeader {
    type Error = DecodeError;
    fn try_from(buf: &[u8]) -> Result<Self, DecodeError> {
        need("sample header", buf, SAMPLE_HEADER_LEN)?;
        let mut r = Reader::new(buf);
        let h = SampleHeader {
            event: r.u32(),
            direction: r.u8(),
            tcp_flags: r.u8(),
            _pad: r.u16(),
            captured_len: r.u32(),
            payload_len: r.u32(),
            seq: r.u32(),
            endpoint_id: r.u32(),
            ts_boot_ns: r.u64(),
            cgroup_id: r.u64(),
            key: r.flow_key(),
            _pad2: r.u32(),
        };
        if h.event != event_id::SAMPLE {
            return Err(DecodeError::UnknownEvent(h.event));
        }
        if h.direction > 1 {
            return Err(DecodeError::BadField {
                field: "direction",
                value: h.direction.into(),
            });
        }
        if h.captured_len > SNAPLEN_MAX || h.captured_len > h.payload_len {
            return Err(DecodeError::BadField {
                field: "captured_len",
                value: h.captured_len.into(),
            });
        }
        Ok(h)
    }
}

impl TryFrom<&[u8]> for FlowEndRecord {
    type Error = DecodeError;
    fn try_from(buf: &[u8]) -> Result<Self, DecodeError> {
        need("flow-end record", buf, FLOW_END_LEN)?;
        let mut r = Reader::new(buf);
        let rec = FlowEndRecord {
            event: r.u32(),
            reason: r.u32(),
            ts_boot_ns: r.u64(),
            key: r.flow_key(),
            _pad: r.u32(),
            stats: r.flow_stats(),
        };
        if rec.event != event_id::FLOW_END {
            return Err(DecodeError::UnknownEvent(rec.event));
        }
        Ok(rec)
    }
}

impl TryFrom<&[u8]> for TlsDataHeader {
    type Error = DecodeError;
    fn try_from(buf: &[u8]) -> Result<Self, DecodeError> {
        need("TLS data header", buf, TLS_DATA_HEADER_LEN)?;
        let mut r = Reader::new(buf);
        let h = TlsDataHeader {
            event: r.u32(),
            direction: r.u8(),
            _pad0: r.u8(),
            _pad1: r.u16(),
            captured_len: r.u32(),
            chunk_len: r.u32(),
            offset: r.u64(),
            call_len: r.u32(),
            call: r.u32(),
            pid: r.u32(),
            tid: r.u32(),
            endpoint_id: r.u32(),
            _pad2: r.u32(),
            ts_boot_ns: r.u64(),
            cgroup_id: r.u64(),
            key: r.flow_key(),
            _pad3: r.u32(),
        };
        if h.event != event_id::TLS_DATA {
            return Err(DecodeError::UnknownEvent(h.event));
        }
        if h.direction > 1 {
            return Err(DecodeError::BadField {
                field: "direction",
                value: h.direction.into(),
            });
        }
        if h.chunk_len > TLS_CHUNK_MAX || h.chunk_len == 0 {
            return Err(DecodeError::BadField {
                field: "chunk_len",
                value: h.chunk_len.into(),
            });
        }
        if h.captured_len > h.chunk_len {
            return Err(DecodeError::BadField {
                field: "captured_len",
                value: h.captured_len.into(),
            });
        }
        if !matches!(h.call, tls_call::WRITE | tls_call::READ | tls_call::READ_EX) {
            return Err(DecodeError::BadField {
                field: "call",
                value: h.call.into(),
            });
        }
        Ok(h)
    }
}

impl TryFrom<&[u8]> for TlsTrigger {
    type Error = DecodeError;
    fn try_from(buf: &[u8]) -> Result<Self, DecodeError> {
        need("TLS trigger", buf, TLS_TRIGGER_LEN)?;
        let mut r = Reader::new(buf);
        let t = TlsTrigger {
            event: r.u32(),
            kind: r.u32(),
            pid: r.u32(),
            ppid: r.u32(),
            port: r.u16(),
            _pad0: r.u16(),
            _pad1: r.u32(),
            addr: r.bytes(),
            ts_boot_ns: r.u64(),
        };
        if t.event != event_id::TLS_TRIGGER {
            return Err(DecodeError::UnknownEvent(t.event));
        }
        if !(tls_trigger::FORK..=tls_trigger::CONNECT).contains(&t.kind) {
            return Err(DecodeError::BadField {
                field: "kind",
                value: t.kind.into(),
            });
        }
        Ok(t)
    }
}

impl<'a> TryFrom<&'a [u8]> for Record<'a> {
    type Error = DecodeError;
    fn try_from(buf: &'a [u8]) -> Result<Self, DecodeError> {
        need("record id", buf, 4)?;
        let id = Reader::new(buf).u32();
        match id {
            event_id::SAMPLE => {
                let header = SampleHeader::try_from(buf)?;
                let payload = buf
                    .get(SAMPLE_HEADER_LEN..)
                    .and_then(|rest| rest.get(..header.captured_len as usize))
                    .ok_or(DecodeError::BadCapturedLen {
                        claimed: header.captured_len,
                        present: buf.len().saturating_sub(SAMPLE_HEADER_LEN),
                    })?;
                Ok(Record::Sample { header, payload })
            }
            event_id::FLOW_END => Ok(Record::FlowEnd(FlowEndRecord::try_from(buf)?)),
            event_id::TLS_DATA => {
                let header = TlsDataHeader::try_from(buf)?;
                // The reservation is a fixed size class: longer than the
                // captured bytes is normal, shorter is an error.
                let data = buf
                    .get(TLS_DATA_HEADER_LEN..)
                    .and_then(|rest| rest.get(..header.captured_len as usize))
                    .ok_or(DecodeError::BadCapturedLen {
                        claimed: header.captured_len,
                        present: buf.len().saturating_sub(TLS_DATA_HEADER_LEN),
                    })?;
                Ok(Record::TlsData { header, data })
            }
            other => Err(DecodeError::UnknownEvent(other)),
        }
    }
}

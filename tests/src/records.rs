//! Synthetic ring-buffer records for the decode benchmark, laid out exactly
//! as the kernel writes them (`agent_common` wire types).

use agent::{capture::RecordDecoder, event::Event};
use agent_common::{FlowKey, SAMPLE_HEADER_LEN, SampleHeader, direction, event_id, observer};

/// A sample record: header + `payload_len` payload bytes starting with an
/// HTTP request line, in direction `dir` (0 to server, 1 to client).
pub fn sample_record(payload_len: u32, dir: u8) -> Vec<u8> {
    let mut key = FlowKey {
        client_port: 40000,
        server_port: 443,
        observer: observer::CLIENT_SOCKET,
        ..FlowKey::default()
    };
    key.client_addr[10..16].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
    key.server_addr[10..16].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
    let hdr = SampleHeader {
        event: event_id::SAMPLE,
        direction: if dir == 0 {
            direction::TO_SERVER
        } else {
            direction::TO_CLIENT
        },
        tcp_flags: 0x18,
        captured_len: payload_len,
        payload_len,
        seq: 12345,
        endpoint_id: 1,
        ts_boot_ns: 1_000_000_000,
        cgroup_id: 1,
        key,
        ..SampleHeader::default()
    };
    // SAFETY: SampleHeader is #[repr(C)], made only of integers and byte
    // arrays with explicit padding fields, so all its bytes are initialised.
    let bytes =
        unsafe { core::slice::from_raw_parts((&raw const hdr).cast::<u8>(), SAMPLE_HEADER_LEN) };
    let mut rec = bytes.to_vec();
    let line = b"GET /api/v1/items HTTP/1.1\r\nHost: rampwatch.test\r\n";
    rec.extend((0..payload_len as usize).map(|i| line.get(i).copied().unwrap_or(b'x')));
    rec
}

/// The userspace decode path of a ring-buffer record into a pipeline event:
/// exactly what `agent::capture`'s ring reader runs per record
/// (`agent::capture::RecordDecoder`: bounds-checked decode, flow-view
/// admission, conversion to `Event`).
pub struct Decoder {
    inner: RecordDecoder,
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            inner: RecordDecoder::new(0),
        }
    }

    /// Decode one record; `Some` if it produced a packet event.
    pub fn decode(&mut self, record: &[u8]) -> Option<Event> {
        // A record may come as [Socket, Packet]: the socket's workload is
        // announced before its packet.
        self.inner
            .convert(record)
            .into_iter()
            .flatten()
            .find(|e| matches!(e, Event::Packet(_)))
    }

    /// Records that could not be decoded so far.
    pub fn errors(&self) -> u64 {
        self.inner.decode_errors()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use agent::event::Direction;

    use super::*;

    #[test]
    fn synthetic_record_decodes_to_its_packet() {
        let rec = sample_record(180, 0);
        let Some(Event::Packet(p)) = Decoder::new().decode(&rec) else {
            panic!("no packet from a well-formed record");
        };
        assert_eq!(p.payload_len, 180);
        assert_eq!(p.payload.len(), 180);
        assert!(p.payload.starts_with(b"GET /api"));
        assert_eq!(p.src, "127.0.0.1:40000".parse().expect("addr"));
        assert_eq!(p.direction, Some(Direction::ToServer));
    }

    #[test]
    fn truncated_record_is_an_error_not_a_panic() {
        let rec = sample_record(180, 1);
        let mut d = Decoder::new();
        for len in 0..rec.len() {
            assert!(
                d.decode(&rec[..len]).is_none(),
                "prefix of {len} bytes decoded"
            );
        }
        assert_eq!(d.errors(), rec.len() as u64);
    }
}

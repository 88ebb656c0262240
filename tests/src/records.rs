//! Synthetic ring-buffer records for the decode benchmark, laid out exactly
//! as the kernel writes them (`agent_common` wire types).

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

/// The userspace decode path of a ring-buffer record into a pipeline event.
pub struct Decoder {
    _private: (),
}

impl Decoder {
    pub fn new() -> Self {
        Self { _private: () }
    }

    /// Decode one record; true if it produced an event.
    pub fn decode(&mut self, record: &[u8]) -> bool {
        agent_common::decode::Record::try_from(record).is_ok()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

//! The ring-buffer reader: kernel records → batches of [`Event`]s on the
//! bounded channel.
//!
//! One task drains the ring whenever epoll says it is readable
//! (`handover` says how records reach the channel, and why every sample is
//! either delivered or counted as lost, exactly).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

use agent_common::{
    decode::{DecodeError, Record},
    direction, end_reason,
};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::mpsc::{Receiver, Sender},
};

use super::{
    flow_map::{Tracker, flow_id, tls_side, tls_socket_key},
    handover::{Payloads, Staged, drain, forward},
};
use crate::event::{Direction, Event, FlowEndReason, Packet, Plaintext};

/// Looks up the TLS plaintext layer of a connection in the kernel flow map
/// (live capture only), so a flow end carries its last TLS request starts.
pub struct TlsLayerLookup(pub Box<LookupFn>);

type LookupFn = dyn Fn(&agent_common::FlowKey) -> Option<agent_common::FlowStats> + Send + Sync;

impl std::fmt::Debug for TlsLayerLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsLayerLookup")
    }
}

/// State shared by the capture's tasks and its handle.
#[derive(Debug, Default)]
pub struct Shared {
    pub tracker: Mutex<Tracker>,
    /// Nanoseconds to add to `CLOCK_BOOTTIME` to get the wall clock.
    pub boot_to_wall: AtomicI64,
    pub decode_errors: AtomicU64,
    pub records: AtomicU64,
    /// Set by live capture when the TLS probes run.
    pub tls_layer: std::sync::OnceLock<TlsLayerLookup>,
}

impl Shared {
    pub fn wall(&self, boot_ns: u64) -> i64 {
        i64::try_from(boot_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.boot_to_wall.load(Ordering::Relaxed))
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding the lock leaves plain counters behind: keep going.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns one record into at most two events, their payload copied into
    /// `payloads`; bad records are counted.
    pub fn convert(&self, buf: &[u8], payloads: &mut Payloads) -> [Option<Event>; 2] {
        self.records.fetch_add(1, Ordering::Relaxed);
        match Record::try_from(buf) {
            Ok(Record::Sample { header, payload }) => {
                let ts = self.wall(header.ts_boot_ns);
                let (admitted, socket) = self.tracker().sample(&header.key, header.cgroup_id, ts);
                if !admitted {
                    // Another view is reported; this one still names its
                    // end of the connection.
                    return [socket, None];
                }
                let id = flow_id(&header.key);
                let (src, dst, dir) = if header.direction == direction::TO_SERVER {
                    (id.client, id.server, Direction::ToServer)
                } else {
                    (id.server, id.client, Direction::ToClient)
                };
                // The socket first: the engine then knows the workload when
                // it judges the packet that creates the flow.
                [
                    socket,
                    Some(Event::Packet(Packet {
                        ts,
                        src,
                        dst,
                        seq: header.seq,
                        flags: header.tcp_flags,
                        payload_len: header.payload_len,
                        payload: payloads.copy(payload),
                        direction: Some(dir),
                    })),
                ]
            }
            Ok(Record::FlowEnd(rec)) => {
                let reason = match rec.reason {
                    end_reason::FIN => FlowEndReason::Fin,
                    end_reason::RST => FlowEndReason::Rst,
                    other => {
                        self.count_error(&DecodeError::BadField {
                            field: "reason",
                            value: other.into(),
                        });
                        return [None, None];
                    }
                };
                let ts = self.wall(rec.ts_boot_ns);
                let tls = self.tls_layer.get().and_then(|look| {
                    (look.0)(&agent_common::FlowKey {
                        observer: agent_common::observer::TLS_PLAINTEXT,
                        ifindex: 0,
                        ..rec.key
                    })
                });
                self.tracker()
                    .flow_end(&rec.key, &rec.stats, tls.as_ref(), reason, ts)
            }
            Ok(Record::TlsData { header, data }) => {
                let dir = if header.direction == direction::TO_SERVER {
                    Direction::ToServer
                } else {
                    Direction::ToClient
                };
                let ts = self.wall(header.ts_boot_ns);
                let side = tls_side(header.call, header.direction);
                let socket = self.tracker().socket(
                    &tls_socket_key(&header.key, side),
                    header.cgroup_id,
                    Some(header.pid),
                    ts,
                );
                [
                    socket,
                    Some(Event::Plaintext(Plaintext {
                        ts,
                        flow: flow_id(&header.key),
                        direction: dir,
                        offset: header.offset,
                        len: header.chunk_len,
                        data: payloads.copy(data),
                        pid: header.pid,
                    })),
                ]
            }
            Err(e) => {
                self.count_error(&e);
                [None, None]
            }
        }
    }

    fn count_error(&self, e: &DecodeError) {
        let n = self.decode_errors.fetch_add(1, Ordering::Relaxed);
        // The first few are worth a line; a flood of them is in the counter.
        if n < 8 {
            tracing::warn!(error = %e, "skipping undecodable ring-buffer record");
        }
    }
}

/// How often the ring is drained without a wakeup: samples only wake the
/// reader when the ring is filling up (see the kernel's `WAKEUP_BYTES`).
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Drains the ring into `tx` until the receiver is gone or the fd fails.
/// Each batch of the flow-map poller (`polls`) goes out after a drain, so
/// behind every record the kernel committed before the poller read the
/// map: a request count never overtakes the head that names its client.
/// On `stop`, delivers what is in the ring and the polls waiting, and
/// returns.
pub async fn run(
    mut ring: AsyncFd<RingBuf<MapData>>,
    tx: Sender<Vec<Event>>,
    polls: Receiver<Vec<Event>>,
    shared: Arc<Shared>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut polls = Some(polls);
    let mut staged = Staged::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            () = stop.notified() => {
                if drain(ring.get_mut(), &tx, &shared, &mut staged).await
                    && let Some(polls) = polls.as_mut()
                {
                    while let Ok(batch) = polls.try_recv() {
                        if !forward(batch, &tx).await {
                            break;
                        }
                    }
                }
                return;
            }
            batch = next_poll(&mut polls) => match batch {
                Some(batch) => {
                    drain(ring.get_mut(), &tx, &shared, &mut staged).await && forward(batch, &tx).await
                }
                // The poller stopped (shutdown aborts it first); the ring
                // goes on until `stop`.
                None => {
                    polls = None;
                    true
                }
            },
            ready = ring.readable_mut() => match ready {
                Ok(mut guard) => {
                    let open = drain(guard.get_inner_mut(), &tx, &shared, &mut staged).await;
                    guard.clear_ready();
                    open
                }
                Err(e) => {
                    tracing::error!(error = %e, "ring buffer poll failed; capture stops delivering events");
                    return;
                }
            },
            _ = tick.tick() => drain(ring.get_mut(), &tx, &shared, &mut staged).await,
        };
        if !open {
            return;
        }
    }
}

/// The poller's next batch; never ready once its channel closed (a closed
/// channel would be ready, and so chosen, on every turn of the loop).
async fn next_poll(polls: &mut Option<Receiver<Vec<Event>>>) -> Option<Vec<Event>> {
    match polls {
        Some(p) => p.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use agent_common::{
        FlowEndRecord, FlowKey, SAMPLE_HEADER_LEN, SampleHeader, event_id, observer,
    };

    use super::*;

    fn convert(s: &Shared, buf: &[u8]) -> [Option<Event>; 2] {
        s.convert(buf, &mut Payloads::default())
    }

    pub(in crate::capture) fn key() -> FlowKey {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&[127, 0, 0, 1]);
        FlowKey {
            client_addr: a,
            server_addr: a,
            client_port: 50000,
            server_port: 443,
            observer: observer::CLIENT_SOCKET,
            ..FlowKey::default()
        }
    }

    /// A `FlowKey` as the kernel lays it out (with its padding), for
    /// hand-built records.
    fn push_key(v: &mut Vec<u8>, k: &FlowKey) {
        v.extend_from_slice(&k.client_addr);
        v.extend_from_slice(&k.server_addr);
        v.extend_from_slice(&k.client_port.to_le_bytes());
        v.extend_from_slice(&k.server_port.to_le_bytes());
        v.extend_from_slice(&[k.observer, 0, 0, 0]);
        v.extend_from_slice(&k.ifindex.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
    }

    /// Serialises like the kernel does (little-endian, repr(C)).
    fn sample(dir: u8, payload: &[u8], payload_len: u32) -> Vec<u8> {
        sample_of(&key(), dir, 77, payload, payload_len)
    }

    /// A sample record of the flow-map view `key`.
    pub(in crate::capture) fn sample_of(
        key: &FlowKey,
        dir: u8,
        seq: u32,
        payload: &[u8],
        payload_len: u32,
    ) -> Vec<u8> {
        let h = SampleHeader {
            event: event_id::SAMPLE,
            direction: dir,
            tcp_flags: 0x18,
            captured_len: payload.len() as u32,
            payload_len,
            seq,
            endpoint_id: 3,
            ts_boot_ns: 1_000,
            cgroup_id: 9,
            key: *key,
            ..SampleHeader::default()
        };
        let mut v = Vec::new();
        v.extend_from_slice(&h.event.to_le_bytes());
        v.push(h.direction);
        v.push(h.tcp_flags);
        v.extend_from_slice(&[0, 0]);
        for x in [h.captured_len, h.payload_len, h.seq, h.endpoint_id] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&h.ts_boot_ns.to_le_bytes());
        v.extend_from_slice(&h.cgroup_id.to_le_bytes());
        push_key(&mut v, &h.key);
        assert_eq!(v.len(), SAMPLE_HEADER_LEN);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn sample_becomes_oriented_packet_with_wall_clock() {
        let s = Shared::default();
        s.boot_to_wall.store(5_000, Ordering::Relaxed);
        let [socket, ev] = convert(&s, &sample(direction::TO_CLIENT, b"HTTP/1.1 200", 500));
        // The record's cgroup id names the client's end (a client-socket
        // view), once.
        assert!(
            matches!(
                socket,
                Some(Event::Socket(crate::event::LocalSocket {
                    cgroup_id: 9,
                    side: crate::event::Side::Client,
                    pid: None,
                    ..
                }))
            ),
            "{socket:?}"
        );
        let [again, _] = convert(&s, &sample(direction::TO_CLIENT, b"HTTP/1.1 200", 500));
        assert!(again.is_none(), "announced twice: {again:?}");
        let Some(Event::Packet(p)) = ev else {
            panic!("expected a packet, got {ev:?}")
        };
        assert_eq!(p.ts, 6_000);
        assert_eq!(p.src.to_string(), "127.0.0.1:443");
        assert_eq!(p.dst.to_string(), "127.0.0.1:50000");
        assert_eq!(p.direction, Some(Direction::ToClient));
        assert_eq!(&p.payload[..], b"HTTP/1.1 200");
        assert_eq!(p.payload_len, 500);
        assert_eq!(p.seq, 77);
        assert_eq!(s.decode_errors.load(Ordering::Relaxed), 0);
    }

    /// The second view of a loopback connection: not reported, but its
    /// socket (the server's end) is still named, once.
    #[test]
    fn duplicate_view_names_its_socket_but_is_not_reported() {
        let s = Shared::default();
        let client = sample(direction::TO_SERVER, b"GET / HTTP/1.1\r\n", 16);
        let server_key = FlowKey {
            observer: observer::SERVER_SOCKET,
            ..key()
        };
        let server = sample_of(
            &server_key,
            direction::TO_SERVER,
            77,
            b"GET / HTTP/1.1\r\n",
            16,
        );
        assert!(matches!(
            convert(&s, &client),
            [Some(Event::Socket(_)), Some(Event::Packet(_))]
        ));
        let [socket, packet] = convert(&s, &server);
        assert!(packet.is_none(), "{packet:?}");
        assert!(
            matches!(
                socket,
                Some(Event::Socket(crate::event::LocalSocket {
                    side: crate::event::Side::Server,
                    cgroup_id: 9,
                    ..
                }))
            ),
            "{socket:?}"
        );
        assert!(convert(&s, &server).iter().all(Option::is_none));
        let t = s.tracker();
        assert_eq!(t.duplicate_views, 2);
    }

    #[test]
    fn truncated_and_garbage_records_are_counted_not_panicking() {
        let s = Shared::default();
        let good = sample(direction::TO_SERVER, b"GET / HTTP/1.1\r\n", 16);
        let mut bad_inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x10],
            good[..SAMPLE_HEADER_LEN - 1].to_vec(),
            good[..good.len() - 1].to_vec(), // claims more payload than present
            vec![0xff; 300],
            {
                let mut v = good.clone();
                v[4] = 7; // direction out of range
                v
            },
            {
                let mut v = vec![0u8; 100];
                v[..4].copy_from_slice(&event_id::FLOW_END.to_le_bytes());
                v // flow end, too short
            },
        ];
        // Every prefix of a valid record, and some bit flips.
        for n in 0..good.len() {
            bad_inputs.push(good[..n].to_vec());
        }
        let mut errors = 0;
        for input in &bad_inputs {
            let before = s.decode_errors.load(Ordering::Relaxed);
            let out = convert(&s, input);
            let after = s.decode_errors.load(Ordering::Relaxed);
            if out.iter().all(Option::is_none) {
                assert_eq!(after, before + 1, "input {input:?} dropped silently");
                errors += 1;
            }
        }
        assert_eq!(errors, bad_inputs.len());
        // The pipeline still decodes good records afterwards.
        assert!(matches!(convert(&s, &good), [_, Some(Event::Packet(_))]));
    }

    /// A TLS_DATA record as the kernel writes it, in a reservation of
    /// `class` data bytes.
    fn tls_data(dir: u8, data: &[u8], chunk_len: u32, offset: u64, class: usize) -> Vec<u8> {
        let mut k = key();
        k.observer = observer::TLS_PLAINTEXT;
        let mut v = Vec::new();
        v.extend_from_slice(&event_id::TLS_DATA.to_le_bytes());
        v.extend_from_slice(&[dir, 0, 0, 0]);
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&chunk_len.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&chunk_len.to_le_bytes()); // call_len
        v.extend_from_slice(&agent_common::tls_call::READ.to_le_bytes());
        v.extend_from_slice(&4242u32.to_le_bytes()); // pid
        v.extend_from_slice(&4243u32.to_le_bytes()); // tid
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&2_000u64.to_le_bytes());
        v.extend_from_slice(&9u64.to_le_bytes());
        push_key(&mut v, &k);
        assert_eq!(v.len(), agent_common::TLS_DATA_HEADER_LEN);
        v.extend_from_slice(data);
        v.resize(agent_common::TLS_DATA_HEADER_LEN + class, 0xee);
        v
    }

    #[test]
    fn tls_data_becomes_plaintext_of_the_socket_flow() {
        let s = Shared::default();
        s.boot_to_wall.store(5_000, Ordering::Relaxed);
        let head = b"GET /a HTTP/1.1\r\n\r\n";
        let [none, ev] = convert(
            &s,
            &tls_data(direction::TO_SERVER, head, head.len() as u32, 77, 512),
        );
        assert!(none.is_none());
        let Some(Event::Plaintext(p)) = ev else {
            panic!("expected plaintext, got {ev:?}")
        };
        assert_eq!(p.ts, 7_000);
        assert_eq!(p.flow.client.to_string(), "127.0.0.1:50000");
        assert_eq!(p.flow.server.to_string(), "127.0.0.1:443");
        assert_eq!(p.direction, Direction::ToServer);
        assert_eq!((p.offset, p.len, p.pid), (77, head.len() as u32, 4242));
        assert_eq!(&p.data[..], head);
        // A failed copy: no bytes, the range still says what was missed.
        let [_, ev] = convert(&s, &tls_data(direction::TO_CLIENT, b"", 4096, 0, 4096));
        assert!(matches!(ev, Some(Event::Plaintext(p)) if p.data.is_empty() && p.len == 4096));
        // Bad records are counted, never a panic.
        let good = tls_data(direction::TO_SERVER, head, head.len() as u32, 0, 512);
        let mut bad = vec![
            good[..agent_common::TLS_DATA_HEADER_LEN - 1].to_vec(),
            tls_data(direction::TO_SERVER, head, 4, 0, 512), // captured > chunk
            tls_data(direction::TO_SERVER, head, 8192, 0, 512), // chunk too long
            {
                let mut v = good.clone();
                v[4] = 9; // direction
                v
            },
            {
                let mut v = good.clone();
                v[28..32].copy_from_slice(&77u32.to_le_bytes()); // call kind
                v
            },
        ];
        let mut short = good.clone();
        short.truncate(agent_common::TLS_DATA_HEADER_LEN + 3);
        bad.push(short);
        for (i, b) in bad.iter().enumerate() {
            let before = s.decode_errors.load(Ordering::Relaxed);
            assert!(
                convert(&s, b).iter().all(Option::is_none),
                "bad record {i} decoded"
            );
            assert_eq!(s.decode_errors.load(Ordering::Relaxed), before + 1);
        }
    }

    #[test]
    fn flow_end_carries_totals_and_final_request_delta() {
        let s = Shared::default();
        let mut rec = FlowEndRecord {
            event: event_id::FLOW_END,
            reason: end_reason::RST,
            ts_boot_ns: 10,
            key: key(),
            ..FlowEndRecord::default()
        };
        rec.stats.dirs[0].packets = 4;
        rec.stats.dirs[0].request_starts = 2;
        rec.stats.dirs[1].bytes = 999;
        let mut v = Vec::new();
        v.extend_from_slice(&rec.event.to_le_bytes());
        v.extend_from_slice(&rec.reason.to_le_bytes());
        v.extend_from_slice(&rec.ts_boot_ns.to_le_bytes());
        push_key(&mut v, &rec.key);
        for d in &rec.stats.dirs {
            for x in [
                d.packets,
                d.bytes,
                d.payload_bytes,
                d.payload_segments,
                d.request_starts,
                d.first_seen_ns,
                d.last_seen_ns,
                d.samples,
                d.tcp_flags,
            ] {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.extend_from_slice(&[0; 8 + 8 + 4 + 4]);
        assert_eq!(v.len(), agent_common::FLOW_END_LEN);
        let [starts, end] = convert(&s, &v);
        assert!(matches!(
            starts,
            Some(Event::RequestStarts { count: 2, .. })
        ));
        let Some(Event::FlowEnd {
            reason,
            totals: Some(t),
            ..
        }) = end
        else {
            panic!("expected a flow end, got {end:?}")
        };
        assert_eq!(reason, FlowEndReason::Rst);
        assert_eq!(t.packets, [4, 0]);
        assert_eq!(t.bytes, [0, 999]);
    }
}

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use agent_common::{FlowKey, direction, observer};
use tokio::sync::mpsc;

use super::*;
use crate::capture::ring::tests::{key, sample_of};

/// Records in memory, handed out in order; counts how many were taken.
struct MemRecords {
    recs: std::vec::IntoIter<Vec<u8>>,
    taken: Arc<AtomicUsize>,
}

impl MemRecords {
    fn new(recs: Vec<Vec<u8>>) -> (Self, Arc<AtomicUsize>) {
        let taken = Arc::new(AtomicUsize::new(0));
        let src = Self {
            recs: recs.into_iter(),
            taken: taken.clone(),
        };
        (src, taken)
    }
}

impl Records for MemRecords {
    fn with_next(&mut self, f: impl FnOnce(&[u8])) -> bool {
        let Some(r) = self.recs.next() else {
            return false;
        };
        self.taken.fetch_add(1, Ordering::Relaxed);
        f(&r);
        true
    }
}

/// The client-socket view of connection `conn` (its client port).
fn view_of(conn: u16, obs: u8) -> FlowKey {
    FlowKey {
        client_port: 40_000 + conn,
        observer: obs,
        ..key()
    }
}

/// `n` request samples spread over 8 connections; sample `i` carries
/// `i` as its sequence number.
fn numbered(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let conn = u16::try_from(i % 8).unwrap_or(0);
            sample_of(
                &view_of(conn, observer::CLIENT_SOCKET),
                direction::TO_SERVER,
                i,
                b"GET / HTTP/1.1\r\n\r\n",
                18,
            )
        })
        .collect()
}

/// Every event, in order, and the size of each batch.
async fn collect(rx: &mut mpsc::Receiver<Vec<Event>>) -> (Vec<Event>, Vec<usize>) {
    let (mut out, mut sizes) = (Vec::new(), Vec::new());
    while let Some(batch) = rx.recv().await {
        sizes.push(batch.len());
        out.extend(batch);
    }
    (out, sizes)
}

fn seqs(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Packet(p) => Some(p.seq),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_record_arrives_once_in_order_through_a_small_channel() {
    let shared = Arc::new(Shared::default());
    let (mut src, taken) = MemRecords::new(numbered(3000));
    let (tx, mut rx) = mpsc::channel(2);
    let sh = shared.clone();
    let reader = tokio::spawn(async move {
        let mut staged = Staged::default();
        let open = drain(&mut src, &tx, &sh, &mut staged).await;
        (open, staged.events.is_empty())
    });
    let (events, sizes) = collect(&mut rx).await;
    assert_eq!(
        reader.await.expect("reader task"),
        (true, true),
        "receiver was there, nothing left behind"
    );
    assert!(
        sizes.iter().all(|&n| (1..=BATCH + 1).contains(&n)),
        "{sizes:?}"
    );
    assert!(sizes.len() < 3008 / 100, "batched: {sizes:?}");
    assert_eq!(taken.load(Ordering::Relaxed), 3000);
    assert_eq!(seqs(&events), (0..3000).collect::<Vec<_>>());
    // Each connection's socket is announced once, before its first packet.
    let sockets: Vec<usize> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| matches!(e, Event::Socket(_)).then_some(i))
        .collect();
    assert_eq!(sockets, (0..8).map(|c| 2 * c).collect::<Vec<_>>());
    assert_eq!(events.len(), 3000 + 8);
}

#[tokio::test]
async fn a_gone_receiver_stops_the_reader() {
    let shared = Shared::default();
    let (mut src, _) = MemRecords::new(numbered(100));
    let (tx, rx) = mpsc::channel(4);
    drop(rx);
    assert!(!drain(&mut src, &tx, &shared, &mut Staged::default()).await);
}

/// Back-pressure: with the channel full and nobody receiving, the reader
/// stops taking records (in the kernel the ring then fills and the loss is
/// counted); what it took is delivered, in order, once the receiver reads.
#[tokio::test]
async fn a_full_channel_stops_reading_and_loses_nothing_it_read() {
    let shared = Arc::new(Shared::default());
    let (mut src, taken) = MemRecords::new(numbered(5000));
    let (tx, mut rx) = mpsc::channel(2);
    let sh = shared.clone();
    let reader =
        tokio::spawn(async move { drain(&mut src, &tx, &sh, &mut Staged::default()).await });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    // Two batches in the channel, one waiting to be sent.
    let stalled = taken.load(Ordering::Relaxed);
    assert!(
        (2 * BATCH..=3 * (BATCH + 1)).contains(&stalled),
        "took {stalled} records"
    );
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        taken.load(Ordering::Relaxed),
        stalled,
        "read on while blocked"
    );
    let (events, _) = collect(&mut rx).await;
    assert!(reader.await.expect("reader task"));
    assert_eq!(seqs(&events), (0..5000).collect::<Vec<_>>());
}

/// `cargo test -p agent --release --features bench --lib handover::tests::bench
/// -- --nocapture`: the userspace CPU the live pipeline spends per request,
/// from ring records to the engine (what `bench overhead` sees as the
/// agent's CPU, without the kernel, the poller and the sinks). Loopback
/// traffic of `wrk -c32` against nginx: per request, its head and the
/// response head, each seen by both socket views (the duplicate view only
/// announces its socket). Twice: as fast as the engine takes them, and
/// paced like the ring at 40k requests/s (the reader wakes every 10 ms and
/// finds 1600 records), where the engine's task runs out of work and waits.
#[cfg(feature = "bench")]
#[test]
fn bench_pipeline_cpu_per_request() {
    use std::time::Instant;

    use crate::{
        contract::Contract,
        policy::{Engine, EngineOptions},
    };

    const CONNS: u16 = 32;
    const TICK: std::time::Duration = std::time::Duration::from_millis(10);
    const PACED_BURST: u32 = 1600;
    const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Wed, 02 Dec 2026 15:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
    const CONTRACT: &str = r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: bench
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: optional
  endpoints:
    - name: bench
      dataClass: internal
      hosts: ["127.0.0.1"]
      ports: [443]
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
"#;

    /// The requests of the load, four records a request, from one
    /// template per connection and record kind with the sequence number
    /// (per connection and direction) written in as read.
    struct Load {
        left: u32,
        /// Records readable until the reader's next wakeup.
        ready: u32,
        next: u32,
        templates: Vec<Vec<u8>>,
        seq: Vec<[u32; 2]>,
    }

    /// Where a sample record keeps its sequence number.
    const SEQ_AT: std::ops::Range<usize> = 16..20;

    impl Load {
        fn new(requests: u32, ready: u32) -> Self {
            let mut templates = Vec::new();
            for conn in 0..CONNS {
                for (dir, obs, payload) in [
                    (direction::TO_SERVER, observer::CLIENT_SOCKET, REQ),
                    (direction::TO_SERVER, observer::SERVER_SOCKET, REQ),
                    (direction::TO_CLIENT, observer::SERVER_SOCKET, RESP),
                    (direction::TO_CLIENT, observer::CLIENT_SOCKET, RESP),
                ] {
                    let len = u32::try_from(payload.len()).unwrap_or(0);
                    let rec = sample_of(&view_of(conn, obs), dir, 0x5eed, payload, len);
                    assert_eq!(rec[SEQ_AT], 0x5eed_u32.to_le_bytes());
                    templates.push(rec);
                }
            }
            Self {
                left: 4 * requests,
                ready,
                next: 0,
                templates,
                seq: vec![[1, 1]; usize::from(CONNS)],
            }
        }
    }

    impl Records for Load {
        fn with_next(&mut self, f: impl FnOnce(&[u8])) -> bool {
            if self.left == 0 || self.ready == 0 {
                return false;
            }
            self.left -= 1;
            self.ready -= 1;
            let i = self.next;
            self.next += 1;
            let conn = (i / 4) as usize % usize::from(CONNS);
            let kind = (i % 4) as usize;
            let rec = &mut self.templates[conn * 4 + kind];
            let d = kind / 2;
            let seq = &mut self.seq[conn][d];
            rec[SEQ_AT].copy_from_slice(&seq.to_le_bytes());
            // The second view of a segment is its last sighting.
            if kind % 2 == 1 {
                let len = if d == 0 { REQ.len() } else { RESP.len() };
                *seq = seq.wrapping_add(u32::try_from(len).unwrap_or(0));
            }
            f(rec);
            true
        }
    }

    fn cpu_seconds() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill in.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) };
        #[expect(clippy::cast_precision_loss, reason = "seconds of CPU time")]
        let s = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        s
    }

    // Overrides for a run under callgrind, say.
    let env = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("BENCH_ROUNDS", 5) as usize;
    let scale = env("BENCH_REQUESTS", 200_000);
    let contract = Arc::new(Contract::parse(CONTRACT, "bench.yaml").expect("valid contract"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (mode, requests, burst) in [
        ("as fast as taken", scale, None),
        ("paced, 40k req/s", scale / 4, Some(PACED_BURST)),
    ] {
        let mut per_m = Vec::new();
        for round in 0..rounds {
            let shared = Arc::new(Shared::default());
            let mut engine = Engine::new(
                contract.clone(),
                EngineOptions {
                    requests_from_kernel: true,
                    emit_occurrences: true,
                    ..EngineOptions::default()
                },
            );
            let mut load = Load::new(requests, burst.unwrap_or(u32::MAX));
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let handled = rt.block_on(async {
                let (tx, mut rx) = mpsc::channel(8192 / BATCH);
                let reader = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(TICK);
                    let mut staged = Staged::new();
                    loop {
                        if let Some(b) = burst {
                            tick.tick().await;
                            load.ready = b;
                        }
                        if !drain(&mut load, &tx, &shared, &mut staged).await {
                            return false;
                        }
                        if load.left == 0 {
                            return true;
                        }
                    }
                });
                let mut handled = 0u64;
                // As the agent's loop: wake, take what is queued, outputs.
                while let Some(batch) = rx.recv().await {
                    handled += batch.len() as u64;
                    batch.into_iter().for_each(|ev| engine.handle(ev));
                    while let Ok(batch) = rx.try_recv() {
                        handled += batch.len() as u64;
                        batch.into_iter().for_each(|ev| engine.handle(ev));
                    }
                    engine.drain().for_each(drop);
                }
                assert!(reader.await.expect("reader"));
                handled
            });
            let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
            let m = cpu / f64::from(requests) * 1e6;
            println!(
                "{mode}, round {round}: {handled} events, CPU {cpu:.3} s, wall {wall:.3} s: {m:.3} CPU s per M requests"
            );
            per_m.push(m);
        }
        per_m.sort_by(f64::total_cmp);
        println!(
            "pipeline (ring records -> engine), {mode}, median of {rounds}: {:.3} CPU s per M requests (min {:.3})",
            per_m[rounds / 2],
            per_m[0]
        );
    }
}

//! One function per fuzz target: bytes in, the parser run, invariants
//! checked. The libFuzzer binaries (`fuzz_targets/*.rs`) call these, and the
//! stable regression test `agent/tests/fuzz_corpus.rs` runs them over the
//! saved corpus and every past crash, so both always run the same code.
//!
//! A target must never panic on any input: a panic here is a bug in the
//! parser (bad input is counted and skipped, never a panic). `assert!`s
//! check invariants the parsers document.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use agent::{
    capture::RecordDecoder,
    cli::report,
    contract::Contract,
    event::{Direction, Event},
    pcap::{PcapReader, ip::parse_ip, link::LinkType},
    policy::{Engine, EngineOptions, View},
    protocol::{
        self,
        h2::{CredentialHeaders, H2Connection, H2Limits},
        http, http_lenient, tls,
    },
    runtime::{config, snapshot::Snapshot},
    sinks::{
        api,
        audit::{
            self, AuditLog, AuditOptions, HmacKey, RecordKind, UsageQuota, UsageRecord,
            ViolationRecord,
        },
    },
};
use agent_common::{
    FlowEndRecord, FlowKey, FlowStats, SampleHeader, TlsDataHeader, TlsTrigger, decode::Record,
};

/// A target's function: one input, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, as `cargo xtask fuzz --list` and the regression
/// test know them. Each has `fuzz_targets/<name>.rs` and a corpus in
/// `corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("ring_records", ring_records),
    ("pcap", capture_file),
    ("pcapng", capture_file),
    ("ip_packet", ip_packet),
    ("tls", tls_handshake),
    ("http1", http1),
    ("http_lenient", http_lenient),
    ("h2", h2),
    ("engine_replay", engine_replay),
    ("contract", contract),
    ("audit_verify", audit_verify),
    ("api_request", api_request),
    ("agent_config", agent_config),
    ("audit_key", audit_key_file),
    ("jwt", jwt),
];

/// The golden captures' contract: what `engine_replay` and `ring_records`
/// judge against, so seeds from the captures reach the detections.
const CONTRACT: &str = include_str!("../../../tests/fixtures/contract.yaml");

/// Compiled once: a view costs far more than most inputs.
fn golden_view() -> View {
    static V: OnceLock<View> = OnceLock::new();
    V.get_or_init(|| {
        let c = Contract::parse(CONTRACT, "tests/fixtures/contract.yaml").expect("valid contract");
        View::new(Arc::new(c))
    })
    .clone()
}

/// Small flow-table bounds, so inputs of a few KB reach eviction and the
/// buffer budget.
fn small_engine(requests_from_kernel: bool) -> Engine {
    let mut opts = EngineOptions {
        requests_from_kernel,
        emit_occurrences: true,
        ..EngineOptions::default()
    };
    opts.flow.max_flows = 8;
    opts.flow.max_buffered = 64 * 1024;
    opts.flow.prefix_cap = 4 * 1024;
    Engine::with_view(golden_view(), opts)
}

fn run_engine(engine: &mut Engine, events: impl IntoIterator<Item = Event>) {
    let mut last = 0;
    for ev in events {
        if let Event::Packet(p) = &ev {
            last = last.max(p.ts);
        }
        engine.handle(ev);
        engine.drain().for_each(drop);
    }
    engine.tick(last.saturating_add(3600 * 1_000_000_000));
    let _ = (
        engine.flows(),
        engine.violations(),
        engine.client_rates(last),
    );
    engine.finish();
    engine.drain().for_each(drop);
}

/// Splits `data` into `[len: u16 LE][len bytes]` chunks (the last one may be
/// short).
fn chunks(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let [a, b, rest @ ..] = data else {
            return None;
        };
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        data = tail;
        Some(chunk)
    })
}

/// Ring-buffer records as the kernel writes them (`[len: u16][record]`
/// repeated): each through every `agent_common::decode` decoder, then the
/// live reader's record → event conversion, and the events through the
/// engine as the live agent runs it.
pub fn ring_records(data: &[u8]) {
    let mut decoder = RecordDecoder::new(1_700_000_000_000_000_000);
    let mut events = Vec::new();
    for rec in chunks(data) {
        let _ = SampleHeader::try_from(rec);
        let _ = FlowEndRecord::try_from(rec);
        let _ = TlsDataHeader::try_from(rec);
        let _ = TlsTrigger::try_from(rec);
        let _ = FlowKey::try_from(rec);
        let _ = FlowStats::try_from(rec);
        match Record::try_from(rec) {
            Ok(Record::Sample { header, payload }) => {
                assert_eq!(payload.len(), header.captured_len as usize);
            }
            Ok(Record::TlsData { header, data }) => {
                assert_eq!(data.len(), header.captured_len as usize);
            }
            Ok(Record::FlowEnd(_)) | Err(_) => {}
        }
        events.extend(decoder.convert(rec).into_iter().flatten());
    }
    run_engine(&mut small_engine(true), events);
}

/// Writes `data` to a fresh file: the capture reader and `audit verify`
/// take paths. tmpfs when there is one, so fsyncs cost nothing.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// A pcap or pcapng file (the `pcap` and `pcapng` targets differ only in
/// their corpus): every packet read, the counters add up.
pub fn capture_file(data: &[u8]) {
    let dir = scratch_dir();
    let path = dir.path().join("input.pcap");
    std::fs::write(&path, data).expect("write the input");
    let Ok(mut reader) = PcapReader::open(&path) else {
        return;
    };
    while let Ok(Some(_)) = reader.next_packet() {}
    let stats = reader.stats();
    assert_eq!(stats.frames, stats.packets + stats.skipped(), "{stats:?}");
}

/// One frame: `[linktype: u16 LE][frame]`, link layer stripped, then the
/// IPv4/IPv6 + TCP decoder.
pub fn ip_packet(data: &[u8]) {
    let [a, b, frame @ ..] = data else { return };
    let Some(link) = LinkType::from_number(i32::from(u16::from_le_bytes([*a, *b]))) else {
        let _ = parse_ip(frame, 0);
        return;
    };
    if let Ok(offset) = link.ip_offset(frame) {
        let ip = frame.get(offset..).expect("ip_offset within the frame");
        if let Ok(Some(p)) = parse_ip(ip, 0) {
            assert!(p.payload.len() <= ip.len());
        }
    }
}

/// TLS records and handshake messages, the way the flow table offers them:
/// the first bytes of a direction.
pub fn tls_handshake(data: &[u8]) {
    let _ = tls::looks_like_client_hello(data);
    let _ = tls::parse_client_hello(data);
    let _ = tls::parse_server_hello(data);
    let _ = tls::parse_client_certificate(data);
    let _ = protocol::classify(data);
    let _ = protocol::orientation_hint(data);
}

/// HTTP/1.x request heads (httparse and the agent's head scanner), h2c
/// upgrades, response status lines.
pub fn http1(data: &[u8]) {
    let creds = CredentialHeaders::with_extra(["x-api-key", "x-auth"]);
    let scan = http::scan_requests_with(data, &creds);
    let _ = format!("{scan:?}");
    let _ = http::parse_requests(data);
    let _ = http::head_upgrades_to_h2c(data);
    let _ = http::is_response_start(data);
    let _ = http::starts_with_method(data);
    let _ = protocol::classify(data);
}

/// The JWT claims reader, alone and behind `Authorization: Bearer`: any
/// bytes, never a panic, and what is kept never shows the token.
pub fn jwt(data: &[u8]) {
    let facts = agent::identity::token::read(data);
    if let Some(f) = facts {
        let shown = format!("{f:?}");
        if let Some(kid) = f.key_id {
            let _ = kid.to_string();
            assert!(kid.as_str().len() <= agent::identity::token::MAX_KID);
        }
        if data.len() > 8 {
            let text = String::from_utf8_lossy(data);
            assert!(!shown.contains(&*text), "facts show the token");
        }
    }
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(data);
    let cred = CredentialHeaders::STANDARD.hash("authorization", &header);
    let trimmed = agent::identity::token::read(data.trim_ascii());
    assert_eq!(
        cred.and_then(|c| c.token),
        trimmed,
        "same facts behind Bearer"
    );
}

/// The lenient request-line parser (extension methods, odd whitespace,
/// HTTP/0.9).
pub fn http_lenient(data: &[u8]) {
    if let http_lenient::Lenient::Complete(head) = http_lenient::parse(data) {
        let _ = format!("{head:?}");
    }
}

/// One HTTP/2 connection: byte 0 picks prior knowledge or after an h2c
/// upgrade, then `[op: u8][len: u16 LE]` records. `op` bit 0 is the
/// direction; bit 1 set: a gap of `len` bytes (bit 2: times 65536), else
/// `len` bytes follow and are fed. Frames, HPACK of both directions, lost
/// bytes and resyncs.
pub fn h2(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let limits = H2Limits {
        max_header_block: 8 * 1024,
        max_table_size: 4 * 1024,
        max_streams: 16,
    };
    let mut conn = if mode & 1 == 0 {
        H2Connection::new(limits)
    } else {
        H2Connection::after_upgrade(limits)
    };
    let creds = CredentialHeaders::STANDARD;
    let mut out = Vec::new();
    while let [op, a, b, tail @ ..] = rest {
        let dir = if op & 1 == 0 {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let len = usize::from(u16::from_le_bytes([*a, *b]));
        if op & 2 != 0 {
            let len = if op & 4 != 0 { len << 16 } else { len };
            conn.gap(dir, len as u64, &mut out);
            rest = tail;
        } else {
            let (bytes, tail) = tail.split_at(len.min(tail.len()));
            conn.feed(dir, bytes, &creds, &mut out);
            rest = tail;
        }
        // Bounded by the limits, whatever the input. Per direction: a
        // header frame's payload (block + padding and priority), the block
        // under assembly, and the resync scan (a frame of at most 64 KiB and
        // the next header); twice that for Vec growth.
        let per_side = 2 * (2 * limits.max_header_block + 265 + 64 * 1024 + 18);
        assert!(
            conn.buffered() <= 2 * per_side + 8 * limits.max_streams,
            "{} bytes buffered",
            conn.buffered()
        );
    }
    conn.finish(&creds, &mut out);
    let _ = (format!("{out:?}"), conn.stats());
}

/// A capture file through the engine (`rampwatch replay`): flow table,
/// orientation, reassembly, TLS/HTTP/HTTP/2 dissection, detections.
pub fn engine_replay(data: &[u8]) {
    let dir = scratch_dir();
    let path = dir.path().join("input.pcap");
    std::fs::write(&path, data).expect("write the input");
    let Ok(reader) = PcapReader::open(&path) else {
        return;
    };
    let packets = reader.map_while(Result::ok).map(Event::Packet);
    run_engine(&mut small_engine(false), packets);
}

/// The contract YAML (seeded from the example and the test fixtures, with
/// a dictionary of its keys): the strict parser, then everything the agent
/// derives from a contract it accepted.
pub fn contract(data: &[u8]) {
    let Ok(c) = Contract::parse_bytes(data, "fuzz.yaml") else {
        return;
    };
    let _ = (c.server_rules(), c.host_names(), c.credential_headers());
    for t in [0, i64::MAX / 2, i64::MAX] {
        let _ = (c.stage_at(t), c.next_stage_change_after(t));
    }
    drop(Engine::new(Arc::new(c), EngineOptions::default()));
}

fn audit_key() -> HmacKey {
    HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef-fuzz-key".to_vec()).expect("long key")
}

/// A damaged audit log: `data` split at NUL bytes (never in a JSON line)
/// into segments `audit-000001.jsonl`, ... (at most 4). `audit verify` with
/// and without the key, then the agent's open (torn-tail recovery) and one
/// append: a log that verified must still verify after that.
pub fn audit_verify(data: &[u8]) {
    let dir = scratch_dir();
    for (i, seg) in data.split(|&b| b == 0).take(4).enumerate() {
        let path = dir.path().join(format!("audit-{:06}.jsonl", i + 1));
        std::fs::write(path, seg).expect("write a segment");
    }
    let key = audit_key();
    let keyed = audit::verify(dir.path(), Some(&key));
    let _ = format!("{keyed}");
    // What `rampwatch report` builds from whatever verified.
    let mut entries = Vec::new();
    let visited = audit::verify_visit(dir.path(), None, &mut |e| entries.push(e));
    if visited.is_intact() {
        let node = report::NodeLog {
            dir: dir.path().to_owned(),
            entries,
            head: visited.last.map(|a| (a.seq, a.hash)),
        };
        if let Ok(r) = report::build("pilot", &[node]) {
            serde_json::to_vec(&r).expect("a report serialises");
            let mut md = Vec::new();
            report::markdown(&r, &mut md).expect("a report renders");
        }
    }
    let opts = AuditOptions {
        max_segment_bytes: 2048,
    };
    if let Ok((mut log, _)) = AuditLog::open(dir.path(), Some(audit_key()), opts) {
        let appended = log.append(RecordKind::ViolationOpened(ViolationRecord {
            violation: "quota_overshoot".to_owned(),
            endpoint: "payments".to_owned(),
            client: "acme".to_owned(),
            severity: "warning".to_owned(),
            count: 1,
            detail: "fuzz".to_owned(),
            outcome: None,
            throttled: Some(0),
            id: None,
            open_secs: None,
            client_workload: None,
        }));
        // And a usage record: the kind with a map and a nested quota.
        let usage = appended.is_ok().then(|| {
            log.append(RecordKind::Usage(UsageRecord {
                client: "acme".to_owned(),
                endpoint: "payments".to_owned(),
                stage: Some("pilot".to_owned()),
                from: "2026-12-02T06:00:00Z".to_owned(),
                to: "2026-12-02T06:01:00Z".to_owned(),
                interval_secs: 60,
                requests: 3,
                total: 9,
                quota: Some(UsageQuota {
                    rps: "0.5".to_owned(),
                    burst: "4".to_owned(),
                }),
                responses: [("2xx".to_owned(), 3)].into_iter().collect(),
            }))
        });
        drop(log);
        if keyed.is_intact() && appended.is_ok() && usage.is_some_and(|u| u.is_ok()) {
            let after = audit::verify(dir.path(), Some(&key));
            assert!(after.is_intact(), "an intact log broke: {after}");
        }
    }
}

/// What the local API decodes from a socket peer: one request line (cut at
/// the server's limit), and the answer it would send.
pub fn api_request(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let state = Snapshot::new();
    if let Ok(Ok(request)) = rt.block_on(api::read_request(data))
        && let Some(response) = api::answer(request, state.as_ref())
    {
        serde_json::to_vec(&response).expect("a response serialises");
    }
}

/// The agent's config file (`rampwatch agent --config FILE`), which is read
/// as UTF-8 text: every diagnostic must name a line inside the text.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(diags) = config::check_text(text) {
        assert!(!diags.is_empty(), "a rejection says why");
        // Line breaks as YAML counts them: `\r\n`, `\n` and a bare `\r`
        // (which `str::lines` does not split on).
        let breaks = text.replace("\r\n", "\n").matches(['\n', '\r']).count();
        let lines = breaks + 2;
        for d in &diags {
            assert!(d.line <= lines, "line {} of {lines}: {}", d.line, d.message);
        }
    }
}

/// The audit HMAC key file's content (raw bytes or hex): a key is at least
/// 32 bytes, its `Debug` never shows them, and a refusal names the file.
pub fn audit_key_file(data: &[u8]) {
    match HmacKey::from_file_bytes(Path::new("/fuzz/key"), data.to_vec()) {
        Ok(key) => {
            let shown = format!("{key:?}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("/fuzz/key"), "{msg}");
        }
    }
}

//! `cargo xtask bench replay`: builds a large capture out of the golden-test
//! fixture flows and times `rampwatch replay` against `tshark` extracting the
//! same facts (SNI, TLS version, cipher, HTTP Host and method) from it.
//!
//! The capture is synthesised, not recorded: every fixture TCP connection is a
//! template, and each copy gets its own client address, client port and
//! initial sequence numbers (both directions, with acknowledgements shifted to
//! match) and freshly computed IPv4 and TCP checksums, so every copy is a
//! distinct, valid flow. Copies are interleaved packet by packet across a
//! window of concurrently open flows, the way a busy link mixes connections.
//!
//! The result is printed, never asserted: speed depends on the machine.

use std::{
    collections::HashMap,
    env, fs,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use pcap_parser::{Linktype, PcapCapture};

/// Fixture captures (Ethernet link type, classic pcap) used as flow templates.
/// The Linux-cooked, VLAN, raw-IP and pcapng variants duplicate
/// `http_bearer`/`tls12_cbc` and are left out.
const TEMPLATES: &[&str] = &[
    "http_bearer.pcap",
    "tls12.pcap",
    "tls13.pcap",
    "tls11_weak.pcap",
    "tls12_cbc.pcap",
    "mtls12.pcap",
    "quota_burst.pcap",
    "no_credentials.pcap",
    "unlisted_path.pcap",
    "revoked.pcap",
    "stale.pcap",
    "ipv6.pcap",
    "pipelined.pcap",
    "h2c.pcap",
    "tls12_cbc_split.pcap",
];

/// Size of the generated capture unless `RAMPWATCH_BENCH_MB` says otherwise.
const DEFAULT_TARGET_MB: u64 = 400;
/// Flows open at the same time; packets are taken round-robin from them.
const CONCURRENT_FLOWS: usize = 256;
/// Spacing of synthetic packet timestamps: 1 µs, i.e. a 1 M packets/s link.
const PACKET_SPACING_US: u64 = 1;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERNET_HEADER: usize = 14;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Ports tshark must be told to decode: the fixtures use non-standard ones.
const TSHARK_DECODE_AS: [&str; 2] = ["tcp.port==18443,tls", "tcp.port==18080-18089,http"];
const TSHARK_FIELDS: [&str; 5] = [
    "tls.handshake.extensions_server_name",
    "tls.handshake.version",
    "tls.handshake.ciphersuite",
    "http.host",
    "http.request.method",
];

/// Runs the benchmark: generates the capture in `work_dir`, then times
/// `rampwatch replay` and `tshark` on it and prints both with their ratio.
pub fn run(rampwatch_bin: &Path, work_dir: &Path) -> Result<()> {
    let fixtures = fixtures_dir();
    let contract = fixtures.join("contract.yaml");
    let target = target_bytes()?;
    fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create the bench directory {}", work_dir.display()))?;
    let capture = work_dir.join("bench-replay.pcap");

    println!(
        "generating {} MB of mixed TLS/HTTP flows from {} into {}",
        target / 1_000_000,
        fixtures.display(),
        capture.display()
    );
    let started = Instant::now();
    let stats = generate(&fixtures, &capture, target)?;
    println!(
        "generated {} packets, {} flows, {} bytes in {:.1} s",
        stats.packets,
        stats.flows,
        stats.bytes,
        started.elapsed().as_secs_f64()
    );

    let tshark = ensure_tshark()?;

    let mut replay = Command::new(rampwatch_bin);
    replay
        .arg("replay")
        .arg("--contract")
        .arg(&contract)
        .args(["-o", "json"])
        .arg(&capture);
    // Exit 1 only means "violations found", which this mix always has.
    let rampwatch = time_command("rampwatch replay", &mut replay, &[0, 1]);

    let mut tshark_cmd = Command::new(tshark);
    tshark_cmd.arg("-n").arg("-r").arg(&capture);
    for decode in TSHARK_DECODE_AS {
        tshark_cmd.args(["-d", decode]);
    }
    tshark_cmd.args(["-T", "fields"]);
    for field in TSHARK_FIELDS {
        tshark_cmd.args(["-e", field]);
    }
    let tshark = time_command("tshark", &mut tshark_cmd, &[0]);

    println!();
    println!(
        "{:<10} {:>12} {:>14} {:>9} {:>13} {:>9}",
        "tool", "packets", "bytes", "seconds", "packets/s", "MB/s"
    );
    for (name, result) in [("rampwatch", &rampwatch), ("tshark", &tshark)] {
        match result {
            Ok(elapsed) => print_row(name, &stats, *elapsed),
            Err(err) => println!("{name:<10} failed: {err:#}"),
        }
    }
    match (&rampwatch, &tshark) {
        (Ok(rw), Ok(ts)) => {
            println!(
                "ratio rampwatch/tshark: {:.1}x the packets/s of tshark",
                ts.as_secs_f64() / rw.as_secs_f64().max(f64::EPSILON)
            );
            Ok(())
        }
        (Err(_), _) => bail!("rampwatch replay did not complete; the ratio is unavailable"),
        (_, Err(_)) => bail!("tshark did not complete; the ratio is unavailable"),
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenStats {
    pub packets: u64,
    pub flows: u64,
    /// File size including the pcap headers.
    pub bytes: u64,
}

/// Writes a classic pcap (Ethernet, µs timestamps) of at least `target_bytes`
/// to `out`, made of rewritten copies of the fixture flows in `fixtures`.
pub fn generate(fixtures: &Path, out: &Path, target_bytes: u64) -> Result<GenStats> {
    let templates = load_templates(fixtures)?;
    let base_us = templates
        .first()
        .and_then(|t| t.packets.first())
        .map_or(0, |p| p.ts_us);

    let file = fs::File::create(out)
        .with_context(|| format!("cannot create the bench capture {}", out.display()))?;
    let mut w = BufWriter::with_capacity(4 << 20, file);
    write_pcap_header(&mut w)?;
    let mut stats = GenStats {
        packets: 0,
        flows: 0,
        bytes: 24,
    };

    let mut next_flow = 0u64;
    let mut active: Vec<Instance> = Vec::with_capacity(CONCURRENT_FLOWS);
    let mut frame = Vec::with_capacity(64 * 1024);
    let mut slot = 0;
    loop {
        // Keep the window full until the target size is reached, then let
        // the open flows finish so every flow in the file is complete.
        while active.len() < CONCURRENT_FLOWS && stats.bytes < target_bytes {
            active.push(Instance::new(next_flow, templates.len()));
            next_flow += 1;
        }
        if active.is_empty() {
            break;
        }
        slot %= active.len();
        let instance = &mut active[slot];
        let template = &templates[instance.template];
        let Some(packet) = template.packets.get(instance.next) else {
            active.swap_remove(slot);
            stats.flows += 1;
            continue;
        };
        instance.rewrite(packet, &mut frame);
        instance.next += 1;

        let ts_us = base_us + stats.packets * PACKET_SPACING_US;
        write_record(&mut w, ts_us, &frame)?;
        stats.packets += 1;
        stats.bytes += 16 + frame.len() as u64;
        slot += 1;
    }
    w.flush()
        .with_context(|| format!("cannot write the bench capture {}", out.display()))?;
    Ok(stats)
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

fn target_bytes() -> Result<u64> {
    match env::var("RAMPWATCH_BENCH_MB") {
        Ok(mb) => {
            let mb: u64 = mb.trim().parse().with_context(|| {
                format!("RAMPWATCH_BENCH_MB={mb:?} is not a whole number of megabytes")
            })?;
            Ok(mb * 1_000_000)
        }
        Err(_) => Ok(DEFAULT_TARGET_MB * 1_000_000),
    }
}

/// Runs `cmd` with stdout discarded and returns its wall-clock time, or an
/// error carrying its stderr when it exits with a code outside `ok_codes`.
fn time_command(name: &str, cmd: &mut Command, ok_codes: &[i32]) -> Result<Duration> {
    println!("timing {name} …");
    let started = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    let elapsed = started.elapsed();
    let code = output.status.code();
    if !code.is_some_and(|c| ok_codes.contains(&c)) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{name} exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(elapsed)
}

fn print_row(name: &str, stats: &GenStats, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "{:<10} {:>12} {:>14} {:>9.2} {:>13.0} {:>9.1}",
        name,
        stats.packets,
        stats.bytes,
        secs,
        stats.packets as f64 / secs,
        stats.bytes as f64 / 1e6 / secs
    );
}

/// Finds tshark, installing it with apt-get when missing (the bench runs as
/// root under `cargo xtask`).
fn ensure_tshark() -> Result<&'static str> {
    let present = |name| {
        Command::new(name)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present("tshark") {
        return Ok("tshark");
    }
    println!("tshark not found; installing it with apt-get");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "tshark"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get to install tshark")?;
    ensure!(
        status.success() && present("tshark"),
        "installing tshark failed ({status}); install it with `apt-get install tshark` as root and rerun"
    );
    Ok("tshark")
}

// ------------------------------------------------------------- templates

/// One TCP connection from a fixture, packets in capture order.
struct Template {
    packets: Vec<TemplatePacket>,
}

struct TemplatePacket {
    ts_us: u64,
    /// The whole Ethernet frame.
    frame: Vec<u8>,
    v6: bool,
    /// Offset of the TCP header in `frame`.
    tcp: usize,
    /// End of the IP packet in `frame` (trailing Ethernet padding excluded).
    end: usize,
    from_client: bool,
}

/// An IP address (4 or 16 bytes) and port.
type SocketKey = (Vec<u8>, u16);

/// A connection being collected: its client once the SYN is seen, and its
/// packets (timestamp, frame, parsed view).
type PendingFlow = (Option<SocketKey>, Vec<(u64, Vec<u8>, TcpView)>);

/// Addresses and ports of a TCP packet inside a frame.
struct TcpView {
    v6: bool,
    tcp: usize,
    end: usize,
    src: Vec<u8>,
    dst: Vec<u8>,
    sport: u16,
    dport: u16,
    flags: u8,
}

fn load_templates(fixtures: &Path) -> Result<Vec<Template>> {
    let mut templates = Vec::new();
    for name in TEMPLATES {
        let path = fixtures.join(name);
        let bytes =
            fs::read(&path).with_context(|| format!("cannot read fixture {}", path.display()))?;
        let capture = PcapCapture::from_file(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "fixture {} is not a readable pcap file: {e:?}",
                path.display()
            )
        })?;
        ensure!(
            capture.header.network == Linktype::ETHERNET && !capture.header.is_bigendian(),
            "fixture {} must be little-endian pcap with Ethernet frames",
            path.display()
        );
        let nanos = capture.header.is_nanosecond_precision();

        // Connections keyed by their unordered endpoint pair, in order of
        // first appearance; the client is whoever sent the bare SYN.
        let mut order: Vec<(SocketKey, SocketKey)> = Vec::new();
        let mut flows: HashMap<(SocketKey, SocketKey), PendingFlow> = HashMap::new();
        for block in &capture.blocks {
            if block.caplen != block.origlen {
                continue;
            }
            let Some(view) = parse_frame(block.data) else {
                continue;
            };
            let a = (view.src.clone(), view.sport);
            let b = (view.dst.clone(), view.dport);
            let key = if a <= b { (a, b) } else { (b, a) };
            let entry = flows.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (None, Vec::new())
            });
            if view.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                entry.0 = Some((view.src.clone(), view.sport));
            }
            let sub = if nanos {
                block.ts_usec / 1000
            } else {
                block.ts_usec
            };
            let ts_us = u64::from(block.ts_sec) * 1_000_000 + u64::from(sub);
            entry.1.push((ts_us, block.data.to_vec(), view));
        }
        for key in order {
            let Some((Some(client), packets)) = flows.remove(&key) else {
                continue; // no handshake seen: not a usable template
            };
            let packets = packets
                .into_iter()
                .map(|(ts_us, frame, view)| TemplatePacket {
                    from_client: (view.src.as_slice(), view.sport)
                        == (client.0.as_slice(), client.1),
                    ts_us,
                    frame,
                    v6: view.v6,
                    tcp: view.tcp,
                    end: view.end,
                })
                .collect();
            templates.push(Template { packets });
        }
    }
    ensure!(
        !templates.is_empty(),
        "no complete TCP connection found in the fixtures under {}; run tests/fixtures/generate.sh",
        fixtures.display()
    );
    Ok(templates)
}

/// Parses Ethernet → IPv4/IPv6 (no extension headers) → TCP; `None` for
/// anything else or anything truncated.
fn parse_frame(frame: &[u8]) -> Option<TcpView> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = ETHERNET_HEADER;
    let (v6, tcp, end, src, dst) = match ethertype {
        ETHERTYPE_IPV4 => {
            let header = frame.get(ip..ip + 20)?;
            let ihl = usize::from(header[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
            if header[0] >> 4 != 4 || header[9] != IPPROTO_TCP || ihl < 20 || total < ihl {
                return None;
            }
            (
                false,
                ip + ihl,
                ip + total,
                header[12..16].to_vec(),
                header[16..20].to_vec(),
            )
        }
        ETHERTYPE_IPV6 => {
            let header = frame.get(ip..ip + 40)?;
            let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if header[0] >> 4 != 6 || header[6] != IPPROTO_TCP {
                return None;
            }
            (
                true,
                ip + 40,
                ip + 40 + payload,
                header[8..24].to_vec(),
                header[24..40].to_vec(),
            )
        }
        _ => return None,
    };
    let header = frame.get(tcp..tcp + 20)?;
    if end > frame.len() || tcp + usize::from(header[12] >> 4) * 4 > end {
        return None;
    }
    Some(TcpView {
        v6,
        tcp,
        end,
        src,
        dst,
        sport: u16::from_be_bytes([header[0], header[1]]),
        dport: u16::from_be_bytes([header[2], header[3]]),
        flags: header[13],
    })
}

// ------------------------------------------------------------- instances

/// One copy of a template with its own client identity and sequence space.
struct Instance {
    template: usize,
    next: usize,
    client_v4: [u8; 4],
    client_v6: [u8; 16],
    client_port: u16,
    client_seq_delta: u32,
    server_seq_delta: u32,
}

impl Instance {
    fn new(n: u64, templates: usize) -> Self {
        let bytes = n.to_be_bytes();
        // 127.1.0.0/16 upwards: loopback like the fixtures, never the server
        // at 127.0.0.1. IPv6 clients move to fd00::/8 (ULA), since loopback
        // has a single address.
        let client_v4 = [127, 1 + (bytes[5] % 254), bytes[6], bytes[7]];
        let mut client_v6 = [0u8; 16];
        client_v6[0] = 0xfd;
        client_v6[8..].copy_from_slice(&bytes);
        let mix = splitmix64(n);
        Self {
            template: (n % templates as u64) as usize,
            next: 0,
            client_v4,
            client_v6,
            // Linux's ephemeral range: always above the server ports, so
            // tshark's lower-port-first dissector choice picks the server's
            // (TLS/HTTP) and not whatever a random client port is registered
            // for.
            client_port: 32_768 + (n % 28_232) as u16,
            client_seq_delta: mix as u32,
            server_seq_delta: (mix >> 32) as u32,
        }
    }

    /// Writes the rewritten copy of `packet` into `out`.
    fn rewrite(&self, packet: &TemplatePacket, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&packet.frame);
        let ip = ETHERNET_HEADER;
        let tcp = packet.tcp;
        let client: &[u8] = if packet.v6 {
            &self.client_v6
        } else {
            &self.client_v4
        };
        let (addr_at, port_at) = match (packet.v6, packet.from_client) {
            (false, true) => (ip + 12, tcp),
            (false, false) => (ip + 16, tcp + 2),
            (true, true) => (ip + 8, tcp),
            (true, false) => (ip + 24, tcp + 2),
        };
        out[addr_at..addr_at + client.len()].copy_from_slice(client);
        out[port_at..port_at + 2].copy_from_slice(&self.client_port.to_be_bytes());

        let (own, peer) = if packet.from_client {
            (self.client_seq_delta, self.server_seq_delta)
        } else {
            (self.server_seq_delta, self.client_seq_delta)
        };
        add_u32(&mut out[tcp + 4..tcp + 8], own);
        if out[tcp + 13] & TCP_ACK != 0 {
            add_u32(&mut out[tcp + 8..tcp + 12], peer);
        }

        if !packet.v6 {
            out[ip + 10..ip + 12].fill(0);
            let ihl = tcp - ip;
            let sum = checksum(&[&out[ip..ip + ihl]]);
            out[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
        }
        out[tcp + 16..tcp + 18].fill(0);
        let sum = tcp_checksum(&out[ip..packet.end], packet.v6, tcp - ip);
        out[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
    }
}

fn add_u32(field: &mut [u8], delta: u32) {
    let mut value = [0u8; 4];
    value.copy_from_slice(field);
    let sum = u32::from_be_bytes(value).wrapping_add(delta);
    field.copy_from_slice(&sum.to_be_bytes());
}

/// SplitMix64: cheap, well-spread per-flow values without a rand dependency.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// TCP checksum of the segment in `packet` (an IP packet whose TCP header
/// starts at `tcp`), over the IPv4 or IPv6 pseudo-header.
fn tcp_checksum(packet: &[u8], v6: bool, tcp: usize) -> u16 {
    let segment = &packet[tcp..];
    let len = segment.len() as u32;
    if v6 {
        let mut pseudo = [0u8; 8];
        pseudo[..4].copy_from_slice(&len.to_be_bytes());
        pseudo[7] = IPPROTO_TCP;
        checksum(&[&packet[8..40], &pseudo, segment])
    } else {
        let mut pseudo = [0u8; 4];
        pseudo[1] = IPPROTO_TCP;
        pseudo[2..].copy_from_slice(&(len as u16).to_be_bytes());
        checksum(&[&packet[12..20], &pseudo, segment])
    }
}

/// RFC 1071 Internet checksum over the concatenation of `parts` (each part
/// but the last must have even length, which holds for the headers here).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for word in &mut words {
            sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ------------------------------------------------------------- pcap output

fn write_pcap_header(w: &mut impl Write) -> Result<()> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // µs timestamps
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    header.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    header.extend_from_slice(&262_144u32.to_le_bytes()); // snaplen
    header.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    w.write_all(&header).context("cannot write the pcap header")
}

fn write_record(w: &mut impl Write, ts_us: u64, frame: &[u8]) -> Result<()> {
    let len = u32::try_from(frame.len()).context("frame larger than 4 GiB")?;
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
    header[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
    header[8..12].copy_from_slice(&len.to_le_bytes());
    header[12..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)
        .and_then(|()| w.write_all(frame))
        .context("cannot write a pcap record")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Generates a small capture and reads it back: every packet must parse,
    /// carry valid IPv4 and TCP checksums and monotonic timestamps, and every
    /// copy must be its own connection whose handshake still lines up.
    #[test]
    fn generated_capture_is_valid_tcp() {
        let dir = env::temp_dir().join(format!("rampwatch-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("small.pcap");
        let stats = generate(&fixtures_dir(), &out, 3_000_000).unwrap();
        let bytes = fs::read(&out).unwrap();
        fs::remove_dir_all(&dir).unwrap();

        assert_eq!(stats.bytes, bytes.len() as u64);
        assert!(stats.bytes >= 3_000_000);
        let capture = PcapCapture::from_file(&bytes).unwrap();
        assert_eq!(capture.header.network, Linktype::ETHERNET);
        assert_eq!(capture.blocks.len() as u64, stats.packets);

        let mut last_ts = 0;
        // Per client socket: (flags, seq, ack) of each packet.
        let mut flows: HashMap<SocketKey, Vec<(u8, u32, u32)>> = HashMap::new();
        let mut saw_v6 = false;
        for block in &capture.blocks {
            let ts = u64::from(block.ts_sec) * 1_000_000 + u64::from(block.ts_usec);
            assert!(ts >= last_ts, "timestamps go backwards");
            last_ts = ts;
            let view = parse_frame(block.data).expect("every record is Ethernet/IP/TCP");
            let ip = &block.data[ETHERNET_HEADER..view.end];
            let tcp = view.tcp - ETHERNET_HEADER;
            if view.v6 {
                saw_v6 = true;
            } else {
                assert_eq!(checksum(&[&ip[..tcp]]), 0, "bad IPv4 header checksum");
            }
            assert_eq!(tcp_checksum(ip, view.v6, tcp), 0, "bad TCP checksum");
            // The client side is the one that is not a fixture server port.
            let client = if [18080, 18081, 18089, 18443].contains(&view.dport) {
                (view.src.clone(), view.sport)
            } else {
                (view.dst.clone(), view.dport)
            };
            let seg = &block.data[view.tcp..];
            let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
            let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
            flows
                .entry(client)
                .or_default()
                .push((view.flags, seq, ack));
        }
        assert!(saw_v6, "the IPv6 fixture flows are part of the mix");
        assert_eq!(
            flows.len() as u64,
            stats.flows,
            "every copy has its own client address/port"
        );
        let mut isns = HashSet::new();
        for packets in flows.values() {
            let [
                (syn, client_isn, _),
                (synack, server_isn, synack_ack),
                (_, _, ack),
                ..,
            ] = packets[..]
            else {
                panic!("flow shorter than a handshake");
            };
            assert_eq!(syn & (TCP_SYN | TCP_ACK), TCP_SYN);
            assert_eq!(synack & (TCP_SYN | TCP_ACK), TCP_SYN | TCP_ACK);
            assert_eq!(synack_ack, client_isn.wrapping_add(1));
            assert_eq!(ack, server_isn.wrapping_add(1));
            isns.insert(client_isn);
        }
        assert!(
            isns.len() > flows.len() / 2,
            "sequence numbers differ between copies"
        );
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
        assert_eq!(checksum(&[&data[..4], &data[4..]]), !0xddf2);
        assert_eq!(checksum(&[&[0xab]]), !0xab00);
    }

    #[test]
    fn garbage_frames_are_not_templates() {
        assert!(parse_frame(&[]).is_none());
        assert!(parse_frame(&[0u8; 13]).is_none());
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&2000u16.to_be_bytes()); // longer than the frame
        frame[23] = IPPROTO_TCP;
        assert!(parse_frame(&frame).is_none());
    }
}

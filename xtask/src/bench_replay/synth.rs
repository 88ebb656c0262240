//! Synthesising the benchmark capture: fixture flows as templates, copied
//! with new ports, sequence numbers and checksums, written as pcap.

use super::*;

/// One TCP connection from a fixture, packets in capture order.
pub(super) struct Template {
    pub(super) packets: Vec<TemplatePacket>,
}

pub(super) struct TemplatePacket {
    pub(super) ts_us: u64,
    /// The whole Ethernet frame.
    pub(super) frame: Vec<u8>,
    pub(super) v6: bool,
    /// Offset of the TCP header in `frame`.
    pub(super) tcp: usize,
    /// End of the IP packet in `frame` (trailing Ethernet padding excluded).
    pub(super) end: usize,
    pub(super) from_client: bool,
}

/// An IP address (4 or 16 bytes) and port.
pub(super) type SocketKey = (Vec<u8>, u16);

/// A connection being collected: its client once the SYN is seen, and its
/// packets (timestamp, frame, parsed view).
pub(super) type PendingFlow = (Option<SocketKey>, Vec<(u64, Vec<u8>, TcpView)>);

/// Addresses and ports of a TCP packet inside a frame.
pub(super) struct TcpView {
    pub(super) v6: bool,
    pub(super) tcp: usize,
    pub(super) end: usize,
    pub(super) src: Vec<u8>,
    pub(super) dst: Vec<u8>,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) flags: u8,
}

pub(super) fn load_templates(fixtures: &Path) -> Result<Vec<Template>> {
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
pub(super) fn parse_frame(frame: &[u8]) -> Option<TcpView> {
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
pub(super) struct Instance {
    pub(super) template: usize,
    pub(super) next: usize,
    pub(super) client_v4: [u8; 4],
    pub(super) client_v6: [u8; 16],
    pub(super) client_port: u16,
    pub(super) client_seq_delta: u32,
    pub(super) server_seq_delta: u32,
}

impl Instance {
    pub(super) fn new(n: u64, templates: usize) -> Self {
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
    pub(super) fn rewrite(&self, packet: &TemplatePacket, out: &mut Vec<u8>) {
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

pub(super) fn add_u32(field: &mut [u8], delta: u32) {
    let mut value = [0u8; 4];
    value.copy_from_slice(field);
    let sum = u32::from_be_bytes(value).wrapping_add(delta);
    field.copy_from_slice(&sum.to_be_bytes());
}

/// SplitMix64: cheap, well-spread per-flow values without a rand dependency.
pub(super) fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// TCP checksum of the segment in `packet` (an IP packet whose TCP header
/// starts at `tcp`), over the IPv4 or IPv6 pseudo-header.
pub(super) fn tcp_checksum(packet: &[u8], v6: bool, tcp: usize) -> u16 {
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
pub(super) fn checksum(parts: &[&[u8]]) -> u16 {
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

pub(super) fn write_pcap_header(w: &mut impl Write) -> Result<()> {
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

pub(super) fn write_record(w: &mut impl Write, ts_us: u64, frame: &[u8]) -> Result<()> {
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

//! A capture written by hand: Ethernet/IPv4/TCP frames with real headers
//! and checksums, whole TCP conversations (handshake, data, FIN) and a
//! classic pcap writer. Hand-made so the test can plant fresh canaries in
//! every run and needs no root, tcpdump or server.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::canary::Rng;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Nanoseconds since the epoch.
    pub ts: i64,
    pub data: Vec<u8>,
    /// Length on the wire when the capture cut the frame (`incl_len` <
    /// `orig_len`); `None` when captured whole.
    pub orig_len: Option<usize>,
}

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
pub const TCP_LEN: usize = 20;
/// Payload bytes per segment, as on a 1500-byte MTU.
pub const MSS: usize = 1448;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Frames in capture order; time moves 100 µs per frame.
#[derive(Debug)]
pub struct Capture {
    pub frames: Vec<Frame>,
    now: i64,
    next_port: u16,
}

impl Capture {
    pub fn new(start: i64) -> Self {
        Self {
            frames: Vec::new(),
            now: start,
            next_port: 40_000,
        }
    }

    fn push(&mut self, data: Vec<u8>) {
        self.now += 100_000;
        self.frames.push(Frame {
            ts: self.now,
            data,
            orig_len: None,
        });
    }

    /// A new connection from 127.0.0.1:<fresh port> to 127.0.0.1:`port`,
    /// handshake included.
    pub fn connect(&mut self, port: u16) -> Conn<'_> {
        self.next_port += 1;
        let client = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.next_port);
        let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let mut conn = Conn {
            cap: self,
            client,
            server,
            cseq: 1_000_000,
            sseq: 2_000_000,
        };
        conn.segment(true, SYN, &[]);
        conn.cseq += 1;
        conn.segment(false, SYN | ACK, &[]);
        conn.sseq += 1;
        conn.segment(true, ACK, &[]);
        conn
    }

    /// A frame that is not IPv4/TCP at all (ARP ethertype, random body).
    pub fn raw_frame(&mut self, data: Vec<u8>) {
        self.push(data);
    }

    /// The classic pcap file (microsecond timestamps, Ethernet).
    pub fn to_pcap(&self) -> Vec<u8> {
        write_pcap(&self.frames)
    }
}

/// One TCP connection being written.
pub struct Conn<'a> {
    cap: &'a mut Capture,
    client: SocketAddrV4,
    server: SocketAddrV4,
    cseq: u32,
    sseq: u32,
}

impl Conn<'_> {
    fn segment(&mut self, to_server: bool, flags: u8, payload: &[u8]) {
        let (src, dst, seq, ack) = if to_server {
            (self.client, self.server, self.cseq, self.sseq)
        } else {
            (self.server, self.client, self.sseq, self.cseq)
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let frame = tcp_frame(src, dst, seq, ack, flags, payload);
        self.cap.push(frame);
    }

    /// Client → server, cut into MSS-sized segments, each acknowledged.
    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        for chunk in bytes.chunks(MSS) {
            self.send_segment(chunk);
        }
        self
    }

    /// Client → server in exactly one segment (pipelining, or a split
    /// where the test chose the cut).
    pub fn send_segment(&mut self, bytes: &[u8]) -> &mut Self {
        self.segment(true, PSH | ACK, bytes);
        self.cseq = self.cseq.wrapping_add(len32(bytes));
        self.segment(false, ACK, &[]);
        self
    }

    /// Client → server again at an earlier sequence number: a
    /// retransmission that may carry different bytes than the first copy.
    pub fn resend_at(&mut self, back: u32, bytes: &[u8]) -> &mut Self {
        let saved = self.cseq;
        self.cseq = self.cseq.wrapping_sub(back);
        self.segment(true, PSH | ACK, bytes);
        self.cseq = saved;
        self
    }

    /// Client → server with a hole before it: `skip` bytes never seen.
    pub fn send_after_gap(&mut self, skip: u32, bytes: &[u8]) -> &mut Self {
        self.cseq = self.cseq.wrapping_add(skip);
        self.send_segment(bytes)
    }

    /// Server → client.
    pub fn reply(&mut self, bytes: &[u8]) -> &mut Self {
        for chunk in bytes.chunks(MSS) {
            self.segment(false, PSH | ACK, chunk);
            self.sseq = self.sseq.wrapping_add(len32(chunk));
            self.segment(true, ACK, &[]);
        }
        self
    }

    /// Client FIN, server FIN, last ACK.
    pub fn close(&mut self) {
        self.segment(true, FIN | ACK, &[]);
        self.cseq = self.cseq.wrapping_add(1);
        self.segment(false, FIN | ACK, &[]);
        self.sseq = self.sseq.wrapping_add(1);
        self.segment(true, ACK, &[]);
    }

    /// The client resets the connection.
    pub fn reset(&mut self) {
        self.segment(true, RST | ACK, &[]);
    }
}

fn len32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).expect("segments are small")
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

/// Ethernet + IPv4 + TCP (no options) with valid checksums.
pub fn tcp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(TCP_LEN + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&65_535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let tcp_len = u16::try_from(tcp.len()).expect("segment fits an IP packet");
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&tcp_len.to_be_bytes());
    let sum = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());

    let mut ip = Vec::with_capacity(IP_LEN);
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&(tcp_len + 20).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::with_capacity(ETH_LEN + ip.len() + tcp.len());
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

/// Classic pcap, little endian, microseconds, LINKTYPE_ETHERNET.
pub fn write_pcap(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        let secs = u32::try_from(f.ts / 1_000_000_000).expect("time fits 32 bits");
        let usecs = u32::try_from((f.ts % 1_000_000_000) / 1000).expect("below a second");
        let incl = u32::try_from(f.data.len()).expect("frame length");
        let orig = u32::try_from(f.orig_len.unwrap_or(f.data.len())).expect("frame length");
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&usecs.to_le_bytes());
        out.extend_from_slice(&incl.to_le_bytes());
        out.extend_from_slice(&orig.to_le_bytes());
        out.extend_from_slice(&f.data);
    }
    out
}

/// Damages `frames` the way broken captures and hostile peers do. Each
/// frame is hit with probability 1/`one_in`; the kinds of damage cover
/// every header layer and the payload.
pub fn mutate(frames: &[Frame], rng: &mut Rng, one_in: usize) -> Vec<Frame> {
    let mut out = Vec::with_capacity(frames.len() + 8);
    for f in frames {
        if rng.below(one_in) != 0 {
            out.push(f.clone());
            continue;
        }
        let mut f = f.clone();
        let len = f.data.len();
        match rng.below(12) {
            // Random bytes flipped anywhere.
            0 => {
                for _ in 0..=rng.below(8) {
                    let at = rng.below(len);
                    f.data[at] ^= u8::try_from(1 + rng.below(255)).expect("below 256");
                }
            }
            // Cut by the capture (snaplen), possibly inside a header.
            1 => {
                f.orig_len = Some(len);
                f.data.truncate(rng.below(len));
            }
            // The payload replaced by garbage of another length.
            2 => {
                f.data.truncate(ETH_LEN + IP_LEN + TCP_LEN);
                let n = rng.below(2 * MSS);
                f.data.extend(rng.bytes(n));
            }
            // IP total length lying (too short, too long, zero).
            3 => {
                let lie = [0u16, 19, 40, 0xffff][rng.below(4)];
                f.data[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&lie.to_be_bytes());
            }
            // IHL below the minimum or past the packet.
            4 => f.data[ETH_LEN] = 0x40 | u8::try_from(rng.below(16)).expect("nibble"),
            // TCP data offset below 5 or past the segment.
            5 => {
                f.data[ETH_LEN + IP_LEN + 12] = u8::try_from(rng.below(16)).expect("nibble") << 4;
            }
            // A fragment (MF set, or an offset).
            6 => f.data[ETH_LEN + 6] = 0x20 | u8::try_from(rng.below(32)).expect("5 bits"),
            // Not IPv4: IPv6 version nibble or another ethertype.
            7 => {
                if rng.below(2) == 0 {
                    f.data[ETH_LEN] = 0x60;
                } else {
                    f.data[12] = 0x08;
                    f.data[13] = 0x06;
                }
            }
            // Dropped.
            8 => continue,
            // Sent twice.
            9 => out.push(f.clone()),
            // Swapped with the previous frame.
            10 => {
                if let Some(prev) = out.pop() {
                    out.push(f);
                    out.push(prev);
                    continue;
                }
            }
            // Sequence number moved, as after a lost SYN.
            _ => {
                let at = ETH_LEN + IP_LEN + 4;
                let seq = u32::try_from(rng.next_u64() >> 32).expect("32 bits");
                f.data[at..at + 4].copy_from_slice(&seq.to_be_bytes());
            }
        }
        out.push(f);
    }
    out
}

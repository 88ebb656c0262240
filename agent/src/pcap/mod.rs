//! The offline packet source: capture files → [`Packet`](crate::event::Packet)s
//! (the live one is `capture`, the kernel programs).
//!
//! `reader` reads legacy pcap and pcapng files in bounded chunks, `link` strips
//! the link-layer header (Ethernet, Linux cooked v1/v2, raw IP, BSD loopback,
//! VLAN tags) and `ip` turns an IPv4/IPv6 packet into a TCP [`Packet`]. Every
//! frame that does not become a packet is counted in [`DecodeStats`] under
//! the reason it was skipped; bad input is counted, never a panic.
//!
//! [`Packet`]: crate::event::Packet

use std::{fmt, path::PathBuf};

pub mod ip;
pub mod link;
pub mod reader;

pub use reader::{PcapReader, Progress};

/// Why a frame did not become a packet. Each reason has a counter in
/// [`DecodeStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Not IPv4/IPv6 (ARP, LLDP, 802.3 frames, ...).
    NonIp,
    /// IP, but not TCP (UDP, ICMP, ...).
    NonTcp,
    /// An IP fragment: rampwatch does not reassemble IP fragments.
    Fragment,
    /// The capture cut the frame before the end of the TCP header.
    Truncated,
    /// Header fields contradict each other (bad lengths, bad version).
    Malformed,
    /// The interface's link type is not one rampwatch decodes.
    UnsupportedLinkType,
    /// IPv6 that needs what rampwatch does not do (ESP, jumbograms,
    /// extension-header chains that are too long).
    UnsupportedIpv6,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NonIp => "not IP",
            Self::NonTcp => "not TCP",
            Self::Fragment => "IP fragment",
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::UnsupportedLinkType => "unsupported link type",
            Self::UnsupportedIpv6 => "unsupported IPv6",
        })
    }
}

/// Counters of what a decoder saw. `frames == packets + skipped()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames (packet records) read from the file.
    pub frames: u64,
    /// TCP packets delivered.
    pub packets: u64,
    pub non_ip: u64,
    pub non_tcp: u64,
    pub fragments: u64,
    pub truncated: u64,
    pub malformed: u64,
    pub unsupported_link_type: u64,
    pub unsupported_ipv6: u64,
}

impl DecodeStats {
    /// Counts one skipped frame.
    pub fn count(&mut self, reason: SkipReason) {
        let counter = match reason {
            SkipReason::NonIp => &mut self.non_ip,
            SkipReason::NonTcp => &mut self.non_tcp,
            SkipReason::Fragment => &mut self.fragments,
            SkipReason::Truncated => &mut self.truncated,
            SkipReason::Malformed => &mut self.malformed,
            SkipReason::UnsupportedLinkType => &mut self.unsupported_link_type,
            SkipReason::UnsupportedIpv6 => &mut self.unsupported_ipv6,
        };
        *counter += 1;
    }

    /// Frames that did not become packets, for any reason.
    pub fn skipped(&self) -> u64 {
        self.non_ip
            + self.non_tcp
            + self.fragments
            + self.truncated
            + self.malformed
            + self.unsupported_link_type
            + self.unsupported_ipv6
    }

    /// Each skip reason with its count, for reports.
    pub fn by_reason(&self) -> [(SkipReason, u64); 7] {
        [
            (SkipReason::NonIp, self.non_ip),
            (SkipReason::NonTcp, self.non_tcp),
            (SkipReason::Fragment, self.fragments),
            (SkipReason::Truncated, self.truncated),
            (SkipReason::Malformed, self.malformed),
            (SkipReason::UnsupportedLinkType, self.unsupported_link_type),
            (SkipReason::UnsupportedIpv6, self.unsupported_ipv6),
        ]
    }

    /// Adds another file's counters (replay of several files).
    pub fn merge(&mut self, other: &Self) {
        self.frames += other.frames;
        self.packets += other.packets;
        self.non_ip += other.non_ip;
        self.non_tcp += other.non_tcp;
        self.fragments += other.fragments;
        self.truncated += other.truncated;
        self.malformed += other.malformed;
        self.unsupported_link_type += other.unsupported_link_type;
        self.unsupported_ipv6 += other.unsupported_ipv6;
    }
}

/// Errors of the decoders. File-level errors stop reading that file;
/// packet-level ones (`Packet`) only come from [`ip::parse_ip`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a pcap or pcapng capture file; give a file written by tcpdump, tshark or Wireshark",
        path.display()
    )]
    NotPcap { path: PathBuf },
    #[error(
        "{} uses link type {linktype}, which rampwatch cannot decode; capture on an Ethernet, Linux cooked (-i any), raw IP or loopback interface instead",
        path.display()
    )]
    UnsupportedLinkType { path: PathBuf, linktype: i32 },
    #[error(
        "{} is corrupt at byte {offset} ({what}); the packets before that point were read",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error("the packet was skipped: {0}")]
    Packet(SkipReason),
}

#[cfg(test)]
pub(crate) mod tests;

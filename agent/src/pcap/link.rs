//! Link-layer headers: where does the IP packet start in a frame?

use std::fmt;

use agent_common::ether;

use super::SkipReason;

/// More stacked VLAN tags than this is garbage, not a network.
const MAX_VLAN_TAGS: usize = 4;

/// The link types rampwatch decodes (numbers from the tcpdump.org registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1), with any number of 802.1Q/802.1ad tags.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): `tcpdump -i any` before libpcap 1.10.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): `tcpdump -i any` since libpcap 1.10.
    LinuxSll2,
    /// LINKTYPE_RAW (101) and the DLT_RAW values 12 and 14 some systems
    /// write; also LINKTYPE_IPV4 (228) and LINKTYPE_IPV6 (229).
    RawIp,
    /// LINKTYPE_NULL (0): BSD loopback, a 4-byte address family in the
    /// capturing host's byte order.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, the family in network order.
    Loop,
}

impl LinkType {
    /// The link type for a pcap/pcapng link-type number, if supported.
    pub fn from_number(linktype: i32) -> Option<Self> {
        Some(match linktype {
            0 => Self::Null,
            1 => Self::Ethernet,
            12 | 14 | 101 | 228 | 229 => Self::RawIp,
            108 => Self::Loop,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            _ => return None,
        })
    }

    /// Offset of the IP header within `frame`.
    pub fn ip_offset(self, frame: &[u8]) -> Result<usize, SkipReason> {
        match self {
            Self::Ethernet => ethertype_offset(frame, 12, 14),
            Self::LinuxSll => ethertype_offset(frame, 14, 16),
            Self::LinuxSll2 => ethertype_offset(frame, 0, 20),
            Self::RawIp => Ok(0),
            Self::Null | Self::Loop => {
                let Some(&fam) = frame.first_chunk::<4>() else {
                    return Err(SkipReason::Truncated);
                };
                let family = if self == Self::Loop {
                    u32::from_be_bytes(fam)
                } else {
                    // Host byte order of the machine that wrote the file: the
                    // family is small, so whichever reading is small is right.
                    let le = u32::from_le_bytes(fam);
                    if le <= 0xffff {
                        le
                    } else {
                        u32::from_be_bytes(fam)
                    }
                };
                match family {
                    // AF_INET; AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS.
                    2 | 10 | 24 | 28 | 30 => Ok(4),
                    _ => Err(SkipReason::NonIp),
                }
            }
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ethernet => "Ethernet",
            Self::LinuxSll => "Linux cooked v1",
            Self::LinuxSll2 => "Linux cooked v2",
            Self::RawIp => "raw IP",
            Self::Null => "BSD loopback",
            Self::Loop => "OpenBSD loopback",
        })
    }
}

/// Follows the ethertype at `type_at` (header ends at `hdr_len`) through
/// VLAN tags to the IP header.
fn ethertype_offset(frame: &[u8], type_at: usize, hdr_len: usize) -> Result<usize, SkipReason> {
    let mut ethertype = read_u16(frame, type_at)?;
    let mut off = hdr_len;
    for _ in 0..=MAX_VLAN_TAGS {
        match ethertype {
            ether::IPV4 | ether::IPV6 => {
                return if frame.len() > off {
                    Ok(off)
                } else {
                    Err(SkipReason::Truncated)
                };
            }
            ether::VLAN | ether::QINQ | ether::QINQ_OLD => {
                // Tag: 2 bytes TCI, then the inner ethertype.
                ethertype = read_u16(frame, off + 2)?;
                off += 4;
            }
            _ => return Err(SkipReason::NonIp),
        }
    }
    Err(SkipReason::Malformed)
}

fn read_u16(frame: &[u8], at: usize) -> Result<u16, SkipReason> {
    match frame.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(SkipReason::Truncated),
    }
}

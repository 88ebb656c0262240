//! Ethertypes the kernel's TC program and the pcap reader follow.

pub const IPV4: u16 = 0x0800;
pub const IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag.
pub const VLAN: u16 = 0x8100;
/// 802.1ad (QinQ) service tag.
pub const QINQ: u16 = 0x88a8;
/// The pre-standard QinQ tag some switches still send (pcap reader only;
/// the kernel follows [`VLAN`] and [`QINQ`]).
pub const QINQ_OLD: u16 = 0x9100;

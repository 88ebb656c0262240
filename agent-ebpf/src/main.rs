//! rampwatch kernel programs: sample TCP traffic to monitored API endpoints.
//!
//! Two hooks share one packet path (`track`): cgroup_skb (default, every
//! socket in a cgroup v2 subtree) and TC (opt-in per interface, forwarded
//! traffic). Both only read the packet and always let it pass. The TLS
//! probes (`tls`, `sock`, `discover`) add OpenSSL plaintext of probed
//! processes, joined to the same flows.
#![no_std]
#![no_main]
// BPF has atomic add/or instructions but no compare-and-swap, so core's
// atomic types lack fetch_add there; the intrinsics map to the instructions.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic intrinsics, see above")]

mod cgroup;
mod discover;
mod endpoint;
mod floor;
mod local;
mod maps;
mod packet;
mod sock;
mod tc;
mod tls;
mod track;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

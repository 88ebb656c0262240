//! TLS: the first to-server sample of a flow holds the ClientHello, byte for
//! byte what the client sent (checked against tcpdump).

use std::{net::IpAddr, process::Stdio};

use agent::event::{Direction, FlowId};
use tests::{
    harness::Tuning,
    pcap::{clients_of, flow_closed},
    tls::TlsServer,
    tools::require_tools,
};

use crate::{EVENT_TIMEOUT, capture_in_cgroup, dump_lo};

fn client_hello_first(ip: &str, client: &str) {
    require_tools();
    let ip: IpAddr = ip.parse().expect("ip");
    let server = TlsServer::start_on(ip);
    let (cg, mut h) = capture_in_cgroup("tls", server.addr, Tuning::default());
    let dump = dump_lo(server.addr, 65535);
    let url_host = if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let status = match client {
        "curl" => cg
            .command("curl")
            .args(["-sk", "-o", "/dev/null", "--max-time", "10"])
            .arg(format!("https://{url_host}:{}/", server.addr.port()))
            .status(),
        _ => cg
            .command("openssl")
            .args([
                "s_client",
                "-brief",
                "-servername",
                "rampwatch.test",
                "-connect",
            ])
            .arg(server.addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status(),
    }
    .expect("run TLS client");
    assert!(status.success(), "{client} failed: {status}");

    let recs = dump.wait_for("the TLS client's flow", EVENT_TIMEOUT, |r| {
        clients_of(r, server.addr)
            .first()
            .is_some_and(|c| flow_closed(r, *c, server.addr))
    });
    let client_addr = clients_of(&recs, server.addr)[0];
    let flow = FlowId {
        client: client_addr,
        server: server.addr,
    };
    let first_wire = recs
        .iter()
        .find(|r| r.src == client_addr && r.payload_len > 0)
        .expect("client sent a payload");
    h.wait_flow_end(flow, EVENT_TIMEOUT);

    let first = *h
        .packets_of(flow)
        .iter()
        .find(|p| p.direction == Some(Direction::ToServer) && p.payload_len > 0)
        .expect("a to-server sample");
    let p = &first.payload;
    assert!(p.len() >= 6, "sample too short: {p:?}");
    assert_eq!(p[0], 0x16, "record type handshake");
    assert_eq!(p[1], 0x03, "TLS major version");
    assert_eq!(p[5], 0x01, "handshake type ClientHello");
    assert_eq!(first.payload_len, first_wire.payload_len);
    assert_eq!(
        first.seq, first_wire.seq,
        "sequence number of the ClientHello segment"
    );
    assert_eq!(
        &p[..],
        &first_wire.payload[..p.len()],
        "sample bytes equal the wire bytes"
    );
    assert_eq!(
        p.len() as u32,
        first.payload_len,
        "a ClientHello fits the default snaplen"
    );
}

#[test]
fn tls_curl_ipv4_first_sample_is_client_hello() {
    client_hello_first("127.0.0.1", "curl");
}

#[test]
fn tls_s_client_ipv6_first_sample_is_client_hello() {
    client_hello_first("::1", "s_client");
}

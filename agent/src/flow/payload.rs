//! What a segment with payload does to its flow: reassembly placement,
//! protocol classification, TLS handshake facts and request heads.

use super::{
    Changes, Flow, Protocol, Request, TlsFacts, TlsVersion, dissect, reassembly,
    reassembly::StreamPrefix,
    requests,
    wire_h2::{self, WireH2},
};
use crate::{
    event::{Direction, Packet},
    protocol::{
        http::{CredentialHeaders, H2_PREFACE},
        tls::TlsParse,
    },
};

/// Last look at a flow's buffers: partial request heads count now.
pub(super) fn finish_flow<T>(
    flow: &mut Flow<T>,
    creds: &CredentialHeaders,
    requests: &mut Vec<Request>,
    changes: &mut Changes,
) {
    let before = requests.len();
    if matches!(flow.protocol, Protocol::Http | Protocol::H2c) && flow.h2.is_none() {
        let s = &flow.streams[0];
        flow.cursor
            .scan(s.bytes(), s.bytes_offset(), true, creds, requests);
    }
    if flow.protocol == Protocol::Tls
        && flow.tls.client_cert.is_none()
        && let TlsParse::Done(Some(fp)) = dissect::parse_client_certificate(flow.streams[0].bytes())
    {
        flow.tls.client_cert = Some(fp);
        changes.client_cert = true;
    }
    for s in &mut flow.streams {
        s.release();
    }
    if let Some(plain) = &mut flow.plain {
        plain.finish(creds, requests, &mut flow.responses);
    }
    if let Some(h2) = &mut flow.h2 {
        h2.finish(creds, requests, &mut flow.responses);
    }
    flow.responses.open_all(&mut requests[before..]);
    flow.responses.finish();
    changes.answers = flow.responses.answers.len();
    let n = requests.len() - before;
    flow.requests += n as u64;
    changes.requests += n;
}

/// Handles a segment with payload.
pub(super) fn on_payload<T>(
    flow: &mut Flow<T>,
    dir: Direction,
    p: &Packet,
    cap: usize,
    creds: &CredentialHeaders,
    requests: &mut Vec<Request>,
    changes: &mut Changes,
) {
    let i = dir.index();
    let placement = flow.streams[i].push(p.seq, &p.payload, p.payload_len, cap);
    let before = requests.len();
    match dir {
        Direction::ToServer => to_server(flow, p, placement, creds, requests, changes),
        Direction::ToClient => to_client(flow, p, placement, creds, requests, changes),
    }
    flow.responses.open_all(&mut requests[before..]);
    changes.answers = flow.responses.answers.len();
    let n = requests.len() - before;
    flow.requests += n as u64;
    changes.requests += n;
}

fn to_server<T>(
    flow: &mut Flow<T>,
    p: &Packet,
    placement: reassembly::Placement,
    creds: &CredentialHeaders,
    requests: &mut Vec<Request>,
    changes: &mut Changes,
) {
    use reassembly::Placement;
    let extended = matches!(placement, Placement::Extended { .. });
    if flow.protocol == Protocol::Unknown {
        let Some((bytes, complete)) = flow.streams[0].classifiable(&p.payload) else {
            return;
        };
        match dissect::classify(bytes, complete) {
            Some(proto) => {
                flow.protocol = proto;
                changes.protocol = true;
                if !matches!(proto, Protocol::H2c | Protocol::Tls)
                    && !flow.streams[1].bytes().is_empty()
                {
                    // What a server sent before the client spoke (kept for
                    // HTTP/2, see `to_client`) answers no request.
                    flow.streams[1].release();
                }
            }
            None => return,
        }
    }
    match flow.protocol {
        Protocol::Tls => {
            let s = &mut flow.streams[0];
            if extended || s.is_done() {
                tls_client_side(&mut flow.tls, s, changes);
            }
            if !flow.tls.client_finished
                && matches!(placement, Placement::Beyond { .. })
                && p.payload.first() == Some(&0x17)
            {
                flow.tls.client_finished = true;
                changes.client_finished = true;
            }
        }
        Protocol::H2c if flow.h2.is_none() && flow.streams[0].bytes().starts_with(H2_PREFACE) => {
            flow.h2 = Some(Box::new(WireH2::prior_knowledge()));
            // The server may have spoken first (its SETTINGS, sent on
            // accept, read before the preface): from its first byte, or
            // its HPACK state starts broken.
            h2_held(flow, Direction::ToClient, creds, requests);
            h2_segment(flow, Direction::ToServer, p, placement, creds, requests);
        }
        Protocol::H2c if flow.h2.is_some() => {
            h2_segment(flow, Direction::ToServer, p, placement, creds, requests);
        }
        Protocol::Http | Protocol::H2c => {
            let before = requests.len();
            requests::on_segment(
                &mut flow.cursor,
                &mut flow.streams[0],
                p,
                placement,
                creds,
                requests,
            );
            let upgrade = requests[before..].iter().any(|r| r.upgrade_h2c);
            if flow.protocol == Protocol::Http && upgrade {
                flow.protocol = Protocol::H2c;
                changes.protocol = true;
            }
            if upgrade
                && flow.h2.is_none()
                && let Some(from) = flow.cursor.switched_at()
            {
                // HTTP/2 from the end of the upgrade request on, once the
                // server's 101 says so.
                flow.h2 = Some(Box::new(WireH2::upgraded(from)));
                // The rest of this segment may already be HTTP/2.
                h2_segment(flow, Direction::ToServer, p, placement, creds, requests);
            }
        }
        Protocol::Other | Protocol::Unknown => flow.streams[0].release(),
    }
}

/// Client-side TLS: ClientHello, then (TLS ≤ 1.2) its Certificate flight.
fn tls_client_side(tls: &mut TlsFacts, s: &mut StreamPrefix, changes: &mut Changes) {
    let bytes = s.bytes();
    if tls.client_hello.is_none() {
        match dissect::parse_client_hello(bytes) {
            TlsParse::Done(ch) => {
                tls.client_hello = Some(ch);
                changes.client_hello = true;
            }
            TlsParse::NeedMore if !s.is_done() => return,
            _ => {
                s.release();
                return;
            }
        }
    }
    if !tls.client_finished && dissect::tls_reaches_app_data(bytes) {
        tls.client_finished = true;
        changes.client_finished = true;
    }
    let tls13 = tls
        .server_hello
        .as_ref()
        .is_some_and(|sh| sh.version == Some(TlsVersion::Tls13));
    if tls.client_cert.is_none() && !tls13 {
        match dissect::parse_client_certificate(bytes) {
            TlsParse::Done(Some(fp)) => {
                tls.client_cert = Some(fp);
                changes.client_cert = true;
            }
            TlsParse::Done(None) if !tls.client_finished => {
                // The client's flight went on without a certificate.
                tls.client_finished = true;
                changes.client_finished = true;
            }
            TlsParse::NeedMore if !tls.client_finished && !s.is_done() => return,
            _ => {}
        }
    }
    if tls.client_cert.is_some() || tls.client_finished || tls13 {
        s.release();
    }
}

/// One segment of an h2c flow's HTTP/2 bytes.
fn h2_segment<T>(
    flow: &mut Flow<T>,
    dir: Direction,
    p: &Packet,
    placement: reassembly::Placement,
    creds: &CredentialHeaders,
    requests: &mut Vec<Request>,
) {
    let Some(h2) = &mut flow.h2 else {
        return;
    };
    let i = dir.index();
    h2.segment(
        dir,
        &flow.streams[i],
        p,
        placement,
        creds,
        requests,
        &mut flow.responses,
    );
    if flow.streams[i].is_done() {
        // Past the bounded prefix, segments go in by their offsets.
        flow.streams[i].release();
    }
}

/// The bytes `dir`'s prefix already holds, into a decoder just created.
fn h2_held<T>(
    flow: &mut Flow<T>,
    dir: Direction,
    creds: &CredentialHeaders,
    requests: &mut Vec<Request>,
) {
    let Some(h2) = &mut flow.h2 else {
        return;
    };
    let i = dir.index();
    h2.held(dir, &flow.streams[i], creds, requests, &mut flow.responses);
    if flow.streams[i].is_done() {
        flow.streams[i].release();
    }
}

fn to_client<T>(
    flow: &mut Flow<T>,
    p: &Packet,
    placement: reassembly::Placement,
    creds: &CredentialHeaders,
    requests: &mut Vec<Request>,
    changes: &mut Changes,
) {
    if let Some(h2) = &mut flow.h2 {
        if !h2.server_started() {
            // Upgraded: HTTP/2 after the server's 101 head.
            let s = &flow.streams[1];
            match wire_h2::after_switching_protocols(s.bytes()) {
                Some(Some(head)) => {
                    h2.server_from(s.bytes_offset() + head as u64);
                    flow.responses.upgraded();
                }
                // No upgrade: the connection stays HTTP/1, and this head
                // answers the upgrade request.
                Some(None) => {
                    flow.h2 = None;
                    flow.protocol = Protocol::Http;
                    changes.protocol = true;
                    flow.responses
                        .on_server_segment(&mut flow.streams[1], p, placement);
                    return;
                }
                None if !s.is_done() => return,
                None => {
                    flow.streams[1].release();
                    return;
                }
            }
        }
        h2_segment(flow, Direction::ToClient, p, placement, creds, requests);
        return;
    }
    if flow.protocol == Protocol::Http {
        flow.responses
            .on_server_segment(&mut flow.streams[1], p, placement);
        return;
    }
    let s = &mut flow.streams[1];
    if !matches!(placement, reassembly::Placement::Extended { .. }) {
        return;
    }
    match flow.protocol {
        Protocol::Tls | Protocol::Unknown if flow.tls.server_hello.is_none() => {
            match dissect::parse_server_hello(s.bytes()) {
                TlsParse::Done(sh) if sh.hello_retry => {
                    // A HelloRetryRequest: the real ServerHello follows.
                    let _ = sh;
                }
                TlsParse::Done(sh) => {
                    let tls13 = sh.version == Some(TlsVersion::Tls13);
                    flow.tls.server_hello = Some(sh);
                    changes.server_hello = true;
                    s.release();
                    if tls13 {
                        // The client's certificate, if any, is encrypted.
                        flow.streams[0].release();
                    }
                }
                TlsParse::NeedMore if !s.is_done() => {}
                // The client has not spoken yet: a server that speaks
                // first may be HTTP/2 (nghttpd writes its SETTINGS on
                // accept, and live they can be read before the client's
                // preface). Its decoder needs these bytes; the client's
                // first bytes decide what they are.
                _ if flow.protocol == Protocol::Unknown && !s.is_done() => {}
                _ => s.release(),
            }
        }
        _ => s.release(),
    }
}

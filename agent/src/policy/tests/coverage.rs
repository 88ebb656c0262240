//! Who and where: endpoint coverage (unlisted_endpoint), client
//! identification through the engine (unknown_client, source addresses,
//! contract-named credential headers) and flow records.

use super::*;

#[test]
fn unlisted_endpoint_scope_and_path() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.30.0.9:5000",
        "10.20.9.9:9000",
        &[&get("/v1/x", None)],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5001",
        "10.20.2.5:8080",
        &[&get("/v2/admin?token=s3cret", Some("acme-token"))],
    );
    // Outside scope and endpoints: not watched at all.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5002",
        "192.168.1.1:8080",
        &[&get("/", None)],
    );
    assert_eq!(
        found(&e),
        vec![
            (
                Kind::UnlistedEndpoint,
                "unlisted".into(),
                "acme".into(),
                1,
                "path /v2/… not in orders's paths".into()
            ),
            (
                Kind::UnlistedEndpoint,
                "unlisted".into(),
                "office".into(),
                1,
                "no endpoint covers 10.20.9.9:9000".into()
            ),
        ]
    );
}

#[test]
fn unknown_client_needs_authentication_class() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5001",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("who-knows"))],
    );
    // Public class: no authentication required.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5002",
        "10.20.3.5:8080",
        &[&get("/", None)],
    );
    assert_eq!(
        found(&e),
        vec![(
            Kind::UnknownClient,
            "orders".into(),
            "unknown".into(),
            2,
            "credential not in contract".into()
        )]
    );
}

#[test]
fn source_address_identifies_a_client() {
    let mut e = engine();
    tcp_flow(
        &mut e,
        t0(),
        "10.30.4.4:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None)],
    );
    assert_eq!(found(&e), vec![]);
    e.finish();
    let recs: Vec<_> = e
        .drain()
        .filter_map(|o| {
            if let Output::Flow(f) = o {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(&*recs[0].client, "office");
    assert_eq!(recs[0].identified_by, view::Via::Source);
}

#[test]
fn flows_identified_and_counted() {
    let mut e = engine();
    let flow = FlowId {
        client: addr("10.1.0.9:5000"),
        server: addr("10.20.2.5:8080"),
    };
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[
            &get("/v1/orders", Some("acme-token")),
            &get("/v1/orders", Some("acme-token")),
        ],
    );
    e.finish();
    let recs: Vec<_> = e
        .drain()
        .filter_map(|o| {
            if let Output::Flow(f) = o {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].id, flow);
    assert_eq!(recs[0].requests, 2);
    assert_eq!(recs[0].protocol, crate::flow::Protocol::Http);
}

#[test]
fn credential_headers_named_by_the_contract_identify() {
    let mut e = engine();
    let req = b"GET / HTTP/1.1\r\nHost: docs\r\nX-Partner-Key: pk-123\r\n\r\n";
    tcp_flow(&mut e, t0(), "10.1.0.9:5000", "10.20.3.5:8080", &[req]);
    // partner has no quota on docs: quota 0, which shows who it was.
    assert_eq!(
        found(&e),
        vec![(
            Kind::QuotaOvershoot,
            "docs".into(),
            "partner".into(),
            1,
            "1 req/s over quota 0".into()
        )]
    );
}

#[test]
fn request_totals_use_bounded_labels() {
    let mut e = engine();
    // Listed endpoint, known client; listed endpoint, no credential; a path
    // outside the endpoint's paths; an in-scope port no endpoint covers;
    // and an address nobody watches.
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5000",
        "10.20.2.5:8080",
        &[&get("/v1/orders", Some("acme-token"))],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5001",
        "10.20.2.5:8080",
        &[&get("/v1/orders", None), &get("/v1/orders", None)],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5002",
        "10.20.2.5:8080",
        &[&get("/v2/admin", Some("acme-token"))],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5003",
        "10.20.9.9:9000",
        &[&get("/x", None)],
    );
    tcp_flow(
        &mut e,
        t0(),
        "10.1.0.9:5004",
        "192.168.1.1:8080",
        &[&get("/", None)],
    );
    let mut totals: Vec<(String, String, u64)> = e
        .request_totals()
        .into_iter()
        .map(|r| (r.endpoint.to_string(), r.client.to_string(), r.total))
        .collect();
    totals.sort();
    assert_eq!(
        totals,
        vec![
            ("orders".into(), "acme".into(), 1),
            ("orders".into(), "unknown".into(), 2),
            ("unlisted".into(), "acme".into(), 1),
            ("unlisted".into(), "unknown".into(), 1),
        ]
    );
}

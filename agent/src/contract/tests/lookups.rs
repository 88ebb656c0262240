//! Stage selection, endpoint matching, identity, revocations, quotas, classes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::*;

const ACME_DEMO: &str = "sha256:79665b9580ab672b11d07c958da63e90a03b2b9fbf6365b47972b7d1762406a7";
const ACME_OLD: &str = "sha256:0da98e5574a54de91593da738ae3dfe4a6cca7538145318e06a9cde4b6e062a9";
const ACME_LEAKED: &str = "sha256:f12a46c62ca72e6e85e75dfc7af0b1d88874f5943a02e04cc490a5ca32540774";
const GLOBEX: &str = "sha256:8d34c06d6bb69bcb3f20c91e73ed10e81c49a3e25b2f8b2452535972f82f9242";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn label(m: EndpointMatch<'_>) -> String {
    match m {
        EndpointMatch::Endpoint(e) => format!("endpoint:{}", e.name),
        EndpointMatch::PathNotListed(e) => format!("path-not-listed:{}", e.name),
        EndpointMatch::Unlisted => "unlisted".into(),
        EndpointMatch::NotWatched => "not-watched".into(),
    }
}

#[test]
fn example_demo_fingerprints_are_those_of_the_documented_tokens() {
    let c = example();
    for (token, header, want) in [
        ("acme-demo-token", "authorization", ACME_DEMO),
        ("acme-old-token", "authorization", ACME_OLD),
        ("acme-leaked-token", "authorization", ACME_LEAKED),
        ("globex-demo-token", "x-api-key", GLOBEX),
    ] {
        let got = crate::identity::credential_fingerprint(header, token.as_bytes());
        assert_eq!(got.to_string(), want, "{token}");
        // Through the lookup production uses (identity::Directory).
        let known = crate::identity::Directory::new(&c).credentials[got.as_bytes()];
        let client = &c.clients()[known.client];
        let cred = client
            .credentials
            .iter()
            .find(|k| k.fingerprint == got)
            .expect(token);
        assert_eq!(cred.header, header);
        assert!(["acme", "globex"].contains(&&*client.name));
    }
}

#[test]
fn credential_headers_are_listed_once() {
    assert_eq!(
        example().credential_headers(),
        ["authorization", "x-api-key"]
    );
}

#[test]
fn stage_selection_at_boundaries() {
    let c = example();
    let ramp2 = t("2026-11-15T00:00:00Z");
    let name = |s: Option<&Stage>| s.map(|s| s.name.to_string());
    assert_eq!(name(c.stage_at(t("2026-09-30T23:59:59Z"))), None);
    assert_eq!(
        name(c.stage_at(t("2026-10-01T00:00:00Z"))).as_deref(),
        Some("pilot")
    );
    assert_eq!(name(c.stage_at(ramp2 - 1)).as_deref(), Some("pilot"));
    assert_eq!(name(c.stage_at(ramp2)).as_deref(), Some("ramp-2x"));
    assert_eq!(
        name(c.stage_at(t("2030-01-01T00:00:00Z"))).as_deref(),
        Some("ramp-10x")
    );
    assert_eq!(name(c.stage_at(i64::MIN)), None);

    assert_eq!(
        name(c.next_stage_change_after(i64::MIN)).as_deref(),
        Some("pilot")
    );
    assert_eq!(
        name(c.next_stage_change_after(ramp2 - 1)).as_deref(),
        Some("ramp-2x")
    );
    assert_eq!(
        name(c.next_stage_change_after(ramp2)).as_deref(),
        Some("ramp-10x")
    );
    assert_eq!(
        name(c.next_stage_change_after(t("2027-01-15T00:00:00Z"))),
        None
    );
    assert_eq!(c.stage_at(ramp2).map(|s| s.index), Some(1));
    assert_eq!(c.stage("ramp-2x").map(|s| s.starts_at), Some(ramp2));
    assert!(c.stage("ramp-3x").is_none());
}

#[test]
fn endpoint_matching_by_name_address_port_and_path() {
    let c = example();
    let m = |server: &str, name: Option<&str>, path: Option<&str>| {
        label(c.match_endpoint(sa(server), name, path))
    };
    // TLS: no path visible; SNI case and port are ignored.
    assert_eq!(m("127.0.0.1:8443", None, None), "endpoint:payments");
    assert_eq!(
        m("127.0.0.1:8443", Some("PAYMENTS.Example.COM:8443"), None),
        "endpoint:payments"
    );
    // By name on another address (the agent resolved it elsewhere).
    assert_eq!(
        m("10.9.9.9:8443", Some("payments.example.com."), None),
        "endpoint:payments"
    );
    assert_eq!(
        m("10.9.9.9:8443", Some("other.example.com"), None),
        "not-watched"
    );
    // Paths on segment boundaries.
    assert_eq!(
        m("127.0.0.1:8080", Some("localhost"), Some("/v1/payments")),
        "endpoint:legacy-payments"
    );
    assert_eq!(
        m("127.0.0.1:8080", None, Some("/v1/payments/42")),
        "endpoint:legacy-payments"
    );
    assert_eq!(
        m("127.0.0.1:8080", None, Some("/v1/payments?x=1")),
        "endpoint:legacy-payments"
    );
    assert_eq!(
        m("127.0.0.1:8080", None, Some("/v1/paymentsX")),
        "path-not-listed:legacy-payments"
    );
    assert_eq!(
        m("127.0.0.1:8080", None, Some("/admin")),
        "path-not-listed:legacy-payments"
    );
    assert_eq!(
        m(
            "127.0.0.1:8080",
            None,
            Some("http://127.0.0.1:8080/v1/payments/1")
        ),
        "endpoint:legacy-payments"
    );
    assert_eq!(
        m("127.0.0.1:8443", None, Some("/v1/refunds/7")),
        "endpoint:payments"
    );
    // No paths listed: any path.
    assert_eq!(
        m("127.0.0.1:8081", None, Some("/anything")),
        "endpoint:status"
    );
    // In scope, nothing covers it; outside scope.
    assert_eq!(m("127.0.0.1:8082", None, Some("/")), "unlisted");
    assert_eq!(m("127.0.0.5:9443", None, None), "unlisted");
    assert_eq!(m("127.0.0.1:9999", None, None), "not-watched");
    assert_eq!(m("192.0.2.1:8443", None, None), "not-watched");
    // IPv4-mapped IPv6 server addresses match IPv4 rules.
    assert_eq!(m("[::ffff:127.0.0.1]:8081", None, None), "endpoint:status");

    let status = c.match_endpoint(sa("127.0.0.1:8081"), None, None);
    assert_eq!(status.label(), "status");
    assert!(!status.is_unlisted() && status.is_watched());
    let miss = c.match_endpoint(sa("127.0.0.1:8080"), None, Some("/admin"));
    assert_eq!(miss.label(), UNLISTED_ENDPOINT);
    assert!(miss.is_unlisted());
    assert_eq!(miss.endpoint().map(|e| &*e.name), Some("legacy-payments"));
}

const OVERLAP: &str = r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata: { name: overlap }
spec:
  dataClasses:
    - { name: c, encryption: optional, authentication: optional }
  endpoints:
    - { name: shared-ip, dataClass: c, hosts: ["10.0.0.0/24"] }
    - { name: by-name, dataClass: c, hosts: ["api.example.com"], ports: [443] }
    - { name: v1, dataClass: c, hosts: ["10.0.0.1"], paths: ["/v1/"] }
    - { name: v1-orders, dataClass: c, hosts: ["10.0.0.1"], paths: ["/v1/orders"] }
    - { name: wild, dataClass: c, hosts: ["*.svc.example.com", "2001:db8::/32"], ports: [8443] }
  clients:
    - name: a
      sources: ["10.1.0.0/16"]
    - name: b
      sources: ["10.1.2.0/24"]
  stages:
    - { name: only, startsAt: "2026-01-01T00:00:00Z" }
"#;

#[test]
fn endpoint_matching_precedence() {
    let c = Contract::parse(OVERLAP, "overlap.yaml").unwrap();
    let m = |server: &str, name: Option<&str>, path: Option<&str>| {
        label(c.match_endpoint(sa(server), name, path))
    };
    // A name match beats an address match.
    assert_eq!(
        m("10.0.0.1:443", Some("api.example.com"), None),
        "endpoint:by-name"
    );
    assert_eq!(
        m("10.0.0.1:443", Some("elsewhere.example.com"), None),
        "endpoint:shared-ip"
    );
    // A path-less endpoint earlier in the file covers paths others don't...
    assert_eq!(m("10.0.0.1:80", None, Some("/v2/x")), "endpoint:shared-ip");
    // ...but the longest matching prefix wins.
    assert_eq!(
        m("10.0.0.1:80", None, Some("/v1/orders/9")),
        "endpoint:v1-orders"
    );
    assert_eq!(m("10.0.0.1:80", None, Some("/v1/users")), "endpoint:v1");
    // A prefix ending in '/' does not match the bare segment.
    assert_eq!(m("10.0.0.1:80", None, Some("/v1")), "endpoint:shared-ip");
    // Wildcards match subdomains only.
    assert_eq!(
        m("192.0.2.9:8443", Some("a.svc.example.com"), None),
        "endpoint:wild"
    );
    assert_eq!(
        m("192.0.2.9:8443", Some("a.b.svc.example.com"), None),
        "endpoint:wild"
    );
    assert_eq!(
        m("192.0.2.9:8443", Some("svc.example.com"), None),
        "not-watched"
    );
    assert_eq!(
        m("192.0.2.9:8443", Some("xsvc.example.com"), None),
        "not-watched"
    );
    assert_eq!(m("[2001:db8::1]:8443", None, None), "endpoint:wild");
    assert_eq!(
        m("[2001:db8::1]:8443", Some("[2001:db8::1]:8443"), None),
        "endpoint:wild"
    );

    // First listed client wins on overlapping sources (identity::Directory,
    // the lookup production uses).
    let directory = crate::identity::Directory::new(&c);
    let who = |ip: [u8; 4]| {
        directory
            .identify(&[], None, None, IpAddr::V4(Ipv4Addr::from(ip)))
            .client
            .map(|i| c.clients()[i].name.to_string())
    };
    assert_eq!(who([10, 1, 2, 3]).as_deref(), Some("a"));
    assert_eq!(who([10, 2, 0, 1]), None);
}

#[test]
fn normalize_host_strips_ports_dots_and_case() {
    assert_eq!(normalize_host("API.Example.com.:8443"), "api.example.com");
    assert_eq!(normalize_host(" api.example.com "), "api.example.com");
    assert_eq!(normalize_host("[::1]:443"), "::1");
    assert_eq!(normalize_host("::1"), "::1");
    assert_eq!(normalize_host("127.0.0.1:8080"), "127.0.0.1");
}

#[test]
fn scope_and_kernel_rules() {
    let c = example();
    assert!(c.in_scope(sa("127.0.0.9:8082")));
    assert!(!c.in_scope(sa("127.0.0.9:22")));
    assert!(!c.in_scope(sa("10.0.0.1:8443")));
    let rules = c.server_rules();
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert_eq!(rules[0].net.to_string(), "127.0.0.0/8");
    assert_eq!(rules[0].ports, Some(vec![8080, 8081, 8082, 8443, 9443]));
    assert_eq!(rules[1].net.to_string(), "127.0.0.1/32");
    assert_eq!(rules[1].ports, Some(vec![8443]));
    let names = c.host_names();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].host, "payments.example.com");
    assert_eq!(&*names[0].endpoint, "payments");
    assert_eq!(names[0].ports, Some(vec![8443]));
}

/// Credential age per stage: `policy/tests/identity.rs`.
#[test]
fn quotas_per_stage() {
    let c = example();
    let pilot = &c.stages()[0];
    let ramp2 = &c.stages()[1];
    assert_eq!(
        c.quota(pilot, "acme", "payments"),
        Some(Quota {
            rps: 5.0,
            burst: 10
        })
    );
    assert_eq!(
        c.quota(ramp2, "acme", "payments"),
        Some(Quota {
            rps: 10.0,
            burst: 20
        })
    );
    assert_eq!(c.quota(pilot, "globex", "payments"), None);
    assert_eq!(c.quota(&c.stages()[2], "acme", "legacy-payments"), None);
}

#[test]
fn data_classes_and_cipher_globs() {
    let c = example();
    let pii = c.data_class("pii").unwrap();
    assert!(pii.encryption_required() && pii.authentication_required());
    assert_eq!(pii.min_tls_version, Some(TlsVersion::Tls12));
    assert!(pii.tls_version_too_low(TlsVersion::Tls11));
    assert!(pii.tls_version_too_low(TlsVersion::Ssl3));
    assert!(pii.tls_version_too_low(TlsVersion::Ssl2));
    assert!(!pii.tls_version_too_low(TlsVersion::Tls12));
    assert!(!pii.tls_version_too_low(TlsVersion::Tls13));
    for forbidden in [
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_RSA_WITH_NULL_SHA256",
        "TLS_RSA_EXPORT_WITH_RC4_40_MD5",
        "tls_rsa_with_aes_128_cbc_sha",
    ] {
        assert!(pii.cipher_forbidden(forbidden), "{forbidden}");
    }
    for allowed in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ] {
        assert!(!pii.cipher_forbidden(allowed), "{allowed}");
    }
    assert_eq!(
        pii.forbidding_glob("TLS_RSA_WITH_AES_128_CBC_SHA")
            .map(CipherGlob::as_str),
        Some("*_CBC_*")
    );
    let public = c.data_class("public").unwrap();
    assert!(!public.encryption_required() && !public.authentication_required());
    assert!(!public.cipher_forbidden("TLS_RSA_WITH_RC4_128_SHA"));
    assert_eq!(
        c.endpoint("payments").map(|e| &*e.data_class.name),
        Some("pii")
    );
    // authentication defaults to required.
    let text = EXAMPLE.replace("      authentication: required\n", "");
    let c = Contract::parse(&text, "c.yaml").unwrap();
    assert!(c.data_class("pii").unwrap().authentication_required());
}

#[test]
fn tls_versions_from_the_wire() {
    // One type for the contract's minimum and the wire's version.
    assert_eq!(TlsVersion::from_wire(0x0303), Some(TlsVersion::Tls12));
    assert_eq!(TlsVersion::from_wire(0x0300), Some(TlsVersion::Ssl3));
    assert_eq!(TlsVersion::from_wire(0x0002), Some(TlsVersion::Ssl2));
    assert_eq!(TlsVersion::from_wire(0x0a0a), None, "GREASE");
    assert_eq!(TlsVersion::from_wire(0x0304), Some(TlsVersion::Tls13));
    assert_eq!(crate::policy::weak_tls::label(TlsVersion::Tls11), "TLS 1.1");
    assert_eq!(TlsVersion::Tls11.as_str(), "1.1");
    // A contract may name 1.0 to 1.3 as its minimum, nothing else.
    assert_eq!(model::min_tls_version("1.0"), Some(TlsVersion::Tls10));
    assert_eq!(model::min_tls_version("1.3"), Some(TlsVersion::Tls13));
    assert_eq!(model::min_tls_version("ssl3"), None);
    assert_eq!(model::min_tls_version("1.4"), None);
}

#[test]
fn remediation_and_hash() {
    let c = example();
    assert_eq!(
        c.remediation().warn_after,
        Some(parse_duration("15m").unwrap())
    );
    assert_eq!(
        c.remediation().breach_after,
        Some(parse_duration("24h").unwrap())
    );
    assert_eq!(c.sha256(), Fingerprint::of_bytes(EXAMPLE.as_bytes()));
    // A comment changes the bytes, so the audit hash changes too.
    let other = Contract::parse(&format!("{EXAMPLE}# edited\n"), "c.yaml").unwrap();
    assert_ne!(other.sha256(), c.sha256());
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("rampwatch-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.yaml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let c = Contract::load(&path).unwrap();
    assert_eq!(c.source_name(), path.display().to_string());
    let err = Contract::load(dir.join("missing.yaml")).unwrap_err();
    assert!(matches!(err, ContractError::Read { .. }));
    assert!(err.to_string().contains("missing.yaml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn crlf_line_endings_and_a_bom_are_fine() {
    let crlf = EXAMPLE.replace('\n', "\r\n");
    let c = Contract::parse(&crlf, "crlf.yaml").unwrap();
    assert_eq!(c.stages().len(), 3);
    let bom = format!("\u{feff}{EXAMPLE}");
    assert!(Contract::parse(&bom, "bom.yaml").is_ok());
    // Positions still count lines with CRLF.
    let bad = crlf.replace("kind: RampContract", "kind: Other");
    let err = Contract::parse(&bad, "crlf.yaml").unwrap_err();
    assert_eq!(err.diagnostics()[0].line, 18);
}

//! Identity resolution (`identity::Directory::identify`, the only implementation):
//! credential → client certificate → source address → unknown.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use crate::{
    contract::Contract,
    identity::Fingerprint,
    policy::view::{Identity, Via, View},
};

const EXAMPLE: &str = include_str!("../../contract/tests/example.yaml");
const ACME_DEMO: &str = "sha256:79665b9580ab672b11d07c958da63e90a03b2b9fbf6365b47972b7d1762406a7";
const GLOBEX: &str = "sha256:8d34c06d6bb69bcb3f20c91e73ed10e81c49a3e25b2f8b2452535972f82f9242";

fn fp(s: &str) -> [u8; 32] {
    *s.parse::<Fingerprint>().expect("fingerprint").as_bytes()
}

fn view(text: &str) -> View {
    View::new(Arc::new(
        Contract::parse(text, "example.yaml").expect("valid contract"),
    ))
}

fn who(v: &View, id: &Identity) -> (String, Via) {
    let name = id
        .client
        .and_then(|c| v.clients.get(c))
        .map_or_else(|| "unknown".to_owned(), ToString::to_string);
    (name, id.via)
}

#[test]
fn identity_resolution_order() {
    let v = view(EXAMPLE);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let globex_src: IpAddr = "127.0.0.2".parse().expect("ip");
    let unknown = *Fingerprint::of_bytes(b"nobody").as_bytes();

    let id = v
        .directory
        .identify(&[fp(ACME_DEMO)], None, None, globex_src);
    assert_eq!(who(&v, &id), ("acme".into(), Via::Credential));
    // An unrecognised credential falls through to the source address...
    let id = v.directory.identify(&[unknown], None, None, globex_src);
    assert_eq!(who(&v, &id), ("globex".into(), Via::Source));
    // ...and is kept, hashed, when nothing identifies the caller.
    let id = v.directory.identify(&[unknown], None, None, local);
    assert_eq!(who(&v, &id), ("unknown".into(), Via::Unknown));
    assert_eq!(id.credential, Some(unknown));
    let id = v.directory.identify(&[], None, None, local);
    assert_eq!((id.client, id.credential), (None, None));
}

#[test]
fn certificates_identify_after_credentials() {
    let cert = Fingerprint::of_der(b"fake der");
    let text = EXAMPLE.replace(
        "      # certificates: [\"sha256:<64 hex>\"]",
        &format!("      certificates: [\"{cert}\"]"),
    );
    let v = view(&text);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let id = v
        .directory
        .identify(&[], Some(*cert.as_bytes()), None, local);
    assert_eq!(who(&v, &id), ("acme".into(), Via::Certificate));
    let id = v
        .directory
        .identify(&[fp(GLOBEX)], Some(*cert.as_bytes()), None, local);
    assert_eq!(who(&v, &id), ("globex".into(), Via::Credential));
}

const ACME_OLD: &str = "sha256:0da98e5574a54de91593da738ae3dfe4a6cca7538145318e06a9cde4b6e062a9";
const ACME_LEAKED: &str = "sha256:f12a46c62ca72e6e85e75dfc7af0b1d88874f5943a02e04cc490a5ca32540774";

fn t(s: &str) -> crate::event::Nanos {
    crate::contract::parse_rfc3339(s).expect("test time")
}

/// `revoked_client::check`, the production rule, on an identity at `at`:
/// the detail of the finding, if any.
fn revoked(v: &View, id: &Identity, at: crate::event::Nanos) -> Option<String> {
    let (unlisted, unknown): (Arc<str>, Arc<str>) = ("unlisted".into(), "unknown".into());
    let ctx = crate::policy::Ctx {
        view: v,
        stage: v.stage_at(at),
        judge_time: at,
        quota_gen: 0,
        unlisted: &unlisted,
        unknown: &unknown,
    };
    crate::policy::revoked_client::check(&ctx, None, id).map(|f| f.detail)
}

#[test]
fn revocations_apply_from_revoked_at() {
    let v = view(EXAMPLE);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let leaked = v.directory.identify(&[fp(ACME_LEAKED)], None, None, local);
    let at = t("2026-11-20T00:00:00Z");
    assert_eq!(revoked(&v, &leaked, at - 1), None);
    assert_eq!(
        revoked(&v, &leaked, at).as_deref(),
        Some("credential revoked since 2026-11-20T00:00:00Z: leaked in a CI log")
    );
    let demo = v.directory.identify(&[fp(ACME_DEMO)], None, None, local);
    assert_eq!(revoked(&v, &demo, at), None);
    // Also for an unidentified caller presenting the revoked key.
    let anon = Identity {
        client: None,
        via: Via::Unknown,
        credential: Some(fp(ACME_LEAKED)),
        token: None,
        certificate: None,
    };
    assert!(revoked(&v, &anon, at).is_some());

    let cert = Fingerprint::of_der(b"cert");
    let extra = format!(
        "    - client: globex\n      revokedAt: \"2026-12-01T00:00:00Z\"\n    - certificate: \"{cert}\"\n      revokedAt: \"2026-11-01T00:00:00Z\"\n  remediation:\n"
    );
    let v = view(&EXAMPLE.replace("  remediation:\n", &extra));
    let dec = t("2026-12-01T00:00:00Z");
    let globex = v.directory.identify(&[fp(GLOBEX)], None, None, local);
    assert_eq!(revoked(&v, &globex, dec - 1), None);
    assert_eq!(
        revoked(&v, &globex, dec).as_deref(),
        Some("client revoked since 2026-12-01T00:00:00Z")
    );
    // A revoked certificate is named before the client's own revocation.
    let with_cert = Identity {
        certificate: Some(*cert.as_bytes()),
        ..globex
    };
    assert_eq!(
        revoked(&v, &with_cert, dec).as_deref(),
        Some("certificate revoked since 2026-11-01T00:00:00Z")
    );
}

/// Credential age per stage, on the credentials as the engine finds them.
#[test]
fn credential_age_per_stage() {
    let v = view(EXAMPLE);
    let c = &v.contract;
    let (pilot, ramp2) = (&c.stages()[0], &c.stages()[1]);
    let listed = |f: &str| {
        let known = v.directory.credentials[&fp(f)];
        c.clients()[known.client]
            .credentials
            .iter()
            .find(|x| *x.fingerprint.as_bytes() == fp(f))
            .expect("listed")
            .clone()
    };
    let (old, demo) = (listed(ACME_OLD), listed(ACME_DEMO));
    let now = t("2026-11-29T00:00:00Z");
    assert!(!pilot.credential_stale(&old, now));
    assert!(ramp2.credential_stale(&old, now));
    assert!(!ramp2.credential_stale(&demo, now));
    // Exactly at max age is not yet stale.
    let thirty_days = crate::contract::parse_duration("30d").expect("duration");
    assert!(!ramp2.credential_stale(&demo, demo.issued_at + thirty_days));
    assert!(ramp2.credential_stale(&demo, demo.issued_at + thirty_days + 1));
}

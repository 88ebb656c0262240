//! Identity resolution (`View::identify`, the only implementation):
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

    let id = v.identify(&[fp(ACME_DEMO)], None, globex_src);
    assert_eq!(who(&v, &id), ("acme".into(), Via::Credential));
    // An unrecognised credential falls through to the source address...
    let id = v.identify(&[unknown], None, globex_src);
    assert_eq!(who(&v, &id), ("globex".into(), Via::Source));
    // ...and is kept, hashed, when nothing identifies the caller.
    let id = v.identify(&[unknown], None, local);
    assert_eq!(who(&v, &id), ("unknown".into(), Via::Unknown));
    assert_eq!(id.credential, Some(unknown));
    let id = v.identify(&[], None, local);
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
    let id = v.identify(&[], Some(*cert.as_bytes()), local);
    assert_eq!(who(&v, &id), ("acme".into(), Via::Certificate));
    let id = v.identify(&[fp(GLOBEX)], Some(*cert.as_bytes()), local);
    assert_eq!(who(&v, &id), ("globex".into(), Via::Credential));
}

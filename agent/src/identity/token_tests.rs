use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::*;

fn jwt(header: &str, payload: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(b"not-checked")
    )
}

const S: i64 = 1_000_000_000;

#[test]
fn claims_become_keys_times_and_kid() {
    let t = jwt(
        r#"{"alg":"RS256","kid":"key-2026"}"#,
        r#"{"iss":"https://idp.example","sub":"svc-billing","azp":"billing-app",
            "iat":1764633600,"exp":1764637200.5,"nbf":1764633500,"aud":["a","b"],"scope":"x"}"#,
    );
    let f = read(t.as_bytes()).unwrap();
    assert_eq!(
        f.subject_key,
        Some(subject_key("https://idp.example", "svc-billing"))
    );
    assert_eq!(
        f.client_key,
        Some(client_key("https://idp.example", "billing-app"))
    );
    assert_eq!(f.issued_at, Some(1_764_633_600 * S));
    assert_eq!(f.expires_at, Some(1_764_637_200 * S));
    assert_eq!(f.not_before, Some(1_764_633_500 * S));
    assert!(f.key_id.unwrap().is("key-2026"));
    // The subject and client id keys differ even for equal text.
    assert_ne!(subject_key("i", "x"), client_key("i", "x"));
    assert_ne!(subject_key("ab", "c"), subject_key("a", "bc"));
}

#[test]
fn client_id_wins_over_azp_and_padding_is_optional() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let payload = base64::engine::general_purpose::URL_SAFE
        .encode(r#"{"iss":"i","client_id":"cid","azp":"other"}"#);
    let t = format!("{header}.{payload}.");
    let f = read(t.as_bytes()).unwrap();
    assert_eq!(f.client_key, Some(client_key("i", "cid")));
    assert_eq!(f.subject_key, None);
    assert_eq!(f.key_id, None);
    assert_eq!(f.issued_at, None);
}

#[test]
fn what_is_not_a_readable_jws_has_no_facts() {
    let ok_header = r#"{"alg":"HS256"}"#;
    for bad in [
        String::new(),
        "acme-demo-token".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d.e".to_owned(),
        ".e30.".to_owned(),
        "e30..x".to_owned(),
        "e30.e30.x y".to_owned(),
        "%%%.e30.x".to_owned(),
        jwt("[1]", "{}"),
        jwt(ok_header, "[]"),
        jwt(ok_header, "null"),
        jwt(ok_header, "{"),
        jwt(ok_header, r#"{"iss":5}"#),
        jwt(ok_header, r#"{"iat":"yesterday"}"#),
        jwt(ok_header, r#"{"sub":"a","sub":"b"}"#),
        jwt(r#"{"kid":7}"#, "{}"),
        format!("{}.{}.x", "e".repeat(MAX_TOKEN), "e30"),
    ] {
        assert_eq!(read(bad.as_bytes()), None, "{bad:.80}");
    }
    assert!(read(jwt(ok_header, "{}").as_bytes()).is_some());
}

#[test]
fn out_of_range_times_and_oversized_claims_are_left_out() {
    let long = "x".repeat(MAX_CLAIM + 1);
    let t = jwt(
        r#"{"kid":""}"#,
        &format!(r#"{{"iss":"i","sub":"{long}","iat":-1,"exp":1e300,"nbf":9.3e18}}"#),
    );
    let f = read(t.as_bytes()).unwrap();
    assert_eq!(f.subject_key, None);
    assert_eq!(
        (f.issued_at, f.expires_at, f.not_before),
        (None, None, None)
    );
    assert_eq!(f.key_id, None, "an empty kid names no key");
}

#[test]
fn a_long_kid_is_cut_for_display_and_never_matches() {
    let kid = "k".repeat(MAX_KID + 10);
    let t = jwt(&format!(r#"{{"kid":"{kid}"}}"#), "{}");
    let k = read(t.as_bytes()).unwrap().key_id.unwrap();
    assert_eq!(k.as_str().len(), MAX_KID);
    assert!(!k.is(&kid) && !k.is(k.as_str()));
    assert!(k.to_string().ends_with('…'));
    // Multi-byte characters are cut on a boundary; control characters are
    // shown escaped.
    let t = jwt(&format!(r#"{{"kid":"{}\n"}}"#, "é".repeat(40)), "{}");
    let k = read(t.as_bytes()).unwrap().key_id.unwrap();
    assert!(k.as_str().chars().all(|c| c == 'é'));
    let t = jwt(r#"{"kid":"a\u001bb"}"#, "{}");
    let k = read(t.as_bytes()).unwrap().key_id.unwrap();
    assert_eq!(k.to_string(), "a\\u{1b}b");
}

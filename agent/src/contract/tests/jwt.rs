//! `clients[].jwt`, `stages[].rotateOnStageStart` and `signingKeys`:
//! accepted as documented, every mistake reported with path and line.

use super::{
    errors::{assert_errors, base, replace},
    *,
};

fn with_jwt_clients(entries: &str) -> String {
    replace(&base(), "  stages:\n", &format!("{entries}  stages:\n"))
}

#[test]
fn jwt_clients_and_token_terms_load() {
    let text = with_jwt_clients(
        "    - name: billing\n      jwt:\n        - { issuer: \"https://idp\", subject: svc }\n        - { issuer: \"https://idp\", clientId: app }\n",
    );
    let text = replace(
        &text,
        "      startsAt: \"2026-11-01T00:00:00Z\"\n",
        "      startsAt: \"2026-11-01T00:00:00Z\"\n      rotateOnStageStart: true\n      signingKeys: [k1, \"k-2\"]\n",
    );
    let c = Contract::parse(&text, "c.yaml").expect("valid");
    let billing = c.client("billing").expect("billing");
    assert_eq!(
        billing.jwt,
        vec![
            JwtMatch {
                issuer: "https://idp".into(),
                claim: JwtClaim::Subject("svc".into())
            },
            JwtMatch {
                issuer: "https://idp".into(),
                claim: JwtClaim::ClientId("app".into())
            },
        ]
    );
    let s1 = c.stage("s1").expect("s1");
    assert!(s1.rotate_on_stage_start);
    assert_eq!(s1.signing_keys, vec!["k1".to_owned(), "k-2".to_owned()]);
    // Every existing contract still loads, with neither term.
    let s = example();
    assert!(
        s.stages()
            .iter()
            .all(|s| !s.rotate_on_stage_start && s.signing_keys.is_empty())
    );
}

#[test]
fn bad_jwt_entries_are_reported() {
    let text = with_jwt_clients(concat!(
        "    - name: idp\n",
        "      jwt:\n",
        "        - { issuer: \"https://idp\", subject: a, clientId: b }\n",
        "        - { subject: a }\n",
        "        - { issuer: \"https://idp\", subject: \"\" }\n",
        "        - { issuer: \"https://idp\" }\n",
        "    - name: idp2\n",
        "      jwt:\n",
        "        - { issuer: \"https://idp\", subject: s }\n",
        "        - { issuer: \"https://idp\", subject: t, extra: 1 }\n",
        "        - { issuer: \"https://idp\", subject: s }\n",
    ));
    assert_errors(
        &text,
        &[
            ("spec.clients[1].jwt[0]", 23, 0, "not both"),
            (
                "spec.clients[1].jwt[1].issuer",
                24,
                0,
                "missing required field `issuer`",
            ),
            (
                "spec.clients[1].jwt[2].subject",
                25,
                0,
                "a claim value is 1 to 256 bytes",
            ),
            ("spec.clients[1].jwt[3]", 26, 0, "needs `subject`"),
            ("spec.clients[2].jwt[1].extra", 30, 0, "unknown field"),
            (
                "spec.clients[2].jwt[2]",
                31,
                0,
                "already listed at spec.clients[2].jwt[0]",
            ),
        ],
    );
}

#[test]
fn bad_token_terms_are_reported() {
    let stage = |extra: &str| {
        replace(
            &base(),
            "      startsAt: \"2026-11-01T00:00:00Z\"\n",
            &format!("      startsAt: \"2026-11-01T00:00:00Z\"\n{extra}"),
        )
    };
    assert_errors(
        &stage("      rotateOnStageStart: yes\n      signingKeys: []\n"),
        &[
            (
                "spec.stages[0].rotateOnStageStart",
                24,
                0,
                "expected true or false",
            ),
            (
                "spec.stages[0].signingKeys",
                25,
                0,
                "an empty signingKeys list rejects every token",
            ),
        ],
    );
    let long = "k".repeat(65);
    assert_errors(
        &stage(&format!("      signingKeys: [a, a, \"{long}\", \"\"]\n")),
        &[
            ("spec.stages[0].signingKeys[1]", 24, 0, "listed twice"),
            (
                "spec.stages[0].signingKeys[2]",
                24,
                0,
                "a key id is 1 to 64 bytes",
            ),
            (
                "spec.stages[0].signingKeys[3]",
                24,
                0,
                "a key id is 1 to 64 bytes",
            ),
        ],
    );
}

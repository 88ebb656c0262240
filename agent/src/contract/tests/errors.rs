//! Every kind of structural contract error (fields, references, names,
//! order), with its exact field path and position. Bad values are in
//! `value_errors`.

use super::*;

pub(super) const FP_A: &str =
    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
pub(super) const FP_B: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A valid contract; `{..}` placeholders are filled per test. Line numbers
/// in the tests refer to this layout.
pub(super) fn base() -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: t
spec:
  dataClasses:
    - name: pii
      encryption: required
      minTlsVersion: "1.2"
      forbiddenCiphers: ["*_CBC_*"]
  endpoints:
    - name: api
      dataClass: pii
      hosts: ["api.example.com", "10.0.0.0/24"]
      ports: [443]
  clients:
    - name: acme
      credentials:
        - fingerprint: "{FP_A}"
          issuedAt: "2026-01-01T00:00:00Z"
  stages:
    - name: s1
      startsAt: "2026-11-01T00:00:00Z"
      quotas:
        - {{ client: acme, endpoint: api, requestsPerSecond: 5, burst: 10 }}
"#
    )
}

pub(super) fn diagnostics(text: &str) -> Vec<Diagnostic> {
    match Contract::parse(text, "c.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// Asserts exactly these errors, in order: (path, line, column, a piece of
/// the message). Column 0 means "don't check".
#[track_caller]
pub(super) fn assert_errors(text: &str, want: &[(&str, usize, usize, &str)]) {
    let got = diagnostics(text);
    let show = got
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got.len(), want.len(), "got:\n{show}");
    for (d, (path, line, column, msg)) in got.iter().zip(want) {
        assert_eq!(d.path, *path, "got:\n{show}");
        assert_eq!(d.line, *line, "{d}");
        if *column != 0 {
            assert_eq!(d.column, *column, "{d}");
        }
        assert!(d.message.contains(msg), "`{}` lacks `{msg}`", d.message);
    }
}

pub(super) fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "base lacks {from}");
    text.replacen(from, to, 1)
}

#[test]
fn duplicate_keys_are_reported_even_when_empty() {
    let text = replace(
        &base(),
        "      ports: [443]\n",
        "      ports:\n      ports: [443]\n",
    );
    assert_errors(
        &text,
        &[(
            "spec.endpoints[0].ports",
            16,
            7,
            "field `ports` is given twice",
        )],
    );
}

#[test]
fn base_is_valid() {
    assert_errors(&base(), &[]);
}

#[test]
fn unknown_fields_everywhere_are_all_reported() {
    let text = replace(
        &base(),
        "kind: RampContract",
        "kind: RampContract\nextra: 1",
    );
    let text = replace(
        &text,
        "      ports: [443]",
        "      ports: [443]\n      hostz: [a]",
    );
    let text = replace(&text, "burst: 10 }", "burst: 10, rate: 3 }");
    assert_errors(
        &text,
        &[
            (
                "extra",
                3,
                1,
                "unknown field `extra`; expected one of: apiVersion",
            ),
            ("spec.endpoints[0].hostz", 17, 7, "unknown field `hostz`"),
            (
                "spec.stages[0].quotas[0].rate",
                27,
                75,
                "unknown field `rate`",
            ),
        ],
    );
}

#[test]
fn wrong_api_version_and_kind() {
    let text = replace(&base(), "rampwatch.io/v1", "rampwatch.io/v2");
    let text = replace(&text, "kind: RampContract", "kind: Contract");
    assert_errors(
        &text,
        &[
            ("apiVersion", 1, 13, "must be `rampwatch.io/v1`"),
            ("kind", 2, 7, "must be `RampContract`"),
        ],
    );
}

#[test]
fn missing_required_fields_point_at_their_mapping() {
    let text = replace(&base(), "      dataClass: pii\n", "");
    let text = replace(&text, "          issuedAt: \"2026-01-01T00:00:00Z\"\n", "");
    assert_errors(
        &text,
        &[
            (
                "spec.endpoints[0].dataClass",
                12,
                7,
                "missing required field `dataClass`",
            ),
            (
                "spec.clients[0].credentials[0].issuedAt",
                18,
                11,
                "missing required field",
            ),
        ],
    );
    assert_errors(
        "apiVersion: rampwatch.io/v1\nkind: RampContract\n",
        &[("metadata", 1, 1, "missing"), ("spec", 1, 1, "missing")],
    );
}

#[test]
fn dangling_references() {
    let text = replace(&base(), "dataClass: pii", "dataClass: secret");
    let text = replace(
        &text,
        "client: acme, endpoint: api",
        "client: acne, endpoint: apj",
    );
    let text = format!(
        "{text}  revocations:\n    - client: nobody\n      revokedAt: \"2026-11-02T00:00:00Z\"\n"
    );
    assert_errors(
        &text,
        &[
            (
                "spec.endpoints[0].dataClass",
                13,
                18,
                "there is no data class named `secret` (defined: pii)",
            ),
            (
                "spec.stages[0].quotas[0].client",
                25,
                21,
                "there is no client named `acne` (defined: acme)",
            ),
            (
                "spec.stages[0].quotas[0].endpoint",
                25,
                37,
                "there is no endpoint named `apj`",
            ),
            (
                "spec.revocations[0].client",
                27,
                15,
                "there is no client named `nobody`",
            ),
        ],
    );
}

#[test]
fn duplicate_names_keys_fingerprints_and_quotas() {
    let text = replace(
        &base(),
        "  endpoints:\n",
        "    - name: pii\n      encryption: optional\n  endpoints:\n",
    );
    let text = replace(
        &text,
        "  stages:\n",
        &format!("    - name: acme\n      certificates: [\"{FP_A}\"]\n  stages:\n"),
    );
    let text = replace(
        &text,
        "burst: 10 }\n",
        "burst: 10 }\n        - { client: acme, endpoint: api, requestsPerSecond: 1 }\n    - name: s1\n      startsAt: \"2026-12-01T00:00:00Z\"\n      startsAt: \"2026-12-02T00:00:00Z\"\n",
    );
    assert_errors(
        &text,
        &[
            (
                "spec.dataClasses[1].name",
                11,
                13,
                "duplicate data class name `pii` (first defined at spec.dataClasses[0])",
            ),
            (
                "spec.clients[1].name",
                23,
                13,
                "duplicate client name `acme`",
            ),
            (
                "spec.clients[1].certificates[0]",
                24,
                22,
                "already listed at spec.clients[0].credentials[0].fingerprint",
            ),
            (
                "spec.stages[0].quotas[1]",
                30,
                11,
                "a second quota for client `acme` on endpoint `api`",
            ),
            ("spec.stages[1].name", 31, 13, "duplicate stage name `s1`"),
            (
                "spec.stages[1].startsAt",
                33,
                7,
                "field `startsAt` is given twice",
            ),
        ],
    );
}

#[test]
fn stages_with_equal_or_unordered_start_times() {
    let text = format!(
        "{}    - name: s2\n      startsAt: \"2026-11-01T00:00:00Z\"\n    - name: s3\n      startsAt: \"2026-10-01T00:00:00Z\"\n",
        base()
    );
    assert_errors(
        &text,
        &[
            ("spec.stages[1].startsAt", 27, 17, "same time as stage `s1`"),
            (
                "spec.stages[2].startsAt",
                29,
                17,
                "starts before the previous stage `s2`",
            ),
        ],
    );
}

#[test]
fn revocations_name_exactly_one_target() {
    let text = format!(
        "{}  revocations:\n    - fingerprint: \"{FP_B}\"\n      client: acme\n      revokedAt: \"2026-11-02T00:00:00Z\"\n    - reason: nothing named\n",
        base()
    );
    assert_errors(
        &text,
        &[
            (
                "spec.revocations[0]",
                27,
                7,
                "exactly one of `fingerprint`, `client` or `certificate`; this one names fingerprint and client",
            ),
            ("spec.revocations[1]", 30, 7, "this one names none"),
            (
                "spec.revocations[1].revokedAt",
                30,
                7,
                "missing required field",
            ),
        ],
    );
}

#[test]
fn wrong_node_types_and_reserved_names() {
    let text = replace(
        &base(),
        "hosts: [\"api.example.com\", \"10.0.0.0/24\"]",
        "hosts: api.example.com",
    );
    let text = replace(&text, "- name: acme\n", "- name: unknown\n");
    let text = replace(&text, "  stages:\n", "      sources: {a: b}\n  stages:\n");
    assert_errors(
        &text,
        &[
            (
                "spec.endpoints[0].hosts",
                14,
                14,
                "expected a list, found a scalar",
            ),
            (
                "spec.clients[0].name",
                17,
                13,
                "the name `unknown` is reserved",
            ),
            (
                "spec.clients[0].sources",
                21,
                16,
                "expected a list, found a mapping",
            ),
            (
                "spec.stages[0].quotas[0].client",
                26,
                21,
                "there is no client named `acme` (no client is defined)",
            ),
        ],
    );
    let text = replace(&base(), "  - name: api\n", "  - name: unlisted\n");
    let errs = diagnostics(&text);
    assert_eq!(
        errs.first().map(|d| d.path.as_str()),
        Some("spec.endpoints[0].name")
    );
    assert!(errs[0].message.contains("reserved"));
}

#[test]
fn clients_need_some_way_to_be_recognised_and_contracts_need_stages() {
    let text = replace(&base(), "  stages:\n", "    - name: ghost\n  stages:\n");
    assert_errors(
        &text,
        &[(
            "spec.clients[1]",
            21,
            7,
            "lists no credentials, jwt, certificates, sources or workloads",
        )],
    );
    let text = base();
    let text = text.split("  stages:").next().unwrap().to_owned() + "  stages: []\n";
    assert_errors(&text, &[("spec.stages", 21, 11, "at least one stage")]);
}

#[test]
fn yaml_syntax_errors_empty_files_and_non_utf8() {
    let text = replace(
        &base(),
        "hosts: [\"api.example.com\", \"10.0.0.0/24\"]",
        "hosts: [\"api.example.com\", \"10.0.0.0/24\"",
    );
    let errs = diagnostics(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "");
    assert!(
        errs[0].message.starts_with("YAML syntax error"),
        "{}",
        errs[0]
    );
    assert!((14..=16).contains(&errs[0].line), "{}", errs[0]);

    assert_errors("", &[("", 1, 1, "the file is empty")]);
    assert_errors(
        "- a\n- b\n",
        &[("", 1, 1, "expected a mapping of fields, found a list")],
    );
    let bytes = b"apiVersion: rampwatch.io/v1\nkind: \xff\n";
    let err = Contract::parse_bytes(bytes, "c.yaml").unwrap_err();
    assert_eq!(err.diagnostics()[0].line, 2);
    assert!(err.diagnostics()[0].message.contains("UTF-8"));
}

#[test]
fn from_str_uses_a_placeholder_source_name() {
    let err = "kind: RampContract\n".parse::<Contract>().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("<string>:1:1: apiVersion: missing"),
        "{err}"
    );
    assert!(base().parse::<Contract>().is_ok());
}

#[test]
fn error_display_is_file_line_col_path_message() {
    let text = replace(&base(), "rampwatch.io/v1", "v1");
    let err = Contract::parse(&text, "contracts/c.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "contracts/c.yaml:1:13: apiVersion: must be `rampwatch.io/v1`, found `v1`"
    );
}

#[test]
fn secrets_pasted_into_fingerprints_are_not_echoed_in_full() {
    for secret in ["acme-demo-token", "sha256:acme-demo-token"] {
        let text = replace(&base(), FP_A, secret);
        let err = Contract::parse(&text, "c.yaml").unwrap_err().to_string();
        assert!(!err.contains("acme-demo"), "{err}");
        assert!(err.contains("not a fingerprint"), "{err}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let errs = diagnostics(&"[".repeat(200_000));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("recursion limit"), "{}", errs[0]);
}

/// Bad input never panics: every prefix of the example, and the example
/// with bytes overwritten at pseudo-random places.
#[test]
fn truncated_and_corrupted_contracts_never_panic() {
    for (end, _) in EXAMPLE.char_indices().step_by(3) {
        let _ = Contract::parse(&EXAMPLE[..end], "c.yaml");
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let noise = b"{}[]:,-'\"&*!|>#%@` \n\t0aZ\xff";
    for _ in 0..1000 {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            let at = usize::try_from(next() % bytes.len() as u64).unwrap();
            let with = noise[usize::try_from(next() % noise.len() as u64).unwrap()];
            bytes[at] = with;
        }
        if let Err(e) = Contract::parse_bytes(&bytes, "c.yaml") {
            assert!(!e.diagnostics().is_empty());
        }
    }
}

#[test]
fn workload_selectors_are_checked_field_by_field() {
    let with = |sel: &str| {
        replace(
            &base(),
            "  stages:\n",
            &format!("    - name: wl\n      workloads:\n        - {sel}\n  stages:\n"),
        )
    };
    let ok = with("{namespace: partner-acme, pod: \"sync-*\"}");
    let c = Contract::parse(&ok, "c.yaml").expect("a namespace and pod glob");
    let cl = c
        .clients()
        .iter()
        .find(|c| &*c.name == "wl")
        .expect("client wl");
    assert_eq!(cl.workloads.len(), 1);
    assert_eq!(
        cl.workloads[0].pod.as_ref().map(|g| g.as_str()),
        Some("sync-*")
    );
    for (sel, path, msg) in [
        ("{}", "spec.clients[1].workloads[0]", "names none of"),
        (
            "{pod: \"\"}",
            "spec.clients[1].workloads[0].pod",
            "empty pattern",
        ),
        (
            "{pod: \"sync-[\"}",
            "spec.clients[1].workloads[0].pod",
            "not a glob pattern",
        ),
        (
            "{exe: curl}",
            "spec.clients[1].workloads[0].exe",
            "absolute path",
        ),
        (
            "{pod: a, node: b}",
            "spec.clients[1].workloads[0].node",
            "unknown field",
        ),
        (
            "{pod: [a]}",
            "spec.clients[1].workloads[0].pod",
            "expected a string",
        ),
    ] {
        let errs = diagnostics(&with(sel));
        assert_eq!(errs.len(), 1, "{sel}: {errs:?}");
        assert_eq!(errs[0].path, path, "{sel}");
        assert_eq!(errs[0].line, 23, "{sel}: {errs:?}");
        assert!(errs[0].message.contains(msg), "{sel}: {}", errs[0].message);
    }
}

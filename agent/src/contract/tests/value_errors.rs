//! Bad values: times, durations, TLS versions, CIDRs, hosts, ports,
//! fingerprints, quotas; each with its exact field path and position.

use super::errors::{FP_A, assert_errors, base, replace};
use crate::contract::{Contract, Quota};

#[test]
fn bad_times_durations_and_tls_versions() {
    let text = replace(&base(), "2026-01-01T00:00:00Z", "2026-02-30T00:00:00Z");
    let text = replace(&text, "minTlsVersion: \"1.2\"", "minTlsVersion: \"1.4\"");
    let text = replace(&text, "\"2026-11-01T00:00:00Z\"", "2026-11-01");
    let text = replace(
        &text,
        "      quotas:\n",
        "      credentialMaxAge: 90days\n      quotas:\n",
    );
    let text =
        format!("{text}  remediation:\n    warnAfter: 1h\n    breachAfter: 15m\n    extra: x\n");
    assert_errors(
        &text,
        &[
            (
                "spec.dataClasses[0].minTlsVersion",
                9,
                22,
                "is not a TLS version",
            ),
            (
                "spec.clients[0].credentials[0].issuedAt",
                20,
                21,
                "not an RFC 3339 time",
            ),
            ("spec.stages[0].startsAt", 23, 17, "not an RFC 3339 time"),
            (
                "spec.stages[0].credentialMaxAge",
                24,
                25,
                "`90days` is not a duration",
            ),
            (
                "spec.remediation.breachAfter",
                29,
                18,
                "shorter than warnAfter",
            ),
            ("spec.remediation.extra", 30, 5, "unknown field"),
        ],
    );
    // Unquoted 1.2 is still the text "1.2", not a float.
    let text = replace(&base(), "minTlsVersion: \"1.2\"", "minTlsVersion: 1.2");
    assert_errors(&text, &[]);
    let text = replace(&base(), "minTlsVersion: \"1.2\"", "minTlsVersion: ssl3");
    assert_errors(
        &text,
        &[("spec.dataClasses[0].minTlsVersion", 9, 22, "`ssl3`")],
    );
}

#[test]
fn bad_cidrs_hosts_and_ports() {
    let text = replace(
        &base(),
        "\"10.0.0.0/24\"",
        "\"10.0.0.0/33\", \"api.example.com:443\", \"bad host\"",
    );
    let text = replace(
        &text,
        "ports: [443]",
        "ports: [0, 65536, \"443\", 443, 443]",
    );
    let text = replace(
        &text,
        "          issuedAt: \"2026-01-01T00:00:00Z\"\n",
        "          issuedAt: \"2026-01-01T00:00:00Z\"\n      sources: [\"10.1.0.0/16\", \"10.1.0.0/99\", \"300.1.1.1\"]\n",
    );
    let text = replace(
        &text,
        "spec:\n",
        "spec:\n  scope:\n    networks: [nope]\n    ports: []\n",
    );
    assert_errors(
        &text,
        &[
            (
                "spec.scope.networks[0]",
                7,
                16,
                "`nope` is not a CIDR or IP address",
            ),
            (
                "spec.scope.ports",
                8,
                12,
                "an empty port list matches nothing",
            ),
            (
                "spec.endpoints[0].hosts[1]",
                17,
                34,
                "is not a valid IP address or CIDR",
            ),
            ("spec.endpoints[0].hosts[2]", 17, 49, "carries a port"),
            ("spec.endpoints[0].hosts[3]", 17, 72, "is not a host name"),
            ("spec.endpoints[0].ports[0]", 18, 15, "`0` is not a port"),
            (
                "spec.endpoints[0].ports[1]",
                18,
                18,
                "`65536` is not a port",
            ),
            (
                "spec.endpoints[0].ports[2]",
                18,
                25,
                "expected a number, found the string `443`",
            ),
            (
                "spec.endpoints[0].ports[4]",
                18,
                37,
                "port 443 is listed twice",
            ),
            (
                "spec.clients[0].sources[1]",
                24,
                32,
                "`10.1.0.0/99` is not a CIDR",
            ),
            (
                "spec.clients[0].sources[2]",
                24,
                47,
                "`300.1.1.1` is not a CIDR",
            ),
        ],
    );
}

#[test]
fn bad_fingerprints() {
    let upper = FP_A.to_uppercase().replace("SHA256", "sha256");
    let text = replace(&base(), FP_A, &upper);
    let text = replace(
        &text,
        "  stages:\n",
        "      certificates: [\"ba7816bf\", \"sha256:abc\"]\n  stages:\n",
    );
    let text = format!(
        "{text}  revocations:\n    - certificate: \"sha256:zz\"\n      revokedAt: \"2026-11-02T00:00:00Z\"\n"
    );
    assert_errors(
        &text,
        &[
            (
                "spec.clients[0].credentials[0].fingerprint",
                19,
                24,
                "only lowercase hex digits",
            ),
            (
                "spec.clients[0].certificates[0]",
                21,
                22,
                "starts with `sha256:`",
            ),
            (
                "spec.clients[0].certificates[1]",
                21,
                34,
                "this one has 3 characters",
            ),
            (
                "spec.revocations[0].certificate",
                28,
                20,
                "this one has 2 characters",
            ),
        ],
    );
}

#[test]
fn negative_or_fractional_quotas() {
    let text = replace(
        &base(),
        "requestsPerSecond: 5, burst: 10",
        "requestsPerSecond: -5, burst: -1",
    );
    assert_errors(
        &text,
        &[
            (
                "spec.stages[0].quotas[0].requestsPerSecond",
                25,
                61,
                "must not be negative, found `-5`",
            ),
            (
                "spec.stages[0].quotas[0].burst",
                25,
                72,
                "must not be negative, found `-1`",
            ),
        ],
    );
    let text = replace(
        &base(),
        "requestsPerSecond: 5, burst: 10",
        "requestsPerSecond: fast, burst: 1.5",
    );
    assert_errors(
        &text,
        &[
            (
                "spec.stages[0].quotas[0].requestsPerSecond",
                25,
                61,
                "`fast` is not a number",
            ),
            (
                "spec.stages[0].quotas[0].burst",
                25,
                74,
                "must be a whole number",
            ),
        ],
    );
    // Without a burst: one second's worth.
    let text = replace(
        &base(),
        "requestsPerSecond: 5, burst: 10",
        "requestsPerSecond: 2.5",
    );
    let c = Contract::parse(&text, "c.yaml").unwrap();
    assert_eq!(
        c.stages()[0].quota("acme", "api"),
        Some(Quota { rps: 2.5, burst: 3 })
    );
}

#[test]
fn bad_paths_headers_hosts_and_zero_max_age() {
    let text = replace(
        &base(),
        "      ports: [443]\n",
        "      ports: [443]\n      paths: [\"v1/x\", \"/ok\"]\n",
    );
    let text = replace(
        &text,
        "        - fingerprint:",
        "        - header: \"x api key\"\n          fingerprint:",
    );
    let text = replace(
        &text,
        "      quotas:\n",
        "      credentialMaxAge: 0s\n      quotas:\n",
    );
    assert_errors(
        &text,
        &[
            (
                "spec.endpoints[0].paths[0]",
                16,
                15,
                "`v1/x` is not a path prefix; paths start with '/'",
            ),
            (
                "spec.clients[0].credentials[0].header",
                20,
                19,
                "`x api key` is not an HTTP header name",
            ),
            (
                "spec.stages[0].credentialMaxAge",
                26,
                25,
                "makes every credential stale",
            ),
        ],
    );
    let text = replace(
        &base(),
        "hosts: [\"api.example.com\", \"10.0.0.0/24\"]",
        "hosts: []",
    );
    assert_errors(
        &text,
        &[("spec.endpoints[0].hosts", 14, 14, "at least one host name")],
    );
    // Header names are case-insensitive: stored lowercase.
    let text = replace(
        &base(),
        "        - fingerprint:",
        "        - header: X-Api-Key\n          fingerprint:",
    );
    let c = Contract::parse(&text, "c.yaml").unwrap();
    assert_eq!(c.clients()[0].credentials[0].header, "x-api-key");
}

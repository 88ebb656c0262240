//! Contract YAML for the live tests, from one builder: a test names only
//! what its contract is about (classes, endpoints, token clients, stages and
//! their quotas, revocations), and the document around it is written once.
//!
//! Clients are identified by a bearer token sent in `Authorization`; the
//! contract holds its SHA-256 fingerprint, as an operator's would.

use std::fmt::Write as _;

use crate::sha256_hex;

/// `(client, endpoint, requestsPerSecond, burst)`.
pub type Quota<'a> = (&'a str, &'a str, u32, u32);

/// A `RampContract` document, built up and rendered by [`Self::render`].
#[derive(Debug, Clone, Default)]
pub struct ContractYaml {
    name: String,
    classes: String,
    endpoints: String,
    clients: String,
    stages: String,
    revocations: String,
    remediation: Option<(String, Option<String>)>,
}

impl ContractYaml {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// A data class that requires authentication; `encryption` is
    /// `required` (then TLS 1.2 at least) or `optional`.
    pub fn class(mut self, name: &str, encryption: &str) -> Self {
        let _ = write!(
            self.classes,
            "    - name: {name}\n      encryption: {encryption}\n      authentication: required\n"
        );
        if encryption == "required" {
            self.classes.push_str("      minTlsVersion: \"1.2\"\n");
        }
        self
    }

    /// An endpoint of `class` on `hosts` and `ports`; `paths` empty for
    /// every path.
    pub fn endpoint(
        mut self,
        name: &str,
        class: &str,
        hosts: &[&str],
        ports: &[u16],
        paths: &[&str],
    ) -> Self {
        let list = |items: Vec<String>| items.join(", ");
        let _ = write!(
            self.endpoints,
            "    - name: {name}\n      dataClass: {class}\n      hosts: [{}]\n      ports: [{}]\n",
            list(hosts.iter().map(|h| format!("\"{h}\"")).collect()),
            list(ports.iter().map(u16::to_string).collect()),
        );
        if !paths.is_empty() {
            let _ = writeln!(
                self.endpoints,
                "      paths: [{}]",
                list(paths.iter().map(|p| format!("\"{p}\"")).collect())
            );
        }
        self
    }

    /// A client identified by the bearer `token`, issued at `issued_at`
    /// (RFC 3339).
    pub fn client(mut self, name: &str, token: &str, issued_at: &str) -> Self {
        let _ = write!(
            self.clients,
            "    - name: {name}\n      credentials:\n        - {{ header: authorization, fingerprint: \"sha256:{}\", issuedAt: \"{issued_at}\" }}\n",
            sha256_hex(token)
        );
        self
    }

    /// One more bearer `token` for the client added last.
    pub fn credential(mut self, token: &str, issued_at: &str) -> Self {
        let _ = writeln!(
            self.clients,
            "        - {{ header: authorization, fingerprint: \"sha256:{}\", issuedAt: \"{issued_at}\" }}",
            sha256_hex(token)
        );
        self
    }

    /// A stage from `starts_at` (RFC 3339), with `credentialMaxAge` when
    /// given and its quotas.
    pub fn stage(
        mut self,
        name: &str,
        starts_at: &str,
        credential_max_age: Option<&str>,
        quotas: &[Quota<'_>],
    ) -> Self {
        let _ = write!(
            self.stages,
            "    - name: {name}\n      startsAt: \"{starts_at}\"\n"
        );
        if let Some(age) = credential_max_age {
            let _ = writeln!(self.stages, "      credentialMaxAge: {age}");
        }
        if !quotas.is_empty() {
            self.stages.push_str("      quotas:\n");
        }
        for (client, endpoint, rps, burst) in quotas {
            let _ = writeln!(
                self.stages,
                "        - {{ client: {client}, endpoint: {endpoint}, requestsPerSecond: {rps}, burst: {burst} }}"
            );
        }
        self
    }

    /// The credential `token` revoked at `at` (RFC 3339).
    pub fn revoked(mut self, token: &str, at: &str) -> Self {
        let _ = write!(
            self.revocations,
            "    - fingerprint: \"sha256:{}\"\n      revokedAt: \"{at}\"\n      reason: leaked in a test\n",
            sha256_hex(token)
        );
        self
    }

    /// The global remediation window (`15m`, `24h`, …); without
    /// `breach_after` the contract's default applies.
    pub fn remediation(mut self, warn_after: &str, breach_after: Option<&str>) -> Self {
        self.remediation = Some((warn_after.to_owned(), breach_after.map(str::to_owned)));
        self
    }

    pub fn render(&self) -> String {
        let mut doc = format!(
            "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: {}\nspec:\n",
            self.name
        );
        for (key, body) in [
            ("dataClasses", &self.classes),
            ("endpoints", &self.endpoints),
            ("clients", &self.clients),
            ("stages", &self.stages),
            ("revocations", &self.revocations),
        ] {
            if !body.is_empty() {
                let _ = write!(doc, "  {key}:\n{body}");
            }
        }
        if let Some((warn, breach)) = &self.remediation {
            let _ = write!(doc, "  remediation:\n    warnAfter: {warn}\n");
            if let Some(breach) = breach {
                let _ = writeln!(doc, "    breachAfter: {breach}");
            }
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builder writes what a test would have written by hand.
    #[test]
    fn renders_the_document_a_test_means() {
        let doc = ContractYaml::new("t")
            .class("pii", "required")
            .endpoint(
                "secure",
                "pii",
                &["127.0.0.1", "::1"],
                &[443, 8443],
                &["/v1/"],
            )
            .client("acme", "tok", "2026-11-01T00:00:00Z")
            .credential("tok2", "2026-11-02T00:00:00Z")
            .stage(
                "pilot",
                "2026-01-01T00:00:00Z",
                Some("365d"),
                &[("acme", "secure", 10, 20)],
            )
            .revoked("old", "2026-03-01T00:00:00Z")
            .remediation("15m", Some("24h"))
            .render();
        let want = format!(
            r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: t
spec:
  dataClasses:
    - name: pii
      encryption: required
      authentication: required
      minTlsVersion: "1.2"
  endpoints:
    - name: secure
      dataClass: pii
      hosts: ["127.0.0.1", "::1"]
      ports: [443, 8443]
      paths: ["/v1/"]
  clients:
    - name: acme
      credentials:
        - {{ header: authorization, fingerprint: "sha256:{tok}", issuedAt: "2026-11-01T00:00:00Z" }}
        - {{ header: authorization, fingerprint: "sha256:{tok2}", issuedAt: "2026-11-02T00:00:00Z" }}
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      credentialMaxAge: 365d
      quotas:
        - {{ client: acme, endpoint: secure, requestsPerSecond: 10, burst: 20 }}
  revocations:
    - fingerprint: "sha256:{old}"
      revokedAt: "2026-03-01T00:00:00Z"
      reason: leaked in a test
  remediation:
    warnAfter: 15m
    breachAfter: 24h
"#,
            tok = sha256_hex("tok"),
            tok2 = sha256_hex("tok2"),
            old = sha256_hex("old"),
        );
        assert_eq!(doc, want);
    }
}

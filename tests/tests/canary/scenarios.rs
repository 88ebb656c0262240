//! The live canary scenarios: what each client sends, and the contract
//! that knows the keys so they are parsed, hashed and matched.

use std::time::{SystemTime, UNIX_EPOCH};

use tests::canary::{Canaries, base64, hex};

use crate::traffic::{get, h2_with};

/// The contract's clients and revocations, written as YAML.
#[derive(Default)]
pub struct ContractText {
    clients: String,
    revocations: String,
}

impl ContractText {
    pub fn client(&mut self, name: &str, header: &str, value: &str, issued: &str) {
        let fp = hex(&agent_fingerprint(header, value));
        self.clients.push_str(&format!(
            "    - name: {name}\n      credentials:\n        - header: {header}\n          \
             fingerprint: \"sha256:{fp}\"\n          issuedAt: \"{issued}\"\n"
        ));
    }

    pub fn revoke(&mut self, header: &str, value: &str) {
        let fp = hex(&agent_fingerprint(header, value));
        self.revocations.push_str(&format!(
            "    - fingerprint: \"sha256:{fp}\"\n      revokedAt: \"2000-01-02T00:00:00Z\"\n      \
             reason: planted by the canary test\n"
        ));
    }

    pub fn yaml(&self, ports: &Ports) -> String {
        let Ports {
            ledger,
            orders,
            unlisted,
            tls,
        } = ports;
        format!(
            "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: canary-live\n\
             spec:\n  scope:\n    networks: [\"127.0.0.0/8\"]\n    ports: [{ledger}, {orders}, {unlisted}, {tls}]\n\
             \x20 dataClasses:\n\
             \x20   - name: pii\n      encryption: required\n      authentication: required\n      minTlsVersion: \"1.2\"\n\
             \x20   - name: internal\n      encryption: optional\n      authentication: required\n\
             \x20 endpoints:\n\
             \x20   - name: ledger\n      dataClass: pii\n      hosts: [\"127.0.0.1\"]\n      ports: [{ledger}]\n      paths: [\"/v1/ledger\"]\n\
             \x20   - name: orders\n      dataClass: internal\n      hosts: [\"127.0.0.1\"]\n      ports: [{orders}]\n      paths: [\"/v1/orders\"]\n\
             \x20   - name: payments\n      dataClass: pii\n      hosts: [\"127.0.0.1\"]\n      ports: [{tls}]\n\
             \x20 clients:\n{}\
             \x20 stages:\n    - name: pilot\n      startsAt: \"2000-01-01T00:00:00Z\"\n      credentialMaxAge: 30d\n\
             \x20     quotas:\n        - {{ client: pipe, endpoint: orders, requestsPerSecond: 1, burst: 1 }}\n\
             \x20 revocations:\n{}",
            self.clients, self.revocations
        )
    }
}

fn agent_fingerprint(header: &str, value: &str) -> [u8; 32] {
    *agent::identity::credential_fingerprint(header, value.as_bytes()).as_bytes()
}

pub struct Ports {
    pub ledger: u16,
    pub orders: u16,
    pub unlisted: u16,
    pub tls: u16,
}

/// What the agent must show once it has seen the traffic.
pub struct Expect {
    pub clients: Vec<&'static str>,
    pub kinds: Vec<&'static str>,
    /// The key of client `after`, sent once the garbage is through.
    pub after_key: String,
}

/// Sends every canary scenario; returns the contract and expectations.
pub fn plan(c: &mut Canaries) -> (ContractText, Vec<Step>, Expect) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let hour_ago = i64::try_from(now.as_nanos()).expect("nanos fit i64") - 3_600_000_000_000;
    let issued = agent::contract::format_rfc3339(hour_ago);
    let mut k = ContractText::default();
    let mut steps = Vec::new();
    let mut clients = Vec::new();

    let bearer = format!("Bearer {}", c.mint("authorization bearer"));
    k.client("bearer", "authorization", &bearer, &issued);
    steps.push(Step::Curl(
        Port::Ledger,
        "/v1/ledger/entries".into(),
        vec!["-H".into(), format!("Authorization: {bearer}")],
    ));
    clients.push("bearer");

    let password = c.mint("basic password (curl -u)");
    let basic_b64 = base64(format!("svc-user:{password}").as_bytes());
    c.plant("basic credential (base64)", &basic_b64);
    k.client(
        "basic",
        "authorization",
        &format!("Basic {basic_b64}"),
        &issued,
    );
    steps.push(Step::Curl(
        Port::Orders,
        "/v1/orders".into(),
        vec!["-u".into(), format!("svc-user:{password}")],
    ));
    clients.push("basic");

    for (name, header, value) in [
        ("apikey", "x-api-key", c.mint("x-api-key")),
        (
            "proxy",
            "proxy-authorization",
            format!("Bearer {}", c.mint("proxy-authorization")),
        ),
        (
            "cookie",
            "cookie",
            format!("theme=dark; session={}", c.mint("cookie")),
        ),
    ] {
        k.client(name, header, &value, &issued);
        steps.push(Step::Curl(
            Port::Orders,
            "/v1/orders/7".into(),
            vec!["-H".into(), format!("{header}: {value}")],
        ));
        clients.push(name);
    }
    // curl -b sends the Cookie header itself.
    let jar = format!("session={}", c.mint("cookie via curl -b"));
    steps.push(Step::Curl(
        Port::Orders,
        "/v1/orders".into(),
        vec!["-b".into(), jar],
    ));

    let revoked = format!("Bearer {}", c.mint("revoked bearer"));
    k.client("revoked", "authorization", &revoked, &issued);
    k.revoke("authorization", &revoked);
    let stale = format!("Bearer {}", c.mint("stale bearer"));
    k.client("stale", "authorization", &stale, "2000-01-01T00:00:00Z");
    for v in [&revoked, &stale] {
        steps.push(Step::Curl(
            Port::Orders,
            "/v1/orders".into(),
            vec!["-H".into(), format!("Authorization: {v}")],
        ));
    }
    clients.extend(["revoked", "stale"]);
    let unknown = format!("Authorization: Bearer {}", c.mint("unknown bearer"));
    steps.push(Step::Curl(
        Port::Orders,
        "/v1/orders".into(),
        vec!["-H".into(), unknown],
    ));

    // Secrets in the URL of unlisted paths, whose path goes into details.
    for (name, path) in [
        (
            "query",
            format!("/v2/admin/export?api_key={}", c.mint("query string")),
        ),
        (
            "jsession",
            format!(
                "/v2/cart;jsessionid={}",
                c.mint("jsessionid path parameter")
            ),
        ),
    ] {
        let key = c.mint("x-api-key of an unlisted-path client");
        k.client(name, "x-api-key", &key, &issued);
        steps.push(Step::Curl(
            Port::Orders,
            path,
            vec!["-H".into(), format!("X-Api-Key: {key}")],
        ));
        clients.push(name);
    }
    // Absolute-form target with userinfo and a query (curl --request-target).
    let key = c.mint("x-api-key of the absolute-form client");
    k.client("absolute", "x-api-key", &key, &issued);
    let target = format!(
        "http://svc:{}@127.0.0.1/v2/x?token={}",
        c.mint("userinfo in an absolute-form target"),
        c.mint("query in an absolute-form target")
    );
    steps.push(Step::Curl(
        Port::Orders,
        "/".into(),
        vec![
            "--request-target".into(),
            target,
            "-H".into(),
            format!("X-Api-Key: {key}"),
        ],
    ));
    clients.push("absolute");
    // A secret in the query of a listed path, no credential header.
    let listed = format!(
        "/v1/orders?access_token={}&page=2",
        c.mint("query, listed path")
    );
    steps.push(Step::Curl(Port::Orders, listed, Vec::new()));
    let to_unlisted = format!("Authorization: Bearer {}", c.mint("unlisted port"));
    steps.push(Step::Curl(
        Port::Unlisted,
        "/".into(),
        vec!["-H".into(), to_unlisted],
    ));

    // TLS: encrypted on the wire, in clear text in the server's OpenSSL,
    // where the probes read it; the contract knows it, so `flows` naming
    // client `tls` proves the agent saw the token.
    let tls_bearer = format!("Bearer {}", c.mint("inside TLS"));
    k.client("tls", "authorization", &tls_bearer, &issued);
    steps.push(Step::Curl(
        Port::Tls,
        "/".into(),
        vec![
            "-k".into(),
            "-H".into(),
            format!("Authorization: {tls_bearer}"),
        ],
    ));
    clients.push("tls");

    // Pipelined: one segment with three requests, then three segments.
    let pipe_key = c.mint("pipelined x-api-key");
    k.client("pipe", "x-api-key", &pipe_key, &issued);
    let one = get("/v1/orders", &[("X-Api-Key", &pipe_key)]);
    let mut three = one.repeat(2);
    three.extend(get(
        "/v1/orders",
        &[("Cookie", &format!("s={}", c.mint("pipelined cookie")))],
    ));
    steps.push(Step::Raw(
        Port::Orders,
        vec![three, one.clone(), one.clone(), one],
    ));
    clients.push("pipe");

    // A head split inside the token; truncated and invalid heads.
    let split = get(
        "/v1/orders",
        &[("Authorization", &format!("Bearer {}", c.mint("split head")))],
    );
    let cut = split.len() - 14;
    steps.push(Step::Raw(
        Port::Orders,
        vec![split[..cut].to_vec(), split[cut..].to_vec()],
    ));
    let truncated = format!(
        "GET /v1/orders HTTP/1.1\r\nX-Api-Key: {}",
        c.mint("truncated head")
    );
    let invalid = format!(
        "GET /v1/orders HTTP/1.1\r\nAuthorization: Bearer {}\r\nBad Header {}\r\n\r\n",
        c.mint("head with an invalid line"),
        c.mint("invalid header line")
    );
    steps.push(Step::Raw(Port::Orders, vec![truncated.into_bytes()]));
    steps.push(Step::Raw(Port::Orders, vec![invalid.into_bytes()]));

    // h2c: an Upgrade request then frames; prior knowledge to the pii port.
    let upgrade_token = format!("Bearer {}", c.mint("h2c upgrade request"));
    k.client("upgrade", "authorization", &upgrade_token, &issued);
    let upgrade = get(
        "/v1/orders",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("Authorization", &upgrade_token),
        ],
    );
    let after = h2_with(&format!("Bearer {}", c.mint("h2 frames after upgrade")));
    steps.push(Step::Raw(Port::Orders, vec![upgrade, after]));
    clients.push("upgrade");
    steps.push(Step::Raw(
        Port::Ledger,
        vec![h2_with(&format!(
            "Bearer {}",
            c.mint("prior-knowledge h2c")
        ))],
    ));

    let kinds = vec![
        "unencrypted_flow",
        "revoked_client",
        "stale_credential",
        "unlisted_endpoint",
        "unknown_client",
        "quota_overshoot",
    ];
    let after_key = c.mint("x-api-key after the garbage");
    k.client("after", "x-api-key", &after_key, &issued);
    (
        k,
        steps,
        Expect {
            clients,
            kinds,
            after_key,
        },
    )
}

#[derive(Clone, Copy)]
pub enum Port {
    Ledger,
    Orders,
    Unlisted,
    Tls,
}

pub enum Step {
    Curl(Port, String, Vec<String>),
    Raw(Port, Vec<Vec<u8>>),
}

//! The replay canary scenarios: one TCP conversation per credential-bearing
//! place or kind of damage, and the contract that knows their keys.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::{
    canary::{self, Canaries, base64},
    frames::Capture,
};

const LEDGER: u16 = 18_080;
const ORDERS: u16 = 18_081;
const UNLISTED_PORT: u16 = 18_089;

/// The credentials of the contract's clients.
struct Contract {
    clients: String,
    revocations: String,
}

impl Contract {
    fn new() -> Self {
        Self {
            clients: String::new(),
            revocations: String::new(),
        }
    }

    /// A client identified by `header: value` (the value as sent; the
    /// fingerprint follows the contract's rule, see `identity::credential::fingerprint`).
    fn client(&mut self, name: &str, header: &str, value: &str, issued: &str) {
        let fp = fingerprint(header, value);
        let _ = write!(
            self.clients,
            "    - name: {name}\n      credentials:\n        - header: {header}\n          \
             fingerprint: \"{fp}\"\n          issuedAt: \"{issued}\"\n"
        );
    }

    fn revoke(&mut self, header: &str, value: &str) {
        let fp = fingerprint(header, value);
        let _ = write!(
            self.revocations,
            "    - fingerprint: \"{fp}\"\n      revokedAt: \"2026-11-15T00:00:00Z\"\n      \
             reason: planted by the canary test\n"
        );
    }

    fn yaml(&self) -> String {
        format!(
            "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: canary-ramp\n\
             spec:\n  scope:\n    networks: [\"127.0.0.0/8\"]\n    ports: [{LEDGER}, {ORDERS}, {UNLISTED_PORT}]\n\
             \x20 dataClasses:\n\
             \x20   - name: pii\n      encryption: required\n      authentication: required\n\
             \x20   - name: internal\n      encryption: optional\n      authentication: required\n\
             \x20 endpoints:\n\
             \x20   - name: ledger\n      dataClass: pii\n      hosts: [\"127.0.0.1\"]\n      ports: [{LEDGER}]\n      paths: [\"/v1/ledger\"]\n\
             \x20   - name: orders\n      dataClass: internal\n      hosts: [\"127.0.0.1\"]\n      ports: [{ORDERS}]\n      paths: [\"/v1/orders\"]\n\
             \x20 clients:\n{}\
             \x20 stages:\n    - name: pilot\n      startsAt: \"2026-11-01T00:00:00Z\"\n      credentialMaxAge: 90d\n\
             \x20     quotas:\n        - {{ client: pipe, endpoint: orders, requestsPerSecond: 1, burst: 1 }}\n\
             \x20 revocations:\n{}",
            self.clients, self.revocations
        )
    }
}

/// The contract's fingerprint rule: `Bearer`/`Basic` stripped for
/// `authorization` only.
fn fingerprint(header: &str, value: &str) -> String {
    let hashed = if header == "authorization" {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("Basic "))
            .unwrap_or(value)
    } else {
        value
    };
    format!("sha256:{}", canary::hex(&Sha256::digest(hashed.as_bytes())))
}

fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: canary/1\r\n");
    for (k, v) in headers {
        let _ = write!(s, "{k}: {v}\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// An HTTP/2 HEADERS frame (stream 1, END_HEADERS|END_STREAM) whose block
/// sends `authorization` as a literal, not Huffman-coded, so the canary is
/// in the bytes as is.
fn h2_headers_with(authorization: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84]; // :method GET, :scheme http, :path /
    block.push(0x00); // literal without indexing, new name
    block.push(u8::try_from("authorization".len()).expect("short"));
    block.extend_from_slice(b"authorization");
    block.push(u8::try_from(authorization.len()).expect("below 127"));
    block.extend_from_slice(authorization.as_bytes());
    let len = u32::try_from(block.len()).expect("small").to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], 0x01, 0x05, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    frame
}

const H2_SETTINGS: &[u8] = &[0, 0, 0, 0x04, 0, 0, 0, 0, 0];

/// What each scenario must show in the replay, proving its canary was
/// parsed rather than skipped.
pub struct Expect {
    /// Clients some flow must be attributed to.
    pub clients: Vec<&'static str>,
    /// (kind, client) violations that must be present.
    pub violations: Vec<(&'static str, &'static str)>,
}

/// Every scenario, planted with canaries, and the contract knowing them.
pub fn build(c: &mut Canaries, start: i64) -> (Capture, String, Expect) {
    let mut k = Contract::new();
    let mut cap = Capture::new(start);
    let issued = "2026-11-20T00:00:00Z";
    let mut clients = Vec::new();
    let mut violations = Vec::new();

    // Authorization: Bearer, to a plaintext pii endpoint (unencrypted_flow).
    let bearer = format!("Bearer {}", c.mint("authorization bearer"));
    k.client("bearer", "authorization", &bearer, issued);
    cap.connect(LEDGER)
        .send(&get("/v1/ledger/entries", &[("Authorization", &bearer)]))
        .reply(OK)
        .close();
    clients.push("bearer");
    violations.push(("unencrypted_flow", "bearer"));

    // Authorization: Basic base64(user:canary); the response sets a cookie.
    let basic_b64 = base64(format!("svc-user:{}", c.mint("basic password")).as_bytes());
    c.plant("basic credential (base64)", &basic_b64);
    let basic = format!("Basic {basic_b64}");
    k.client("basic", "authorization", &basic, issued);
    let set_cookie = format!(
        "HTTP/1.1 200 OK\r\nSet-Cookie: sid={}; HttpOnly\r\nContent-Length: 2\r\n\r\nok",
        c.mint("set-cookie in a response")
    );
    cap.connect(ORDERS)
        .send(&get("/v1/orders", &[("Authorization", &basic)]))
        .reply(set_cookie.as_bytes())
        .close();
    clients.push("basic");

    // X-Api-Key, Proxy-Authorization, Cookie.
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
        ("apikey2", "api-key", c.mint("api-key")),
        ("authtoken", "x-auth-token", c.mint("x-auth-token")),
    ] {
        k.client(name, header, &value, issued);
        cap.connect(ORDERS)
            .send(&get("/v1/orders/7", &[(header, &value)]))
            .reply(OK)
            .close();
        clients.push(name);
    }

    // Revoked and stale credentials.
    let revoked = format!("Bearer {}", c.mint("revoked bearer"));
    k.client("revoked", "authorization", &revoked, issued);
    k.revoke("authorization", &revoked);
    let stale = format!("Bearer {}", c.mint("stale bearer"));
    k.client("stale", "authorization", &stale, "2026-01-01T00:00:00Z");
    // The responses are read for their status since the API's answer
    // counts: the revoked request is refused with secrets in the reason
    // phrase and the headers, the stale one answered by a head cut short.
    let refusal = format!(
        "HTTP/1.1 401 {}\r\nWWW-Authenticate: Bearer error=\"{}\"\r\n\
         Set-Cookie: sid={}\r\nContent-Length: 0\r\n\r\n",
        c.mint("reason phrase of a refusal"),
        c.mint("www-authenticate of a refusal"),
        c.mint("set-cookie of a refusal"),
    );
    let cut = format!(
        "HTTP/1.1 200 {}\r\nX-Session: {}",
        c.mint("reason phrase of a cut head"),
        c.mint("header of a cut head"),
    );
    for (v, answer) in [(&revoked, &refusal), (&stale, &cut)] {
        cap.connect(ORDERS)
            .send(&get("/v1/orders", &[("Authorization", v)]))
            .reply(answer.as_bytes())
            .close();
    }
    violations.push(("revoked_client", "revoked"));
    violations.push(("stale_credential", "stale"));

    // Unknown credential (unknown_client) and no credential but a secret in
    // the query string of a listed path.
    cap.connect(ORDERS)
        .send(&get(
            "/v1/orders",
            &[(
                "Authorization",
                &format!("Bearer {}", c.mint("unknown bearer")),
            )],
        ))
        .reply(OK)
        .close();
    cap.connect(ORDERS)
        .send(&get(
            &format!("/v1/orders?api_key={}&page=2", c.mint("query, listed path")),
            &[],
        ))
        .reply(OK)
        .close();
    violations.push(("unknown_client", "unknown"));

    // Secrets in the target of requests to unlisted paths, whose path goes
    // into the violation's detail: query string, path parameter, userinfo
    // of an absolute-form target. One client each, so each gets its own
    // violation and detail.
    let targets = [
        (
            "query",
            format!(
                "/v2/admin/export?api_key={}",
                c.mint("query, unlisted path")
            ),
        ),
        (
            "access",
            format!(
                "/v2/admin?access_token={}#top",
                c.mint("access_token in query")
            ),
        ),
        (
            "jsession",
            format!(
                "/v2/cart;jsessionid={}",
                c.mint("jsessionid path parameter")
            ),
        ),
        (
            "absolute",
            format!(
                "http://svc:{}@127.0.0.1:{ORDERS}/v2/x?token={}",
                c.mint("userinfo in absolute-form target"),
                c.mint("query in absolute-form target")
            ),
        ),
    ];
    for (name, target) in &targets {
        let key = c.mint("x-api-key of an unlisted-path client");
        k.client(name, "x-api-key", &key, issued);
        cap.connect(ORDERS)
            .send(&get(target, &[("X-Api-Key", &key)]))
            .reply(OK)
            .close();
        violations.push(("unlisted_endpoint", name));
    }
    // An in-scope port that no endpoint covers.
    cap.connect(UNLISTED_PORT)
        .send(&get(
            "/",
            &[(
                "Authorization",
                &format!("Bearer {}", c.mint("unlisted port")),
            )],
        ))
        .reply(OK)
        .close();

    // Pipelined: three requests with a known key (quota 1, burst 1) and one
    // with an unknown one, in one segment.
    let pipe_key = c.mint("pipelined x-api-key");
    k.client("pipe", "x-api-key", &pipe_key, issued);
    let mut pipelined = Vec::new();
    for n in 0..3 {
        pipelined.extend(get(&format!("/v1/orders/{n}"), &[("X-Api-Key", &pipe_key)]));
    }
    pipelined.extend(get(
        "/v1/orders/9",
        &[("Cookie", &format!("session={}", c.mint("pipelined cookie")))],
    ));
    let mut conn = cap.connect(ORDERS);
    conn.send_segment(&pipelined);
    for _ in 0..4 {
        conn.reply(OK);
    }
    conn.close();
    violations.push(("quota_overshoot", "pipe"));

    // A request head split inside the token, and a body with a secret
    // followed by another request.
    let split_key = c.mint("x-api-key split across segments");
    k.client("split", "x-api-key", &split_key, issued);
    let head = get("/v1/orders", &[("X-Api-Key", &split_key)]);
    let cut = head.len() - 12;
    let body = format!("{{\"password\":\"{}\"}}", c.mint("request body"));
    let post = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {split_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let chunked = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
         20\r\n{}\r\n0\r\n\r\n",
        c.mint("chunked body").get(..32).expect("32 chars")
    );
    cap.connect(ORDERS)
        .send_segment(&head[..cut])
        .send_segment(&head[cut..])
        .reply(OK)
        .send_segment(post.as_bytes())
        .reply(OK)
        .send_segment(chunked.as_bytes())
        .reply(OK)
        .close();
    clients.push("split");

    // Malformed heads: truncated then FIN; an invalid header line; a NUL in
    // a header; a head over 16 KiB; a bad request line; a retransmission
    // with different bytes; data after a hole; a reset mid-head.
    let truncated = format!(
        "GET /v1/orders HTTP/1.1\r\nAuthorization: Bearer {}\r\nX-Api-Key: {}",
        c.mint("truncated head, authorization"),
        c.mint("truncated head, x-api-key")
    );
    cap.connect(ORDERS).send(truncated.as_bytes()).close();
    let invalid = format!(
        "GET /v1/orders HTTP/1.1\r\nAuthorization: Bearer {}\r\nBad Header Line {}\r\n\r\n",
        c.mint("head with an invalid line, authorization"),
        c.mint("invalid header line")
    );
    cap.connect(ORDERS)
        .send(invalid.as_bytes())
        .reply(OK)
        .close();
    let nul = format!(
        "GET /v1/orders HTTP/1.1\r\nX-Api-Key: {}\0{}\r\n\r\n",
        c.mint("before a NUL"),
        c.mint("after a NUL")
    );
    cap.connect(ORDERS).send(nul.as_bytes()).reply(OK).close();
    let mut huge = b"GET /v1/orders HTTP/1.1\r\n".to_vec();
    for i in 0..200 {
        huge.extend(format!("X-Pad-{i}: {}\r\n", "p".repeat(100)).bytes());
    }
    huge.extend(
        format!(
            "Authorization: Bearer {}\r\n\r\n",
            c.mint("after 20 KB of headers")
        )
        .bytes(),
    );
    cap.connect(ORDERS).send(&huge).reply(OK).close();
    let bad_line = format!(
        "GET /v1/orders HTTP/9.9 {}\r\nAuthorization: Bearer {}\r\n\r\n",
        c.mint("bad request line"),
        c.mint("after a bad request line")
    );
    cap.connect(ORDERS).send(bad_line.as_bytes()).close();
    let first = get("/v1/orders", &[("X-Api-Key", &c.mint("first copy"))]);
    let second = get(
        "/v1/orders",
        &[("X-Api-Key", &c.mint("retransmitted copy"))],
    );
    let back = u32::try_from(first.len()).expect("small");
    cap.connect(ORDERS)
        .send_segment(&first)
        .resend_at(back, &second)
        .reply(OK)
        .close();
    cap.connect(ORDERS)
        .send_after_gap(
            700,
            &get(
                "/v1/orders",
                &[(
                    "Authorization",
                    &format!("Bearer {}", c.mint("after a hole")),
                )],
            ),
        )
        .close();
    cap.connect(ORDERS)
        .send_segment(
            format!(
                "GET /v1/orders HTTP/1.1\r\nCookie: s={}",
                c.mint("reset mid-head")
            )
            .as_bytes(),
        )
        .reset();

    // h2c upgrade: the HTTP/1.1 head, 101, then HTTP/2 frames with a
    // literal authorization; and prior-knowledge h2c to the pii port.
    let upgrade_token = format!("Bearer {}", c.mint("h2c upgrade request"));
    k.client("upgrade", "authorization", &upgrade_token, issued);
    let upgrade = get(
        "/v1/orders",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("Authorization", &upgrade_token),
        ],
    );
    let mut h2 = agent::protocol::http::H2_PREFACE.to_vec();
    h2.extend_from_slice(H2_SETTINGS);
    h2.extend(h2_headers_with(&format!(
        "Bearer {}",
        c.mint("h2 frames after upgrade")
    )));
    cap.connect(ORDERS)
        .send(&upgrade)
        .reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        .send(&h2)
        .close();
    clients.push("upgrade");
    let mut prior = agent::protocol::http::H2_PREFACE.to_vec();
    prior.extend_from_slice(H2_SETTINGS);
    prior.extend(h2_headers_with(&format!(
        "Bearer {}",
        c.mint("prior-knowledge h2c")
    )));
    cap.connect(LEDGER).send(&prior).close();

    // Frames that are not TCP/IPv4 at all, carrying a canary.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(c.mint("non-IP frame").as_bytes());
    cap.raw_frame(arp);

    (
        cap,
        k.yaml(),
        Expect {
            clients,
            violations,
        },
    )
}

//! gRPC on the live agent: a python3-grpcio server and clients over an
//! insecure channel (HTTP/2 prior knowledge on the wire), the bearer token
//! in call metadata. The contract's `paths` name a gRPC method
//! (`/package.Service/Method`): every call is one request of the client its
//! token names, a revoked, an unknown or a missing token raises its
//! violation, and a call to a method the contract does not list raises
//! `unlisted_endpoint`.
//!
//! Needs root; run by `cargo xtask test`.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Child, Stdio},
    time::Duration,
};

use tests::{
    agent_proc::AgentProcess, cgroup::CgroupGuard, contract::ContractYaml, tls_servers::PYTHON,
    tools::require_tools, wait::wait_until,
};

const ACME: &str = "acme-grpc-token";
const LEAKY: &str = "leaky-grpc-token";
const STRANGER: &str = "stranger-grpc-token";
const SERVICE: &str = "rampwatch.test.Items";

/// A unary service with two methods, raw bytes in and out (no protoc):
/// prints its port, then serves until killed.
const SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
def unary(request, context):
    return b"ok"
handlers = {m: grpc.unary_unary_rpc_method_handler(unary) for m in ("Get", "Admin")}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(sys.argv[1], handlers),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

/// `n` unary calls to `/SERVICE/METHOD` on one channel (one connection),
/// with `authorization: Bearer TOKEN` metadata unless TOKEN is empty.
const CLIENT: &str = r#"
import sys
import grpc
port, service, method, token, n = sys.argv[1:6]
metadata = [("authorization", "Bearer " + token)] if token else []
options = [("grpc.enable_http_proxy", 0)]
with grpc.insecure_channel("127.0.0.1:" + port, options=options) as channel:
    call = channel.unary_unary("/%s/%s" % (service, method))
    for _ in range(int(n)):
        assert call(b"ping", metadata=metadata, timeout=10) == b"ok"
"#;

fn contract(port: u16) -> String {
    ContractYaml::new("grpc")
        .class("internal", "optional")
        .endpoint(
            "items",
            "internal",
            &["127.0.0.1"],
            &[port],
            &[&format!("/{SERVICE}/Get")],
        )
        .client("acme", ACME, "2026-11-01T00:00:00Z")
        .client("leaky", LEAKY, "2026-11-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            None,
            &[
                ("acme", "items", 1000, 1000),
                ("leaky", "items", 1000, 1000),
            ],
        )
        .revoked(LEAKY, "2026-03-01T00:00:00Z")
        .render()
}

/// The python gRPC server, in `cgroup`.
struct GrpcServer(Child, SocketAddr);

impl GrpcServer {
    fn start(cgroup: &CgroupGuard) -> Self {
        let mut child = cgroup
            .command(PYTHON)
            .args(["-c", SERVER, SERVICE])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python gRPC server (Debian package python3-grpcio)");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("the server's stdout"))
            .read_line(&mut line)
            .expect("read the server's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the gRPC server printed no port ({line:?}); is python3-grpcio installed?")
        });
        Self(
            child,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        )
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn calls(cgroup: &CgroupGuard, server: SocketAddr, method: &str, token: &str, n: u32) {
    let out = cgroup
        .command(PYTHON)
        .args([
            "-c",
            CLIENT,
            &server.port().to_string(),
            SERVICE,
            method,
            token,
        ])
        .arg(n.to_string())
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("run the python gRPC client");
    assert!(
        out.status.success(),
        "gRPC client ({method}, {n} calls): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (kind, endpoint, client, count) of every violation, sorted.
fn violations(agent: &AgentProcess) -> Vec<(String, String, String, u64)> {
    let mut v: Vec<_> = agent
        .cli_json(&["violations"])
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["endpoint"].as_str().unwrap_or_default().to_owned(),
                v["client"].as_str().unwrap_or_default().to_owned(),
                v["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn viol(kind: &str, endpoint: &str, client: &str, n: u64) -> (String, String, String, u64) {
    (kind.into(), endpoint.into(), client.into(), n)
}

#[test]
fn every_grpc_call_is_a_request_judged_by_its_token_and_method() {
    require_tools();
    let cgroup = CgroupGuard::new("grpc");
    let server = GrpcServer::start(&cgroup);
    let port = server.1.port();
    let agent = AgentProcess::start(&contract(port), cgroup.path(), &[]);

    calls(&cgroup, server.1, "Get", ACME, 20);
    calls(&cgroup, server.1, "Get", LEAKY, 5);
    calls(&cgroup, server.1, "Get", STRANGER, 3);
    calls(&cgroup, server.1, "Get", "", 2);
    calls(&cgroup, server.1, "Admin", ACME, 4);

    let want = vec![
        viol("revoked_client", "items", "leaky", 5),
        viol("unknown_client", "items", "unknown", 5),
        viol("unlisted_endpoint", "unlisted", "acme", 4),
    ];
    let got = wait_until(
        "the violations of the gRPC calls",
        Duration::from_secs(30),
        || {
            let got = violations(&agent);
            (got == want).then_some(got)
        },
    );
    assert_eq!(got, want);

    let flows = agent.flows_to(port);
    let mut per_client: Vec<(String, u64)> = flows
        .iter()
        .map(|f| {
            assert_eq!(f["protocol"], "h2c", "{f}");
            (
                f["client"].as_str().unwrap_or_default().to_owned(),
                f["requests"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    per_client.sort();
    assert_eq!(
        per_client,
        vec![
            ("acme".to_owned(), 4),
            ("acme".to_owned(), 20),
            ("leaky".to_owned(), 5),
            ("unknown".to_owned(), 2),
            ("unknown".to_owned(), 3),
        ],
        "one connection per client run, every call a request: {flows:?}"
    );
    let acme = flows
        .iter()
        .find(|f| f["requests"] == 20)
        .expect("acme's Get flow");
    assert_eq!(acme["identified_by"], "credential", "{acme}");
    let metrics = agent.metrics();
    assert!(
        metrics.contains(r#"rampwatch_requests_total{client="acme",endpoint="items"} 20"#),
        "{metrics}"
    );
}

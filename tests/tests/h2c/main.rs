//! HTTP/2 in clear text (h2c) on the live agent: nghttpd serving, h2load
//! opening many multiplexed streams on one prior-knowledge connection with a
//! bearer token in HPACK. Once the kernel sees the preface it samples every
//! segment of the flow, so the HTTP/2 decoder counts every stream and reads
//! the credential: the client is named, each stream is a request, and a
//! burst over quota is caught.
//!
//! Needs root; run by `cargo xtask test`.

use std::time::Duration;

use tests::{
    TempDir, agent_proc::AgentProcess, cgroup::CgroupGuard, contract::ContractYaml,
    nghttpd::Nghttpd, tools::require_tools, wait::wait_until,
};

const TOKEN: &str = "h2c-live-token";

fn contract(port: u16) -> String {
    ContractYaml::new("h2c")
        .class("internal", "optional")
        .endpoint("items", "internal", &["127.0.0.1"], &[port], &[])
        .client("acme", TOKEN, "2026-11-01T00:00:00Z")
        .stage(
            "pilot",
            "2026-01-01T00:00:00Z",
            None,
            &[("acme", "items", 5, 10)],
        )
        .render()
}

#[test]
fn every_multiplexed_h2c_stream_is_a_request_of_its_client() {
    require_tools();
    let cgroup = CgroupGuard::new("h2c");
    let files = TempDir::new("h2c");
    std::fs::write(files.path().join("item"), b"ok").expect("write the served file");
    let server = Nghttpd::start(&cgroup, files.path());
    let port = server.1.port();
    let agent = AgentProcess::start(&contract(port), cgroup.path(), &[]);

    // 300 requests, 20 streams in flight at once, on one connection.
    let out = cgroup
        .command("h2load")
        .args(["-n", "300", "-c", "1", "-m", "20"])
        .args(["-H", &format!("authorization: Bearer {TOKEN}")])
        .arg(format!("http://{}/item", server.1))
        .output()
        .expect("run h2load (Debian package nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("300 succeeded"),
        "h2load: {text}"
    );

    let flow = wait_until(
        "the h2c flow with its 300 requests",
        Duration::from_secs(30),
        || {
            agent
                .flows_to(port)
                .into_iter()
                .find(|f| f["requests"].as_u64() == Some(300))
        },
    );
    assert_eq!(flow["protocol"], "h2c", "{flow}");
    assert_eq!(flow["client"], "acme", "{flow}");
    assert_eq!(flow["identified_by"], "credential", "{flow}");
    let violations = agent.cli_json(&["violations"]);
    let kinds: Vec<&str> = violations
        .iter()
        .filter_map(|v| v["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"quota_overshoot"),
        "300 requests against 5/s, burst 10: {violations:?}"
    );
    assert!(
        !kinds.contains(&"unknown_client"),
        "every stream carried acme's token: {violations:?}"
    );
}

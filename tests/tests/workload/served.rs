//! An endpoint served by workloads (`endpoints[].workloads`, no `hosts`):
//! the kernel watches the sockets of the selected pod's cgroup on the
//! endpoint's ports, and nothing else; the live agent counts the pod's
//! requests for the endpoint exactly, names the server workload on its
//! flows, and follows the pod when it restarts (a new container cgroup and
//! id, the same pod name).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;
use tests::{
    agent_proc::{AgentProcess, workload_of},
    cgroup::CgroupGuard,
    wait::{DEFAULT_TIMEOUT, wait_until},
};

use super::{Chain, PyServer, container_id, kubelet_pod, live_agent::HostRoot};

const API_UID: &str = "5c4b3a29-1807-4f6e-9d8c-7b6a59483726";
const SHOP_UID: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";

fn contract(ports: [u16; 2]) -> String {
    format!(
        r#"apiVersion: rampwatch.io/v1
kind: RampContract
metadata:
  name: served
spec:
  dataClasses:
    - name: internal
      encryption: optional
      authentication: optional
  endpoints:
    - name: orders
      dataClass: internal
      workloads:
        - namespace: payments
          pod: "api-*"
      ports: [{}, {}]
  clients:
    - name: local
      sources: ["127.0.0.1/32"]
  stages:
    - name: pilot
      startsAt: "2026-01-01T00:00:00Z"
      quotas:
        - {{ client: local, endpoint: orders, requestsPerSecond: 1000, burst: 1000 }}
"#,
        ports[0], ports[1]
    )
}

/// `python3 -m http.server` in `cg` on 127.0.0.1:`port` (a port given, so
/// a restarted pod listens where the old one did).
fn py_server_on(cg: &CgroupGuard, port: u16) -> PyServer {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let child = cg.http_server(addr);
    PyServer(child, addr)
}

/// `n` requests on one connection each, from cgroup `cg`.
fn curl(cg: &CgroupGuard, url: &str, n: usize) {
    for _ in 0..n {
        let status = cg
            .command("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "10", url])
            .status()
            .expect("run curl");
        assert!(status.success(), "curl {url}: {status}");
    }
}

fn metric(agent: &AgentProcess, line_prefix: &str) -> Option<u64> {
    agent
        .metrics()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

const ORDERS: &str = r#"rampwatch_requests_total{client="local",endpoint="orders"} "#;

fn api_cgroup(base: &CgroupGuard, container: &str) -> Chain {
    Chain::new(
        base,
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope",
            API_UID.replace('-', "_")
        ),
    )
}

#[test]
fn workload_served_endpoint_follows_its_pod_and_watches_nothing_else() {
    tests::tools::require_tools();
    let api_id = container_id('1');
    let shop_id = container_id('2');
    let base = CgroupGuard::new("wl-served");
    let host = HostRoot::new();
    kubelet_pod(
        host.path(),
        "payments",
        "api-5d8f",
        API_UID,
        &[("api", &api_id)],
    );
    kubelet_pod(host.path(), "shop", "web-1", SHOP_UID, &[("web", &shop_id)]);
    // Both listen on ports the endpoint lists; only the api pod serves it.
    let api_cg = api_cgroup(&base, &api_id);
    let shop_cg = Chain::new(
        &base,
        &format!("kubepods/besteffort/pod{SHOP_UID}/{shop_id}"),
    );
    let api = PyServer::start(api_cg.leaf());
    let api_port = api.1.port();
    let shop = PyServer::start(shop_cg.leaf());
    let shop_port = shop.1.port();
    let client = base.child("client");

    let host_root = host.path().display().to_string();
    let agent = AgentProcess::start(
        &contract([api_port, shop_port]),
        base.path(),
        &["--host-root", &host_root, "--no-tls-probes"],
    );
    wait_until(
        "the api pod's cgroup in the kernel map",
        DEFAULT_TIMEOUT,
        || (metric(&agent, "rampwatch_workload_endpoint_cgroups ")? == 1).then_some(()),
    );

    // Five requests to the api pod: exactly five for `orders`.
    let api_url = format!("http://{}/", api.1);
    curl(&client, &api_url, 5);
    wait_until("five requests counted for orders", DEFAULT_TIMEOUT, || {
        (metric(&agent, ORDERS)? == 5).then_some(())
    });
    let flows = agent.flows_to(api_port);
    assert!(!flows.is_empty());
    for f in &flows {
        assert_eq!(f["endpoint"], "orders", "{f}");
        assert_eq!(f["client"], "local", "{f}");
        assert_eq!(
            workload_of(&f["server_workload"]),
            (Some("payments"), Some("api-5d8f"), Some("api")),
            "{f}"
        );
        assert_eq!(f["server_workload"]["cgroup_id"], api_cg.leaf().id(), "{f}");
    }

    // The shop pod on the endpoint's other port: not its cgroup, so not
    // watched. One more api request after it proves the agent has read
    // past the shop pod's traffic.
    curl(&client, &format!("http://{}/", shop.1), 3);
    curl(&client, &api_url, 1);
    wait_until("the sixth orders request", DEFAULT_TIMEOUT, || {
        (metric(&agent, ORDERS)? == 6).then_some(())
    });
    assert_eq!(
        agent.flows_to(shop_port),
        Vec::<Value>::new(),
        "a pod the endpoint does not select was watched"
    );

    // The pod restarts: its container gets a new id and cgroup, the pod
    // keeps its name and UID; the kubelet writes the new container's log.
    drop(api);
    drop(api_cg);
    let api2_id = container_id('3');
    kubelet_pod(
        host.path(),
        "payments",
        "api-5d8f",
        API_UID,
        &[("api", &api2_id)],
    );
    let api2_cg = api_cgroup(&base, &api2_id);
    let _api2 = py_server_on(api2_cg.leaf(), api_port);
    let new_id = api2_cg.leaf().id();
    // Until the agent's next walk the new socket is not watched: ask until
    // a flow names the new cgroup.
    wait_until(
        "a flow served by the restarted pod",
        DEFAULT_TIMEOUT,
        || {
            curl(&client, &api_url, 1);
            agent
                .flows_to(api_port)
                .into_iter()
                .find(|f| f["server_workload"]["cgroup_id"] == new_id)
        },
    );
    // The old cgroup left the map; the new one is the only one.
    wait_until(
        "only the new cgroup in the kernel map",
        DEFAULT_TIMEOUT,
        || (metric(&agent, "rampwatch_workload_endpoint_cgroups ")? == 1).then_some(()),
    );
    // Every request the new pod served is counted for `orders`, and
    // nothing more: per flow (one request each) and in the metric.
    let served_by_new = || {
        let f: Vec<Value> = agent
            .flows_to(api_port)
            .into_iter()
            .filter(|f| f["server_workload"]["cgroup_id"] == new_id)
            .collect();
        for f in &f {
            assert_eq!(f["endpoint"], "orders", "{f}");
            assert_eq!(f["server_workload"]["pod"], "api-5d8f", "{f}");
        }
        let requests: u64 = f.iter().filter_map(|f| f["requests"].as_u64()).sum();
        (f.len() as u64, requests)
    };
    let counted = |flows: u64| {
        let (n, requests) = served_by_new();
        (n >= flows && requests == n && metric(&agent, ORDERS)? == 6 + requests).then_some(n)
    };
    let n = wait_until(
        "the restarted pod's requests counted",
        DEFAULT_TIMEOUT,
        || counted(1),
    );
    curl(&client, &api_url, 4);
    wait_until("four more requests for orders", DEFAULT_TIMEOUT, || {
        counted(n + 4)
    });

    // The resolver's own metrics: bounded labels, nothing lost.
    let text = agent.metrics();
    for line in [
        r#"rampwatch_events_lost_total{reason="workload_map_full"} 0"#,
        "rampwatch_workload_endpoint_cgroups 1",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(metric(&agent, "rampwatch_workload_rewalks_total ").is_some_and(|n| n >= 2));
    assert!(metric(&agent, "rampwatch_workload_cache_entries ").is_some_and(|n| n >= 1));
    assert!(
        metric(
            &agent,
            r#"rampwatch_workload_lookups_total{result="named"} "#
        )
        .is_some_and(|n| n >= 1)
    );
    assert!(
        !text.contains("api-5d8f") && !text.contains("payments\""),
        "a workload leaked into a metric label"
    );
}

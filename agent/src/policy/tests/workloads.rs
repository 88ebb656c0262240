//! Local sockets' workloads through the engine: flows carry both ends',
//! violations their client's at the latest occurrence, and a contract
//! client named by `workloads` is identified after credentials and
//! certificates, before source addresses.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use super::*;
use crate::{
    event::{LocalSocket, Side},
    identity::workload::{FlowWorkload, WorkloadConfig, WorkloadResolver},
    policy::view::Via,
};

const UID: &str = "6b7e1a2c-3d4f-4a5b-8c9d-0e1f2a3b4c5d";
const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A node's cgroupfs and kubelet directories in a temporary directory: the
/// cgroup ids are the directories' real inode numbers, as on cgroupfs.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["cgroup", "var/log/pods", "var/log/containers", "proc"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A pod's container cgroup (kubelet systemd driver, containerd) and
    /// its log directory; returns the cgroup id.
    fn pod(&self, ns: &str, pod: &str) -> u64 {
        let rel = format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        let p = self.root().join("cgroup").join(rel);
        fs::create_dir_all(&p).expect("mkdir cgroup");
        let logs = self
            .root()
            .join(format!("var/log/pods/{ns}_{pod}_{UID}/sync"));
        fs::create_dir_all(&logs).expect("mkdir pod logs");
        fs::write(logs.join("0.log"), b"").expect("log");
        std::os::unix::fs::symlink(
            logs.join("0.log"),
            self.root()
                .join(format!("var/log/containers/{pod}_{ns}_sync-{CID}.log")),
        )
        .expect("symlink");
        fs::metadata(&p).expect("stat").ino()
    }

    /// A cgroup nothing names.
    fn plain(&self, rel: &str) -> u64 {
        let p = self.root().join("cgroup").join(rel);
        fs::create_dir_all(&p).expect("mkdir");
        fs::metadata(&p).expect("stat").ino()
    }

    fn resolver(&self) -> Arc<WorkloadResolver> {
        let mut cfg = WorkloadConfig::under_host_root(self.root(), self.root().join("cgroup"));
        cfg.min_rewalk = Duration::ZERO;
        Arc::new(WorkloadResolver::new(cfg).expect("resolver"))
    }
}

fn with_sync_client() -> Arc<Contract> {
    let yaml = contract_yaml().replace(
        "    - name: office\n",
        "    - name: sync\n      workloads:\n        - namespace: partner-acme\n          pod: \"sync-*\"\n      sources: [\"10.40.0.0/16\"]\n    - name: office\n",
    );
    Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"))
}

fn socket(e: &mut Engine, ts: Nanos, client: &str, server: &str, side: Side, cgroup_id: u64) {
    e.handle(Event::Socket(LocalSocket {
        ts,
        flow: FlowId {
            client: addr(client),
            server: addr(server),
        },
        side,
        cgroup_id,
        pid: None,
    }));
}

fn flows(e: &mut Engine) -> Vec<FlowRecord> {
    e.drain()
        .filter_map(|o| match o {
            Output::Flow(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn flows_and_violations_carry_the_workloads_and_a_workload_names_the_client() {
    let node = Node::new();
    let client_cg = node.pod("partner-acme", "sync-5d8f");
    let server_cg = node.plain("system.slice/orders.service");
    let mut e = Engine::new(with_sync_client(), EngineOptions::default());
    e.set_workloads(node.resolver());
    let (c, s) = ("10.30.1.1:40000", "10.20.1.5:80");
    let ts = t0();
    e.handle(pkt(ts, c, s, 100, tcp_flags::SYN, b""));
    socket(&mut e, ts, c, s, Side::Client, client_cg);
    socket(&mut e, ts, c, s, Side::Server, server_cg);
    // Plaintext to `payments` (pii): unencrypted_flow. The source is
    // office's network, but the workload match comes first.
    let req = get("/pay", None);
    e.handle(pkt(
        ts + 10,
        c,
        s,
        101,
        tcp_flags::ACK | tcp_flags::PSH,
        &req,
    ));
    end_flow(&mut e, ts + 1_000_000, c, s, 101 + req.len() as u32, 501);
    e.finish();
    let f = flows(&mut e);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(&*f[0].client, "sync");
    assert_eq!(f[0].identified_by, Via::Workload);
    let cw = f[0].client_workload.as_deref().expect("client workload");
    assert_eq!(
        (
            cw.namespace.as_deref(),
            cw.pod.as_deref(),
            cw.container.as_deref()
        ),
        (Some("partner-acme"), Some("sync-5d8f"), Some("sync"))
    );
    assert_eq!(cw.cgroup_id, Some(client_cg));
    let sw = f[0].server_workload.as_deref().expect("server workload");
    assert_eq!(sw.unit.as_deref(), Some("orders.service"));
    assert_eq!(sw.pod, None, "a systemd service is not a pod");
    let v = e.violations();
    let unenc = v
        .iter()
        .find(|v| v.key.kind == Kind::UnencryptedFlow)
        .expect("unencrypted_flow");
    assert_eq!(&*unenc.key.client, "sync");
    assert_eq!(unenc.client_workload.as_deref(), Some(cw));
    // As the API and replay write it.
    let row = crate::sinks::api::views::FlowRow::from(&f[0]);
    let json = serde_json::to_value(&row).expect("json");
    assert_eq!(json["client_workload"]["namespace"], "partner-acme");
    assert_eq!(json["client_workload"]["pod"], "sync-5d8f");
    assert_eq!(json["server_workload"]["unit"], "orders.service");
    assert!(json["server_workload"].get("namespace").is_none());
}

#[test]
fn a_workload_learnt_after_a_source_match_lifts_the_identity_and_credentials_still_win() {
    let node = Node::new();
    let client_cg = node.pod("partner-acme", "sync-5d8f");
    let mut e = Engine::new(with_sync_client(), EngineOptions::default());
    e.set_workloads(node.resolver());
    let (c, s) = ("10.30.1.1:40001", "10.20.2.5:8080");
    let ts = t0();
    // A request from office's network before the socket is known.
    e.handle(pkt(ts, c, s, 100, tcp_flags::SYN, b""));
    let req = get("/v1/orders", None);
    e.handle(pkt(
        ts + 10,
        c,
        s,
        101,
        tcp_flags::ACK | tcp_flags::PSH,
        &req,
    ));
    assert_eq!(&*e.flows()[0].client, "office");
    socket(&mut e, ts + 20, c, s, Side::Client, client_cg);
    let live = e.flows();
    assert_eq!(
        (&*live[0].client, live[0].identified_by),
        ("sync", Via::Workload)
    );
    // A listed credential from the same pod is acme's.
    let (c2, s2) = ("10.30.1.1:40002", "10.20.2.5:8080");
    e.handle(pkt(ts, c2, s2, 100, tcp_flags::SYN, b""));
    socket(&mut e, ts, c2, s2, Side::Client, client_cg);
    let req = get("/v1/orders", Some("acme-token"));
    e.handle(pkt(
        ts + 10,
        c2,
        s2,
        101,
        tcp_flags::ACK | tcp_flags::PSH,
        &req,
    ));
    let f = e
        .flows()
        .into_iter()
        .find(|f| f.id.client == addr(c2))
        .expect("second flow");
    assert_eq!((&*f.client, f.identified_by), ("acme", Via::Credential));
}

#[test]
fn an_unnamed_local_socket_is_reported_by_its_cgroup_never_guessed() {
    let node = Node::new();
    let cg = node.plain("rwt/odd");
    let mut e = Engine::new(with_sync_client(), EngineOptions::default());
    e.set_workloads(node.resolver());
    let (c, s) = ("10.30.1.1:40003", "10.20.1.5:80");
    let ts = t0();
    e.handle(pkt(ts, c, s, 100, tcp_flags::SYN, b""));
    socket(&mut e, ts, c, s, Side::Client, cg);
    // And an id no cgroup has (gone before it was looked up).
    socket(&mut e, ts, c, s, Side::Server, u64::MAX);
    let f = &e.flows()[0];
    let cw = f.client_workload.as_deref().expect("client workload");
    assert_eq!(
        cw,
        &FlowWorkload {
            cgroup: Some("/rwt/odd".to_owned()),
            cgroup_id: Some(cg),
            ..FlowWorkload::default()
        }
    );
    assert_eq!(cw.short(), "/rwt/odd");
    let sw = f.server_workload.as_deref().expect("server workload");
    assert_eq!(
        sw,
        &FlowWorkload {
            cgroup_id: Some(u64::MAX),
            ..FlowWorkload::default()
        }
    );
}

#[test]
fn a_socket_announced_before_its_flow_names_it_from_the_first_packet() {
    let node = Node::new();
    let client_cg = node.pod("partner-acme", "sync-5d8f");
    let mut e = Engine::new(with_sync_client(), EngineOptions::default());
    e.set_workloads(node.resolver());
    let (c, s) = ("10.30.1.1:40004", "10.20.1.5:80");
    let ts = t0();
    // The capture's order: the socket, then the first sampled segment
    // (SYNs are not sampled), which is already the request.
    socket(&mut e, ts, c, s, Side::Client, client_cg);
    let req = get("/pay", None);
    e.handle(pkt(
        ts + 10,
        c,
        s,
        101,
        tcp_flags::ACK | tcp_flags::PSH,
        &req,
    ));
    let v = e.violations();
    assert!(!v.is_empty());
    for v in &v {
        assert_eq!(&*v.key.client, "sync", "{v:?}");
        assert_eq!(
            v.client_workload.as_deref().and_then(|w| w.pod.as_deref()),
            Some("sync-5d8f")
        );
    }
    assert_eq!(e.stats().sockets_unmatched, 0);
    // Sockets whose flow never comes wait in a bounded queue.
    for port in 0..5000u16 {
        socket(
            &mut e,
            ts,
            &format!("10.30.9.9:{port}"),
            s,
            Side::Client,
            client_cg,
        );
    }
    assert_eq!(e.stats().sockets_unmatched, 5000 - 4096);
}

/// `payments` also served by the `payments` namespace's pods on 9000: an
/// endpoint that follows its pods, whatever their address.
fn with_served_endpoint() -> Arc<Contract> {
    let yaml = contract_yaml().replace(
        "    - name: orders\n",
        "    - name: served\n      dataClass: public\n      workloads:\n        - {namespace: payments, pod: \"api-*\"}\n      ports: [9000]\n    - name: orders\n",
    );
    Arc::new(Contract::parse(&yaml, "unit.yaml").expect("valid contract"))
}

/// The server's workload names the endpoint, announced before the first
/// packet (the capture's order) or after it; a socket of another pod, or
/// none, leaves the traffic where its address puts it.
#[test]
fn a_server_workload_puts_its_flow_on_the_endpoint_it_serves() {
    let node = Node::new();
    let api = node.pod("payments", "api-7f9c");
    let other = node.plain("system.slice/other.service");
    let mut e = Engine::new(with_served_endpoint(), EngineOptions::default());
    e.set_workloads(node.resolver());
    let ts = t0();
    let req = get("/v1/x", None);
    let request = |e: &mut Engine, c: &str, s: &str, announce: Option<(u64, bool)>| {
        if let Some((cg, true)) = announce {
            socket(e, ts, c, s, Side::Server, cg);
        }
        e.handle(pkt(
            ts + 10,
            c,
            s,
            101,
            tcp_flags::ACK | tcp_flags::PSH,
            &req,
        ));
        if let Some((cg, false)) = announce {
            socket(e, ts + 20, c, s, Side::Server, cg);
        }
    };
    // An address in no rule: only the workload makes it API traffic.
    let pod = "10.99.7.7:9000";
    request(&mut e, "10.30.1.1:41000", pod, Some((api, true)));
    request(&mut e, "10.30.1.1:41001", pod, Some((api, false)));
    request(&mut e, "10.30.1.1:41002", pod, Some((other, true)));
    request(&mut e, "10.30.1.1:41003", pod, None);
    // In scope (10.20/16, port 9000): without its workload it is unlisted.
    request(&mut e, "10.30.1.1:41004", "10.20.9.9:9000", None);
    request(
        &mut e,
        "10.30.1.1:41005",
        "10.20.9.9:9000",
        Some((api, true)),
    );
    let live = e.flows();
    let endpoint = |port: u16| {
        live.iter()
            .find(|f| f.id.client.port() == port)
            .map(|f| f.endpoint.to_string())
    };
    assert_eq!(endpoint(41000).as_deref(), Some("served"));
    assert_eq!(endpoint(41001).as_deref(), Some("served"), "learnt late");
    assert_ne!(endpoint(41002).as_deref(), Some("served"));
    assert_ne!(endpoint(41003).as_deref(), Some("served"));
    assert_eq!(endpoint(41004).as_deref(), Some("unlisted"));
    assert_eq!(endpoint(41005).as_deref(), Some("served"));
    let served = live
        .iter()
        .find(|f| f.id.client.port() == 41000)
        .expect("the served flow");
    assert_eq!(
        served
            .server_workload
            .as_deref()
            .and_then(|w| w.pod.as_deref()),
        Some("api-7f9c")
    );
}

#[test]
fn flows_of_one_socket_owner_share_its_named_workload() {
    let node = Node::new();
    let cg = node.pod("partner-acme", "sync-5d8f");
    let mut e = Engine::new(with_sync_client(), EngineOptions::default());
    e.set_workloads(node.resolver());
    let ts = t0();
    let s = "10.20.1.5:80";
    for c in ["10.30.1.1:40010", "10.30.1.1:40011"] {
        e.handle(pkt(ts, c, s, 100, tcp_flags::SYN, b""));
        socket(&mut e, ts, c, s, Side::Client, cg);
    }
    let f = e.flows();
    assert_eq!(f.len(), 2);
    let (a, b) = (
        f[0].client_workload.as_ref().expect("named"),
        f[1].client_workload.as_ref().expect("named"),
    );
    // One allocation for both (a few hundred bytes a flow at 100k flows).
    assert!(Arc::ptr_eq(a, b));
    assert_eq!(a.pod.as_deref(), Some("sync-5d8f"));
    // After a tick the name is looked up afresh (a pod named later shows).
    e.tick(ts + 2_000_000_000);
    let c = "10.30.1.1:40012";
    e.handle(pkt(ts + 2_000_000_000, c, s, 100, tcp_flags::SYN, b""));
    socket(&mut e, ts + 2_000_000_000, c, s, Side::Client, cg);
    let f = e.flows();
    let fresh = f
        .iter()
        .find(|r| r.id.client == addr(c))
        .and_then(|r| r.client_workload.as_ref())
        .expect("named");
    assert!(!Arc::ptr_eq(a, fresh));
    assert_eq!(**a, **fresh);
}

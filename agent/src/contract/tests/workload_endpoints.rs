//! `endpoints[].workloads`: endpoints served by local workloads. Parsing
//! (hosts optional, ports required, no `exe`), errors with path and line,
//! and the match on a flow's server workload.

use super::{
    errors::{assert_errors, base, replace},
    *,
};
use crate::identity::workload::FlowWorkload;

/// A contract whose `spec.endpoints` is `endpoints` (YAML list items,
/// indented by four), with a `pii` class and one stage.
pub(crate) fn with_endpoints(endpoints: &str) -> Contract {
    let text = format!(
        "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: w\nspec:\n  dataClasses:\n    - {{name: pii, encryption: optional}}\n  endpoints:\n{}\n  stages:\n    - name: s\n      startsAt: \"2026-01-01T00:00:00Z\"\n",
        endpoints.trim_matches('\n')
    );
    Contract::parse(&text, "w.yaml").expect("valid contract")
}

/// `base()` with a second endpoint (lines 16..) before `clients:`.
fn with_second(endpoint: &str) -> String {
    replace(&base(), "  clients:\n", &format!("{endpoint}  clients:\n"))
}

fn workload(ns: &str, pod: &str, container: &str) -> FlowWorkload {
    FlowWorkload {
        namespace: Some(ns.into()),
        pod: Some(pod.into()),
        container: Some(container.into()),
        ..FlowWorkload::default()
    }
}

#[test]
fn an_endpoint_served_by_workloads_needs_no_hosts() {
    let text = with_second(
        "    - name: pay\n      dataClass: pii\n      workloads:\n        - {namespace: payments, pod: \"api-*\"}\n      ports: [8080]\n",
    );
    let c = Contract::parse(&text, "c.yaml").expect("valid");
    let e = c.endpoint("pay").expect("endpoint");
    assert!(e.hosts.is_empty());
    assert_eq!(e.ports.as_deref(), Some(&[8080][..]));
    assert_eq!(e.workloads.len(), 1);
    assert_eq!(
        e.workloads[0].pod.as_ref().map(NameGlob::as_str),
        Some("api-*")
    );
    assert!(e.served_by(&workload("payments", "api-7f9c", "api")));
    assert!(!e.served_by(&workload("payments", "web-1", "api")));
    // A field the node could not name never matches.
    assert!(!e.served_by(&FlowWorkload {
        pod: Some("api-1".into()),
        ..FlowWorkload::default()
    }));
    // Address endpoints have no workloads.
    assert!(c.endpoint("api").expect("api").workloads.is_empty());
}

#[test]
fn workload_endpoint_errors_name_the_field_and_line() {
    // Without ports every socket of the pods would be watched.
    assert_errors(
        &with_second(
            "    - name: pay\n      dataClass: pii\n      workloads: [{namespace: payments}]\n",
        ),
        &[(
            "spec.endpoints[1].ports",
            16,
            7,
            "lists the ports its pods listen on",
        )],
    );
    // `exe` cannot select a listening socket's cgroup.
    assert_errors(
        &with_second(
            "    - name: pay\n      dataClass: pii\n      workloads:\n        - {namespace: payments, exe: /usr/bin/api}\n      ports: [8080]\n",
        ),
        &[(
            "spec.endpoints[1].workloads[0].exe",
            19,
            33,
            "`exe` cannot select it",
        )],
    );
    assert_errors(
        &with_second(
            "    - name: pay\n      dataClass: pii\n      workloads: []\n      ports: [8080]\n",
        ),
        &[("spec.endpoints[1].workloads", 18, 18, "serves nothing")],
    );
    // The clients' selector rules hold here too: one home.
    assert_errors(
        &with_second(
            "    - name: pay\n      dataClass: pii\n      workloads: [{}]\n      ports: [8080]\n",
        ),
        &[("spec.endpoints[1].workloads[0]", 18, 19, "names none of")],
    );
    assert_errors(
        &with_second(
            "    - name: pay\n      dataClass: pii\n      workloads: [{pod: \"api-[\"}]\n      ports: [8080]\n",
        ),
        &[(
            "spec.endpoints[1].workloads[0].pod",
            18,
            25,
            "is not a glob pattern",
        )],
    );
    // Neither hosts nor workloads: hosts is what is missing.
    assert_errors(
        &with_second("    - name: pay\n      dataClass: pii\n      ports: [8080]\n"),
        &[(
            "spec.endpoints[1].hosts",
            16,
            7,
            "missing required field `hosts`",
        )],
    );
    assert_errors(
        &with_second(
            "    - name: pay\n      dataClass: pii\n      workloads: [{namespace: p}]\n      workload: [{pod: x}]\n      ports: [8080]\n",
        ),
        &[(
            "spec.endpoints[1].workload",
            19,
            7,
            "unknown field `workload`",
        )],
    );
}

#[test]
fn a_server_workload_names_the_endpoint_before_its_address() {
    let c = with_endpoints(
        r#"
    - { name: legacy, dataClass: pii, hosts: [127.0.0.1], ports: [8080] }
    - { name: pay, dataClass: pii, workloads: [{namespace: payments, pod: "api-*"}], ports: [8080] }
    - { name: named, dataClass: pii, hosts: [pay.example.com], workloads: [{namespace: payments}], ports: [8080] }
"#,
    );
    let server: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let api = workload("payments", "api-1", "api");
    let label = |w: Option<&FlowWorkload>, name: Option<&str>, port: u16| {
        let s = std::net::SocketAddr::new(server.ip(), port);
        c.match_endpoint_served(s, w, name, None).label().to_owned()
    };
    assert_eq!(label(Some(&api), None, 8080), "pay");
    // The name the client asked for beats the workload.
    assert_eq!(label(Some(&api), Some("pay.example.com"), 8080), "named");
    // Another pod (or none: replay) falls back to the address.
    assert_eq!(
        label(Some(&workload("payments", "web-1", "web")), None, 8080),
        "named",
        "namespace payments alone selects `named`"
    );
    assert_eq!(
        label(Some(&workload("shop", "api-1", "api")), None, 8080),
        "legacy"
    );
    assert_eq!(label(None, None, 8080), "legacy");
    assert_eq!(c.match_endpoint(server, None, None).label(), "legacy");
    // A port the endpoint does not list is not its traffic.
    assert_eq!(label(Some(&api), None, 9090), "unlisted");
    assert!(
        !c.match_endpoint_served("127.0.0.1:9090".parse().unwrap(), Some(&api), None, None)
            .is_watched()
    );
}

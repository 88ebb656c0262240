//! `rampwatch fingerprint` and the traffic path use one rule: the
//! fingerprint the CLI prints for a credential is the one a replayed request
//! carrying that credential is identified by. Once two copies of the rule
//! disagreed on a tab after `Basic`, and such a client showed up as
//! `unknown_client`.

#[path = "../../tests/src/canary.rs"]
#[expect(
    dead_code,
    reason = "only `Rng`, which the frame writer needs, is used here"
)]
mod canary;
#[path = "canary_replay/frames.rs"]
#[expect(
    dead_code,
    reason = "shared with the canary test, which uses all of it"
)]
mod frames;

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use serde_json::Value;

const PORT: u16 = 18_180;

/// `printf %s VALUE | rampwatch fingerprint --header HEADER`.
fn cli_fingerprint(header: &str, value: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampwatch"))
        .args(["fingerprint", "--header", header])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run rampwatch fingerprint");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value.as_bytes())
        .expect("write the credential");
    let out = child.wait_with_output().expect("rampwatch fingerprint");
    assert!(out.status.success(), "rampwatch fingerprint failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

#[test]
fn a_tab_after_basic_names_the_client_the_cli_fingerprinted() {
    // The value as a client sends it: scheme, a tab, the token.
    let value = "Basic\tdGFiYnk6czNjcmV0";
    let fp = cli_fingerprint("authorization", value);
    assert!(fp.starts_with("sha256:"), "{fp}");
    // The CLI strips the scheme whether a space or a tab follows it.
    assert_eq!(
        fp,
        cli_fingerprint("authorization", "Basic dGFiYnk6czNjcmV0")
    );

    let contract = format!(
        "apiVersion: rampwatch.io/v1\nkind: RampContract\nmetadata:\n  name: tab-ramp\n\
         spec:\n  scope:\n    networks: [\"127.0.0.0/8\"]\n    ports: [{PORT}]\n\
         \x20 dataClasses:\n\
         \x20   - name: internal\n      encryption: optional\n      authentication: required\n\
         \x20 endpoints:\n\
         \x20   - name: orders\n      dataClass: internal\n      hosts: [\"127.0.0.1\"]\n      ports: [{PORT}]\n\
         \x20 clients:\n\
         \x20   - name: tabby\n      credentials:\n        - header: authorization\n          \
         fingerprint: \"{fp}\"\n          issuedAt: \"2026-11-20T00:00:00Z\"\n\
         \x20 stages:\n    - name: pilot\n      startsAt: \"2026-11-01T00:00:00Z\"\n"
    );
    let start = agent::contract::parse_rfc3339("2026-11-29T20:00:00Z").expect("valid time");
    let mut cap = frames::Capture::new(start);
    cap.connect(PORT)
        .send(
            format!("GET /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {value}\r\n\r\n")
                .as_bytes(),
        )
        .reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .close();

    let dir = tempfile::tempdir().expect("temp dir");
    let contract_path = dir.path().join("contract.yaml");
    let pcap = dir.path().join("tab.pcap");
    std::fs::write(&contract_path, contract).expect("write contract");
    std::fs::write(&pcap, cap.to_pcap()).expect("write pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_rampwatch"))
        .args(["replay", "--at", "2026-11-29T20:00:00Z", "--contract"])
        .arg(&contract_path)
        .args(["-o", "json"])
        .arg(&pcap)
        .output()
        .expect("run rampwatch replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let objs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    let flows: Vec<&Value> = objs.iter().filter(|o| o["type"] == "flow").collect();
    assert_eq!(flows.len(), 1, "{stdout}");
    assert_eq!(flows[0]["client"], "tabby", "{stdout}");
    assert!(
        !objs
            .iter()
            .any(|o| o["type"] == "violation" && o["kind"] == "unknown_client"),
        "{stdout}"
    );
}

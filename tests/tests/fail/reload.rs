//! Reload under fire: while h2load keeps requests coming, the contract file
//! is replaced (atomically, as a ConfigMap update does) many times a second
//! with valid and invalid versions, each followed by SIGHUP. No request
//! count is lost, the agent never shows or judges with a mix of two
//! contracts, only valid versions are ever loaded, and an invalid last
//! version leaves the last good one active.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tests::{
    agent_proc::{AgentProcess, Launch},
    cgroup::CgroupGuard,
    sha256_hex,
    tools::require_tools,
    wait::{wait_for, wait_until},
};

use super::{Balance, contract, h2load_h1, scrape, served, server, sum};

/// Reloads attempted (half of them invalid).
const RELOADS: usize = 120;

/// Writes `text` next to `path` and renames it over: readers see the old
/// or the new file, never part of one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).expect("write the new contract");
    std::fs::rename(&tmp, path).expect("rename the new contract into place");
}

fn hup(agent: &AgentProcess) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(agent.pid(), libc::SIGHUP);
    }
}

#[test]
fn reloads_under_traffic_lose_no_request_and_never_activate_a_bad_contract() {
    require_tools();
    let orders = server();
    let port = orders.addr().port();
    let cg = CgroupGuard::new("reload-fire");
    // Two valid versions that differ in name and stage (a mix would show as
    // a contract with the other's stage), with quotas no traffic reaches.
    let valid = [
        contract("fire-a", "alpha", &[port], 1_000_000),
        contract("fire-b", "beta", &[port], 2_000_000),
    ];
    // Invalid versions: an unknown field, a bad fingerprint, a quota for a
    // client that does not exist, YAML that does not parse.
    let invalid = [
        valid[0].replace("  stages:", "  stagez:"),
        valid[1].replace("fingerprint: \"sha256:", "fingerprint: \"sha256:zz"),
        valid[0].replace("{ client: acme,", "{ client: nobody,"),
        valid[1].replace("spec:", "spec: [\n"),
    ];
    let valid_sha: HashSet<String> = valid.iter().map(|t| sha256_hex(t)).collect();
    let invalid_sha: HashSet<String> = invalid.iter().map(|t| sha256_hex(t)).collect();
    let pair = |c: &str| match c {
        "fire-a" => Some("alpha"),
        "fire-b" => Some("beta"),
        _ => None,
    };
    let agent = Launch {
        extra_args: &["--no-tls-probes"],
        log_level: "info",
        ..Launch::new(&valid[0], cg.path())
    }
    .start();
    let path = agent.contract_path();

    // The watcher: what the API says is active must always be one whole
    // contract.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let agent = Arc::new(agent);
    let watcher = {
        let (stop, seen, agent) = (Arc::clone(&stop), Arc::clone(&seen), Arc::clone(&agent));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = agent.cli_json(&["status"]).into_iter().next() {
                    let c = s["contract"].as_str().unwrap_or_default().to_owned();
                    let st = s["stage"].as_str().unwrap_or_default().to_owned();
                    seen.lock().expect("seen").push((c, st));
                }
            }
        })
    };
    let writer = {
        let (path, valid, invalid, agent) = (
            path.clone(),
            valid.clone(),
            invalid.clone(),
            Arc::clone(&agent),
        );
        std::thread::spawn(move || {
            for i in 0..RELOADS {
                let text = if i % 2 == 0 {
                    &invalid[(i / 2) % invalid.len()]
                } else {
                    &valid[(i / 2) % valid.len()]
                };
                replace(&path, text);
                hup(&agent);
                // Many per second: the pace of the writer, not a wait.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let sent: u64 = 40_000;
    let ok = h2load_h1(&cg, orders.addr(), sent / 2, 4) + {
        writer.join().expect("contract writer");
        // The last word is an invalid version: the last good one stays.
        replace(&path, &invalid[0]);
        hup(&agent);
        h2load_h1(&cg, orders.addr(), sent / 2, 4)
    };
    assert_eq!(ok, sent, "h2load requests failed");
    assert_eq!(served(&orders), sent);

    // Every request is charged to acme on orders, under whichever version.
    // A retransmitted request segment counts again in the kernel: the
    // baseline is at least what was sent, and all of it is charged.
    let mut last = None;
    let (b, m) = wait_until(
        "every request to be charged",
        Duration::from_secs(60),
        || {
            let m = scrape(&agent)?;
            let b = Balance::of(&m);
            let settled = last == Some(b);
            last = Some(b);
            (settled && b.kernel >= sent && b.adds_up()).then_some((b, m))
        },
    );
    assert_eq!(
        sum(
            &m,
            "rampwatch_requests_total",
            "client=\"acme\",endpoint=\"orders\""
        ) + sum(
            &m,
            "rampwatch_requests_total",
            "endpoint=\"orders\",client=\"acme\""
        ),
        b.kernel,
        "{m}"
    );
    assert_eq!(sum(&m, "rampwatch_requests_uncharged_total", ""), 0, "{m}");

    // The final invalid version is rejected and the last good one stays.
    let last_bad = sha256_hex(&invalid[0]);
    wait_for(
        "the final invalid version's rejection in the audit log",
        Duration::from_secs(30),
        || {
            agent
                .audit_records()
                .iter()
                .any(|r| r["kind"] == "contract_reload_rejected" && r["sha256"] == last_bad)
        },
    );
    let status: Value = wait_until(
        "status to report the rejected reload",
        Duration::from_secs(10),
        || {
            agent
                .cli_json(&["status"])
                .into_iter()
                .next()
                .filter(|s| s["contract_reload_ok"] == false)
        },
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("status watcher");
    let active_sha = status["contract_sha256"].as_str().unwrap_or_default();
    assert!(valid_sha.contains(active_sha), "{status}");
    assert_eq!(
        pair(status["contract"].as_str().unwrap_or_default()),
        status["stage"].as_str(),
        "{status}"
    );
    assert_eq!(
        sum(
            &scrape(&agent).expect("scrape"),
            "rampwatch_contract_reload_success",
            ""
        ),
        0
    );

    // Only valid versions were ever loaded; every rejection was an invalid one.
    let records = agent.audit_records();
    let loaded: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "contract_loaded")
        .filter_map(|r| r["sha256"].as_str())
        .collect();
    let rejected: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "contract_reload_rejected")
        .filter_map(|r| r["sha256"].as_str())
        .collect();
    assert!(loaded.iter().all(|s| valid_sha.contains(*s)), "{loaded:?}");
    assert!(
        rejected.iter().all(|s| invalid_sha.contains(*s)),
        "{rejected:?}"
    );
    assert!(
        loaded.len() >= 3 && rejected.len() >= 3,
        "reloads applied: {} loaded, {} rejected",
        loaded.len(),
        rejected.len()
    );
    // Never a mix: every status seen names a contract with its own stage.
    let seen = seen.lock().expect("seen");
    let mixed: Vec<_> = seen
        .iter()
        .filter(|(c, s)| pair(c) != Some(s.as_str()))
        .collect();
    assert!(mixed.is_empty(), "statuses mixing two contracts: {mixed:?}");
    // No verdict under a half contract: with both versions' terms met, no
    // violation at all.
    let violations = agent.cli_json(&["violations"]);
    assert!(violations.is_empty(), "{violations:?}");
    println!(
        "reload: {RELOADS} replacements + SIGHUP during {sent} requests: {} loaded, {} rejected, {} statuses checked",
        loaded.len(),
        rejected.len(),
        seen.len()
    );
}

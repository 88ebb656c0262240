//! The flood: the agent limited to a sliver of one CPU and a 16 KiB ring,
//! h2load sending as fast as the host allows, keep-alive and short
//! connections. The agent falls far behind; every request start the kernel
//! counted must still be charged to a client or counted as uncharged by
//! reason, exactly; the loss alert must reach Alertmanager; memory stays
//! bounded; after the flood the agent catches up and loses nothing more.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tests::{
    TempDir,
    agent_proc::Launch,
    cgroup::{CgroupGuard, CpuLimit},
    http::curl_in,
    prom::Monitoring,
    tools::require_tools,
    wait::{wait_until, wait_until_explained},
};

use super::{
    Balance, TOKEN, contract, h2load_h1, kernel_flows, rss_kib, scrape, served, server, sum,
};

/// The agent's resident memory must stay below this through the flood: the
/// event channel (8192 events), the ring and the engine's bounded tables.
const RSS_LIMIT_KIB: u64 = 512 * 1024;

#[test]
fn starved_agent_accounts_for_every_request_and_recovers() {
    require_tools();
    for tool in ["prometheus", "prometheus-alertmanager", "h2load"] {
        assert!(
            which::which(tool).is_ok(),
            "{tool} is missing; `cargo xtask test` installs the Debian packages prometheus, prometheus-alertmanager and nghttp2-client"
        );
    }
    let orders = server();
    let addr = orders.addr();
    let cg = CgroupGuard::new("flood");
    let dir = TempDir::new("flood");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "capture:\n  ringBytes: 16384\n").expect("write the agent config");
    let config_arg = config.to_string_lossy().into_owned();
    let agent = Launch {
        extra_args: &["--config", &config_arg, "--no-tls-probes"],
        log_level: "info",
        ..Launch::new(
            &contract("flood", "pilot", &[addr.port()], 1_000_000),
            cg.path(),
        )
    }
    .start();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/rampwatch-rules.yaml");
    let monitoring = Monitoring::start(&rules, &[agent.metrics_addr]);

    // A sliver of one CPU: the kernel keeps producing at full speed.
    let limit = CpuLimit::new("flood-agent", agent.pid() as u32, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, pid) = (Arc::clone(&stop), Arc::clone(&peak_rss), agent.pid());
        // Samples memory at a steady pace until told to stop (a
        // measurement, not a wait for state).
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let started = Instant::now();
    // Keep-alive connections, then one request per connection (whole flows
    // whose samples all drop: the engine never hears of them).
    let mut sent = 0;
    let mut ok = 0;
    for (requests, clients) in [(60_000, 8), (400, 400), (60_000, 8), (400, 400)] {
        ok += h2load_h1(&cg, addr, requests, clients);
        sent += requests;
    }
    let flood_end = Instant::now();
    let flood_secs = flood_end.duration_since(started).as_secs_f64();
    assert_eq!(ok, sent, "h2load requests failed");
    assert_eq!(served(&orders), sent, "the server answered every request");

    // The starved agent catches up: the kernel's baseline is every request,
    // and it adds up exactly.
    let mut last = None;
    let balance = wait_until_explained(
        "the starved agent to account for every request",
        Duration::from_secs(120),
        || {
            let m = scrape(&agent)?;
            let b = Balance::of(&m);
            // The kernel counts segments: a retransmitted request segment
            // counts again, so the baseline may exceed what the server
            // answered. Settled: two scrapes alike.
            let settled = last == Some(b);
            if !settled {
                // The way there, for a failure's log.
                eprintln!("flood: balance {b:?}");
                last = Some(b);
            }
            (settled && b.kernel >= sent && b.adds_up()).then_some((b, m))
        },
        || {
            // Every counter of the capture and the engine, and what the
            // kernel's map still holds.
            let m = scrape(&agent).unwrap_or_default();
            let counters: Vec<&str> = m
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| {
                    [
                        "uncharged",
                        "lost",
                        "kernel",
                        "flows",
                        "capture",
                        "ring",
                        "records",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                })
                .collect();
            format!("{}\n{}", counters.join("\n"), kernel_flows(agent.pid()))
        },
    );
    let caught_up = flood_end.elapsed();
    let (b, m) = balance;
    let ring_full = sum(&m, "rampwatch_events_lost_total", "reason=\"ring_full\"");
    let uncharged: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("rampwatch_requests_uncharged_total{"))
        .collect();
    println!(
        "flood: {sent} requests in {flood_secs:.1} s ({:.0}/s; kernel baseline {}, retransmitted request segments count again), agent throttled {:.1} s; \
         balance {b:?}; uncharged {uncharged:?}; ring_full {ring_full}; caught up {:.1} s after the flood",
        sent as f64 / flood_secs,
        b.kernel,
        limit.throttled_us() as f64 / 1e6,
        caught_up.as_secs_f64()
    );
    assert!(ring_full > 0, "the flood must overrun the agent");
    assert_eq!(b.engine, 0, "HTTP/1 requests are the kernel's to count");

    // The loss alert: real Prometheus, real Alertmanager.
    let alert = wait_until(
        "RampAgentEventsLost{reason=ring_full} at Alertmanager",
        Duration::from_secs(120),
        || {
            monitoring.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "RampAgentEventsLost"
                    && a["labels"]["reason"] == "ring_full"
            })
        },
    );
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");

    // Loss returns to zero: a request after the flood is charged to acme,
    // with no new loss of any kind.
    let baseline = b.kernel;
    let lost_before = sum(&m, "rampwatch_events_lost_total", "");
    let acme_before = sum(&m, "rampwatch_requests_total", "client=\"acme\"");
    curl_in(&cg, Some(TOKEN), &[format!("http://{addr}/orders")]);
    let m = wait_until(
        "the request after the flood to be charged to acme",
        Duration::from_secs(120),
        || {
            let m = scrape(&agent)?;
            let b = Balance::of(&m);
            (b.kernel == baseline + 1
                && b.adds_up()
                && sum(&m, "rampwatch_requests_total", "client=\"acme\"") == acme_before + 1)
                .then_some(m)
        },
    );
    let recovered = flood_end.elapsed();
    assert_eq!(
        sum(&m, "rampwatch_events_lost_total", ""),
        lost_before,
        "no loss after the flood"
    );
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("memory sampler");
    let peak = peak_rss.load(Ordering::Relaxed);
    println!(
        "flood: peak RSS {} MiB; judging again without loss {:.1} s after the flood",
        peak / 1024,
        recovered.as_secs_f64()
    );
    assert!(peak > 0 && peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    let mut agent = agent;
    assert!(agent.is_running(), "the agent survived the flood");
    drop(limit);
    drop(monitoring);
}

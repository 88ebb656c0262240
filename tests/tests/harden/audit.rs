//! The audit directory fails under the agent: full (a small tmpfs) or
//! read-only (a read-only bind mount). Judging goes on, every record lost
//! meanwhile is counted, and the chain says what is missing.

use super::*;

fn records_lost(agent: &AgentProcess) -> u64 {
    status(agent)["audit"]["records_lost"].as_u64().unwrap_or(0)
}

/// Sends SIGHUP (each forces a reload, hence an audit record) until `n`
/// records could not be written, each one waited for.
fn lose_records(agent: &AgentProcess, n: u64) {
    for _ in 0..200 {
        if records_lost(agent) >= n {
            return;
        }
        let before = (records_lost(agent), agent.audit_records().len());
        sighup(agent);
        wait_for("the reload's audit record", Duration::from_secs(20), || {
            (records_lost(agent), agent.audit_records().len()) != before
        });
    }
    panic!("the full audit directory still takes records");
}

/// Requests while the audit log is down are still judged and counted.
fn judging_goes_on(agent: &AgentProcess, cg: &CgroupGuard, url: &str) {
    let before = wait_until("a scrape", Duration::from_secs(30), || {
        requests_judged(agent)
    });
    for _ in 0..5 {
        curl_in(cg, Some(TOKEN), &[url]);
    }
    wait_for(
        "the 5 requests to be judged",
        Duration::from_secs(20),
        || requests_judged(agent).is_some_and(|n| n >= before + 5.0),
    );
}

fn verify(dir: &Path) -> String {
    let v = cli(&["audit", "verify", &dir.display().to_string()], "info");
    assert!(v.ok, "audit verify: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(": INTACT"), "{}", v.stdout);
    v.stdout
}

/// Every line of every segment is a whole record: nothing torn or
/// half-written stays in the chain.
fn no_partial_lines(dir: &Path) {
    for e in std::fs::read_dir(dir)
        .expect("list the audit dir")
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read(&p).expect("read a segment");
            assert!(
                text.is_empty() || text.ends_with(b"\n"),
                "{} ends in a partial line",
                p.display()
            );
        }
    }
}

fn lost_record(agent: &AgentProcess) -> Value {
    agent
        .audit_records()
        .into_iter()
        .find(|r| r["kind"] == "records_lost")
        .expect("a records_lost record in the chain")
}

#[test]
fn a_full_audit_disk_is_counted_judging_goes_on_and_the_chain_says_what_was_lost() {
    require_tools();
    let orders = server();
    let url = format!("http://{}/v1/orders", orders.addr());
    let cg = CgroupGuard::new("diskfull");
    let dir = TempDir::new("diskfull");
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).expect("mkdir audit");
    let audit_s = audit.display().to_string();
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=64k,mode=0750", "tmpfs", &audit_s],
    );
    let _mount = Mount(audit.clone());
    let mut agent = Launch {
        dir: Some(dir.path()),
        ..Launch::new(&contract(orders.addr().port()), cg.path())
    }
    .start();
    assert_eq!(status(&agent)["audit"]["writable"], true);

    // Fill the filesystem.
    let filler = audit.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("create the filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
    lose_records(&agent, 3);

    // Said once, shown, counted.
    let s = status(&agent);
    assert_eq!(s["audit"]["writable"], false, "{s}");
    let problem = s["audit"]["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("No space left on device"), "{s}");
    let log = agent.log_text();
    assert!(
        log.contains(
            "cannot be written (No space left on device (os error 28)); judging and metrics go on"
        ),
        "{log}"
    );
    let m = wait_until("a scrape", Duration::from_secs(30), || try_metrics(&agent));
    assert!(m.contains("rampwatch_audit_writable 0"), "{m}");
    let lost = records_lost(&agent);
    assert!(
        m.contains(&format!(
            "rampwatch_events_lost_total{{reason=\"audit_write_failed\"}} {lost}\n"
        )),
        "status says {lost} records lost: {m}"
    );
    judging_goes_on(&agent, &cg, &url);
    // What is on disk is still a whole chain, now.
    no_partial_lines(&audit);
    verify(&audit);

    // Space returns: the agent notices on its own.
    std::fs::remove_file(&filler).expect("free the space");
    wait_for(
        "the audit log to be writable again",
        Duration::from_secs(30),
        || status(&agent)["audit"]["writable"] == true,
    );
    let lost = records_lost(&agent);
    sighup(&agent);
    wait_for("records after the outage", Duration::from_secs(20), || {
        agent
            .audit_records()
            .last()
            .is_some_and(|r| r["kind"] == "contract_loaded")
    });
    assert!(agent.stop().success(), "{}", agent.log_text());
    no_partial_lines(&audit);
    let report = verify(&audit);
    let rec = lost_record(&agent);
    assert_eq!(rec["lost"].as_u64(), Some(lost), "{rec}");
    assert_eq!(
        rec["reason"], "No space left on device (os error 28)",
        "{rec}"
    );
    let seq = rec["seq"].as_u64().expect("seq");
    assert_eq!(rec["after_seq"].as_u64(), Some(seq - 1), "{rec}");
    assert!(
        report.contains(&format!(
            "lost:       {lost} records between seq {} and seq {seq}",
            seq - 1
        )),
        "{report}"
    );
    assert!(agent.log_text().contains("is writable again"));
}

#[test]
fn a_read_only_audit_dir_starts_the_agent_in_an_outage_until_it_is_writable() {
    require_tools();
    let orders = server();
    let url = format!("http://{}/v1/orders", orders.addr());
    let cg = CgroupGuard::new("rofs");
    let dir = TempDir::new("rofs");
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).expect("mkdir audit");
    let audit_s = audit.display().to_string();
    run("mount", &["--bind", &audit_s, &audit_s]);
    let _mount = Mount(audit.clone());
    run("mount", &["-o", "remount,bind,ro", &audit_s]);

    let mut agent = Launch {
        dir: Some(dir.path()),
        ..Launch::new(&contract(orders.addr().port()), cg.path())
    }
    .start();
    let s = status(&agent);
    assert_eq!(s["audit"]["writable"], false, "{s}");
    assert!(
        s["audit"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("Read-only file system")),
        "{s}"
    );
    // agent_start and contract_loaded are already lost.
    wait_for(
        "the start records to be counted",
        Duration::from_secs(10),
        || records_lost(&agent) >= 2,
    );
    judging_goes_on(&agent, &cg, &url);
    let out = agent.cli_ok(&["status"]).expect("status answers");
    assert!(out.contains("audit log    NOT WRITABLE"), "{out}");

    run("mount", &["-o", "remount,bind,rw", &audit_s]);
    wait_for(
        "the audit log to be writable again",
        Duration::from_secs(30),
        || status(&agent)["audit"]["writable"] == true,
    );
    let lost = records_lost(&agent);
    assert!(agent.stop().success(), "{}", agent.log_text());
    verify(&audit);
    let records = agent.audit_records();
    assert_eq!(records[0]["kind"], "records_lost", "{records:?}");
    assert_eq!(records[0]["lost"].as_u64(), Some(lost));
    assert_eq!(records[0]["after_seq"].as_u64(), Some(0));
    assert_eq!(
        records.last().map(|r| r["kind"].clone()),
        Some(Value::from("agent_stop"))
    );
}

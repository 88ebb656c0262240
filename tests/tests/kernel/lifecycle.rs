//! Attach/detach: nothing stays attached after shutdown, and an immediate
//! restart on the same cgroup works.

use tests::{
    cgroup::CgroupGuard,
    harness::{Attach, Endpoint, Harness, Tuning},
    http::HttpServer,
    tools::require_tools,
};

use crate::{EVENT_TIMEOUT, http_client_in};

fn prog_loaded(id: u64) -> bool {
    std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .expect("run bpftool prog show")
        .status
        .success()
}

#[test]
fn shutdown_detaches_everything_and_restart_works() {
    require_tools();
    let server = HttpServer::start("127.0.0.1:0".parse().expect("addr"), 10);
    let cg = CgroupGuard::new("life");
    for round in 0..3 {
        let mut h = Harness::start(
            Attach::Cgroup(cg.path().into()),
            &[Endpoint::exact(server.addr())],
            Tuning::default(),
        );
        let ids = cg.attached();
        assert_eq!(
            ids.len(),
            2,
            "round {round}: ingress + egress attached, got {ids:?}"
        );
        let (flow, _) = http_client_in(&cg, server.addr(), 2);
        let (_, totals) = h.wait_flow_end(flow, EVENT_TIMEOUT);
        assert_eq!(
            totals.expect("counters").request_starts[0],
            2,
            "round {round}"
        );
        h.shutdown();
        assert!(
            cg.attached().is_empty(),
            "round {round}: programs still attached after shutdown"
        );
        for id in ids {
            assert!(
                !prog_loaded(id),
                "round {round}: program {id} still loaded after shutdown"
            );
        }
    }
}

#[test]
fn bad_attach_targets_fail_with_one_clear_sentence() {
    require_tools();
    let err = Harness::try_start(Attach::Tc("rwt-nosuch0".into()), &[], Tuning::default())
        .err()
        .expect("an unknown interface must not start");
    let msg = err.to_string();
    assert!(msg.contains("rwt-nosuch0") && !msg.contains('\n'), "{msg}");
    let err = Harness::try_start(
        Attach::Cgroup(tests::cgroup::cgroup2_root().join("rwt-does-not-exist")),
        &[],
        Tuning::default(),
    )
    .err()
    .expect("a missing cgroup directory must not start");
    assert!(err.to_string().contains("rwt-does-not-exist"), "{err}");
}

#[test]
fn killed_capture_process_leaves_nothing_attached() {
    require_tools();
    let cg = CgroupGuard::new("kill");
    let mut child = std::process::Command::new(crate::rw_helper())
        .arg("capture-cgroup")
        .arg(cg.path())
        .arg("127.0.0.1:9")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn capture process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("read from capture process");
    assert_eq!(line.trim(), "attached");
    let ids = cg.attached();
    assert_eq!(ids.len(), 2, "attached by the child: {ids:?}");
    // SIGKILL: no destructor runs; the kernel must drop the links with the fds.
    child.kill().expect("kill capture process");
    child.wait().expect("reap capture process");
    tests::wait::wait_for(
        "the kernel to detach a killed capture's programs",
        EVENT_TIMEOUT,
        || cg.attached().is_empty() && ids.iter().all(|id| !prog_loaded(*id)),
    );
}

//! Processes the tests place in a cgroup or network namespace: a client must
//! be its own process so that only its sockets are charged to the test cgroup.
//!
//! rw-helper http-client <server addr> <requests> [path]   one keep-alive connection; prints a JSON report
//! rw-helper http-client-rst <server addr> <requests>   same, but ends with a reset
//! rw-helper capture-cgroup <cgroup dir> <server addr>  a capture in its own process; prints "attached"
//! rw-helper serve-http <bind addr> <body len>             prints "listening <addr>", serves until stdin closes
//! rw-helper floor [cgroup dir]   attaches the empty cgroup_skb program (the benchmarks' cost floor) to
//!                                the cgroup (default: the cgroup v2 root); prints "floor <prog id>", holds it
//!                                until stdin closes

use std::{io::Read, net::SocketAddr, process::ExitCode};

use tests::{
    harness::{Attach, Endpoint, Harness, Tuning},
    http::{HttpServer, run_client_with},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        cmd @ ("http-client" | "http-client-rst") => {
            let (Ok(server), Ok(n)) = (arg(1).parse::<SocketAddr>(), arg(2).parse::<u64>()) else {
                eprintln!("usage: rw-helper http-client <addr> <requests> [path]");
                return ExitCode::from(2);
            };
            let path = args.get(3).map_or("/", String::as_str);
            match run_client_with(server, n, path, cmd == "http-client-rst") {
                Ok(report) => {
                    println!("{}", report.to_json());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("http client to {server} failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "capture-cgroup" => {
            let (Some(dir), Ok(server)) = (args.get(1), arg(2).parse::<SocketAddr>()) else {
                eprintln!("usage: rw-helper capture-cgroup <cgroup dir> <server addr>");
                return ExitCode::from(2);
            };
            let h = Harness::start(
                Attach::Cgroup(dir.into()),
                &[Endpoint::exact(server)],
                Tuning::default(),
            );
            println!("attached");
            // Runs until killed (the test kills it) or stdin closes.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(h);
            ExitCode::SUCCESS
        }
        "capture-cgroup-tls" => {
            // Like capture-cgroup, with the TLS probes; says "probed" once
            // process <pid> has its probes.
            let (Some(dir), Ok(server), Ok(pid)) = (
                args.get(1),
                arg(2).parse::<SocketAddr>(),
                arg(3).parse::<u32>(),
            ) else {
                eprintln!("usage: rw-helper capture-cgroup-tls <cgroup dir> <server addr> <pid>");
                return ExitCode::from(2);
            };
            let h = Harness::start(
                Attach::Cgroup(dir.into()),
                &[Endpoint::exact(server)],
                Tuning {
                    tls: Some(agent::capture::TlsOptions::default()),
                    ..Tuning::default()
                },
            );
            tests::wait::wait_for(
                "the server to be probed",
                std::time::Duration::from_secs(20),
                || h.tls_coverage().processes.iter().any(|p| p.pid == pid),
            );
            println!("probed");
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(h);
            ExitCode::SUCCESS
        }
        "floor" => {
            let dir = match args.get(1) {
                Some(d) => d.into(),
                None => match agent::capture::cgroup2_root() {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            match agent::capture::Floor::attach(&dir) {
                Ok(floor) => {
                    println!("floor {}", floor.prog_id);
                    let _ = std::io::stdin().read_to_end(&mut Vec::new());
                    drop(floor);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("attaching the floor program to {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        "serve-http" => {
            let (Ok(bind), Ok(body)) = (arg(1).parse::<SocketAddr>(), arg(2).parse::<usize>())
            else {
                eprintln!("usage: rw-helper serve-http <bind addr> <body len>");
                return ExitCode::from(2);
            };
            let server = HttpServer::start(bind, body);
            println!("listening {}", server.addr());
            // Serve until the parent closes our stdin (or dies).
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: rw-helper http-client|capture-cgroup|serve-http|floor ...");
            ExitCode::from(2)
        }
    }
}

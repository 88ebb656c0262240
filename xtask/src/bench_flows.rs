//! `cargo xtask bench flows`: the agent's memory with 100k concurrent
//! flows. Reports, never fails on size.
//!
//! One nginx holds BENCH_FLOWS (default 100000) keep-alive connections on
//! loopback, opened from source addresses spread over 127.0.0.0/8 (one
//! address gives ~28k ephemeral ports to one server). Each connection sends
//! requests with a bearer token (again every minute while the rest open, so
//! no flow idles out, and once all are) and reads the answers, so every flow has
//! its kernel entry, its samples and its userspace state, then all stay
//! open while the agent's RSS, the kernel maps' memory (bpftool `memlock`)
//! and `flows_active` are read. The kernel flow map is sized for them
//! (`capture.flowEntries` in the agent's config). Environment: BENCH_FLOWS,
//! BENCH_AGENT_WRAPPER (a profiler command the agent runs under).

use std::{
    fs,
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::bench_overhead::{Agent, bpftool_show, contract_yaml, peak_rss_kib, rss_kib, wait};

pub fn run(rampwatch: &Path, work: &Path) -> anyhow::Result<()> {
    let flows = std::env::var("BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000u32);
    let dir = work.join("flows");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut nginx = start_nginx(&dir, port, flows)?;
    let result = measure(rampwatch, &dir, port, flows);
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();
    println!("{}", result?);
    Ok(())
}

fn measure(rampwatch: &Path, dir: &Path, port: u16, flows: u32) -> anyhow::Result<String> {
    let mut agent = start_agent(rampwatch, dir, port, flows)?;
    let rss_idle = rss_kib(agent.pid);
    let started = Instant::now();
    // Processes here may not hold more than ~20k fds (a hard limit root
    // cannot raise in these VMs): clients run as several python processes
    // of at most PER_CLIENT connections each, from their own source
    // addresses; each says "ready" once all its requests were answered and
    // holds its connections until its stdin closes.
    let mut clients = Vec::new();
    let mut first = 0;
    // All at once: flows idle longer than the engine's idle timeout (120 s)
    // would leave its table before the measurement.
    while first < flows {
        let n = PER_CLIENT.min(flows - first);
        let child = Command::new("python3")
            .args([
                "-c",
                CLIENT,
                &port.to_string(),
                &first.to_string(),
                &n.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting python3")?;
        clients.push((first, n, child));
        first += n;
    }
    let mut holders = Vec::new();
    for (first, n, mut child) in clients {
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
        }
        ensure!(
            line.trim() == "ready",
            "client for connections {first}..{}: {line}",
            first + n
        );
        holders.push(child);
    }
    let opened = started.elapsed();
    // The agent has seen them all when its table holds them.
    let socket = dir.join("agent.sock");
    let mut active = 0;
    let seen = wait(
        Duration::from_secs(120),
        "the agent to hold every flow",
        || {
            active = flows_active(rampwatch, &socket);
            Ok(active >= u64::from(flows))
        },
    );
    let rss = rss_kib(agent.pid);
    let hwm = peak_rss_kib(agent.pid);
    let maps = map_memory()?;
    for mut c in holders {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    agent.stop();
    let mut out = format!(
        "\n{flows} concurrent flows on loopback (opened in {:.1} s), agent flows_active {active}{}\n",
        opened.as_secs_f64(),
        if seen.is_err() { " (not all seen)" } else { "" }
    );
    out += &format!(
        "agent RSS: {:.1} MiB idle, {:.1} MiB holding them, peak {:.1} MiB\n",
        rss_idle as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    out += &format!(
        "  = {:.0} bytes per flow above idle\n",
        (rss.saturating_sub(rss_idle) * 1024) as f64 / f64::from(flows)
    );
    let total: u64 = maps.iter().map(|(_, b)| b).sum();
    out += &format!(
        "kernel maps (memlock, not in RSS): {:.1} MiB\n",
        total as f64 / (1 << 20) as f64
    );
    for (name, bytes) in maps.iter().filter(|(_, b)| *b >= 1 << 20) {
        out += &format!("  {name:<16} {:.1} MiB\n", *bytes as f64 / (1 << 20) as f64);
    }
    Ok(out)
}

const PER_CLIENT: u32 = 15_000;

/// argv: port, index of the first connection, count. Every open
/// connection sends another request each minute while the rest open, and
/// once all are. Connection i comes
/// from 127.1.x.y with i / 20000 = (x << 8) + y - 1.
const CLIENT: &str = r#"
import socket, sys, time
port, first, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = ("GET /v1/items HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
       "Authorization: Bearer bench-token-0123456789abcdef\r\n\r\n" % port).encode()
conns = []
def touch():
    # One more request on every open connection, pipelined over all of
    # them: opening 100k connections can take longer than the agent's idle
    # timeout on a loaded machine, and an idle flow would leave its tables.
    for s in conns:
        s.sendall(req)
    for i, s in enumerate(conns):
        got = s.recv(512)
        if not got.startswith(b"HTTP/1.1 200"):
            print("connection %d, again: %r" % (first + i, got), flush=True)
            sys.exit(1)
touched = time.monotonic()
for i in range(first, first + n):
    a = i // 20000
    s = socket.socket()
    s.bind(("127.1.%d.%d" % (a >> 8, (a & 0xff) + 1), 0))
    s.connect(("127.0.0.1", port))
    s.sendall(req)
    got = s.recv(512)
    if not got.startswith(b"HTTP/1.1 200"):
        print("connection %d: %r" % (i, got), flush=True)
        sys.exit(1)
    conns.append(s)
    if time.monotonic() - touched > 60:
        touch()
        touched = time.monotonic()
touch()
print("ready", flush=True)
sys.stdin.read()
"#;

fn start_nginx(dir: &Path, port: u16, flows: u32) -> anyhow::Result<std::process::Child> {
    let d = dir.display();
    // One worker holds at most ~20k fds here: enough workers for every
    // connection, spread by SO_REUSEPORT.
    let workers = flows.div_ceil(15_000).max(1);
    let conns = 18_000;
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/nginx.err warn;
events {{ worker_connections {conns}; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=65535 reuseport;
        location / {{ return 200 "ok"; }}
    }}
}}
"#,
        nofile = conns + 1000,
        workers = workers,
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, conf)?;
    let mut nginx = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdin(Stdio::null())
        .spawn()
        .context("starting nginx (Debian package nginx)")?;
    wait(Duration::from_secs(10), "nginx to listen", || {
        if let Ok(Some(st)) = nginx.try_wait() {
            bail!("nginx exited with {st}; see {d}/nginx.err");
        }
        Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
    })?;
    Ok(nginx)
}

fn start_agent(rampwatch: &Path, dir: &Path, port: u16, flows: u32) -> anyhow::Result<Agent> {
    let contract = dir.join("contract.yaml");
    fs::write(&contract, contract_yaml("flows-bench", &port.to_string()))?;
    // Room for every flow in the kernel table (a power of two above them):
    // on loopback both sockets of a connection are watched, so each has two
    // entries (the client's view and the server's).
    let config = dir.join("config.yaml");
    fs::write(
        &config,
        format!(
            "capture:\n  flowEntries: {}\n",
            (2 * flows + flows / 4).next_power_of_two()
        ),
    )?;
    let socket = dir.join("agent.sock");
    let log = fs::File::create(dir.join("agent.log"))?;
    // BENCH_AGENT_WRAPPER runs the agent under a heap profiler, e.g.
    // `heaptrack -o target/bench/flows/agent` (RSS figures then include it).
    let wrapper = std::env::var("BENCH_AGENT_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut cmd = match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(rampwatch);
            c
        }
        None => Command::new(rampwatch),
    };
    let child = cmd
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .arg("--contract")
        .arg(&contract)
        .args(["--metrics-addr", "127.0.0.1:0", "--socket"])
        .arg(&socket)
        .arg("--audit-dir")
        .arg(dir.join("audit"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting rampwatch agent")?;
    let mut agent = Agent {
        pid: child.id(),
        child,
    };
    wait(Duration::from_secs(30), "the agent to attach", || {
        if let Ok(Some(st)) = agent.child.try_wait() {
            bail!(
                "the agent exited with {st}; see {}/agent.log",
                dir.display()
            );
        }
        let out = Command::new(rampwatch)
            .args(["status", "-o", "json", "--socket"])
            .arg(&socket)
            .stderr(Stdio::null())
            .output()?;
        Ok(serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["contract"].as_str().is_some_and(|c| !c.is_empty())))
    })?;
    // Under a wrapper the child is the profiler: measure and stop the agent
    // itself, the process serving this socket.
    if let Some(pid) = serving(&socket) {
        agent.pid = pid;
    }
    Ok(agent)
}

/// The pid of the `rampwatch agent` whose command line names `socket`.
fn serving(socket: &Path) -> Option<u32> {
    let want = socket.to_string_lossy().into_owned();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_agent = args.first()?.ends_with(b"rampwatch")
            && args.get(1).is_some_and(|a| *a == b"agent")
            && args.contains(&want.as_bytes());
        is_agent.then_some(pid)
    })
}

fn flows_active(rampwatch: &Path, socket: &Path) -> u64 {
    Command::new(rampwatch)
        .args(["status", "-o", "json", "--socket"])
        .arg(socket)
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["flows_active"].as_u64())
        .unwrap_or(0)
}

/// (name, memlock bytes) of every loaded `RW_*` map, largest first.
fn map_memory() -> anyhow::Result<Vec<(String, u64)>> {
    let v = bpftool_show("map")?;
    let mut maps: Vec<(String, u64)> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m["name"].as_str()?;
            name.starts_with("RW_")
                .then(|| (name.to_owned(), m["bytes_memlock"].as_u64().unwrap_or(0)))
        })
        .collect();
    maps.sort_by_key(|m| std::cmp::Reverse(m.1));
    Ok(maps)
}

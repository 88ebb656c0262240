//! Local demo traffic for `cargo xtask run -- agent --contract examples/contract.yaml`.
//!
//! Starts small servers on 127.0.0.1 matching `examples/contract.yaml` and
//! clients that commit one of each violation every few seconds, so a
//! newcomer sees the product work instead of an idle daemon. Everything is a
//! child process in a temporary directory; Ctrl-C (or the agent exiting)
//! stops and removes all of it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use crate::cmd::run;

/// A keep-alive HTTP/1.1 server answering 200 to everything; with a
/// certificate and key after the port, over TLS (python's `ssl`, so the
/// agent's TLS probes read its clear text).
const HTTP_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

// The demo's credentials; `examples/contract.yaml` lists their fingerprints.
const ACME: &str = "Authorization: Bearer acme-demo-token";
const ACME_STALE: &str = "Authorization: Bearer acme-old-token";
const ACME_REVOKED: &str = "Authorization: Bearer acme-leaked-token";
const GLOBEX: &str = "X-Api-Key: globex-demo-token";

pub struct Demo {
    dir: PathBuf,
    children: Vec<Child>,
    stop: Arc<AtomicBool>,
    clients: Option<thread::JoinHandle<()>>,
}

impl Demo {
    pub fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("rampwatch-demo-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut demo = Self {
            dir,
            children: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            clients: None,
        };
        demo.start_servers()?;
        let stop = Arc::clone(&demo.stop);
        demo.clients = Some(thread::spawn(move || clients(&stop)));
        Ok(demo)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn start_servers(&mut self) -> anyhow::Result<()> {
        let (cert, key) = (self.dir.join("cert.pem"), self.dir.join("key.pem"));
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            ])
            .arg("/CN=payments.demo.local")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()))
        .context("openssl could not make the demo certificate")?;
        let script = self.dir.join("server.py");
        fs::write(&script, HTTP_SERVER)?;
        for port in ["8080", "8081"] {
            self.spawn(Command::new("python3").arg(&script).arg(port))?;
        }
        // payments: HTTPS with TLS 1.3, its requests read by the probes.
        self.spawn(
            Command::new("python3")
                .arg(&script)
                .arg("8443")
                .arg(&cert)
                .arg(&key),
        )?;
        let tls = |extra: &[&str]| {
            let mut c = Command::new("openssl");
            c.arg("s_server")
                .arg("-quiet")
                .arg("-www")
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key);
            c.args(extra);
            c
        };
        self.spawn(&mut tls(&[
            "-accept",
            "127.0.0.1:9443",
            "-tls1_1",
            "-cipher",
            "ALL:@SECLEVEL=0",
        ]))?;
        Ok(())
    }

    fn spawn(&mut self, cmd: &mut Command) -> anyhow::Result<()> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting demo server {cmd:?}"))?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.clients.take() {
            let _ = t.join();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn curl(args: &[&str]) {
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "5"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One round of traffic: compliant calls and one of each violation.
fn round() {
    // Compliant: TLS 1.3 to payments, globex within its quota on orders.
    curl(&["-k", "-H", ACME, "https://127.0.0.1:8443/v1/payments"]);
    curl(&["-H", GLOBEX, "http://127.0.0.1:8081/v1/orders"]);
    // unencrypted_flow: pii over plain HTTP.
    curl(&["-H", ACME, "http://127.0.0.1:8080/v1/payments"]);
    // weak_tls: a legacy listener on TLS 1.1 with a CBC suite.
    let _ = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            "127.0.0.1:9443",
            "-tls1_1",
            "-cipher",
            "ALL:@SECLEVEL=0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // Inside TLS, read by the probes in the payments server: a revoked, a
    // stale and a missing key (revoked_client, stale_credential,
    // unknown_client).
    curl(&[
        "-k",
        "-H",
        ACME_REVOKED,
        "https://127.0.0.1:8443/v1/payments",
    ]);
    curl(&["-k", "-H", ACME_STALE, "https://127.0.0.1:8443/v1/payments"]);
    curl(&["-k", "https://127.0.0.1:8443/v1/payments"]);
    // unlisted_endpoint: a path outside payments' paths, inside TLS.
    curl(&["-k", "-H", ACME, "https://127.0.0.1:8443/admin/export"]);
    // quota_overshoot: 40 requests on one keep-alive TLS connection,
    // against acme's 10 req/s (burst 20) on payments.
    let urls: Vec<String> = (0..40)
        .map(|i| format!("https://127.0.0.1:8443/v1/payments?page={i}"))
        .collect();
    let mut args = vec!["-k", "-H", ACME];
    args.extend(urls.iter().map(String::as_str));
    curl(&args);
}

fn clients(stop: &AtomicBool) {
    // Give the servers and the agent a moment to listen and attach.
    thread::sleep(Duration::from_secs(3));
    while !stop.load(Ordering::Relaxed) {
        round();
        for _ in 0..50 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

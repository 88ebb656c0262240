//! Real clients in the test cgroup carrying canaries: curl for the header
//! forms, a small python socket client for what curl cannot send
//! (pipelining, h2c, malformed heads, garbage).

use std::{net::SocketAddr, path::Path, process::Stdio};

use tests::{canary::Canaries, cgroup::CgroupGuard};

/// Sends each file as one `send`, closes the write side, reads until EOF.
/// The pause only keeps the sends in separate segments.
const RAW_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    for f in sys.argv[3:]:
        s.sendall(open(f, "rb").read())
        time.sleep(0.05)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
except OSError:
    pass
s.close()
"#;

pub struct Clients<'a> {
    pub cg: &'a CgroupGuard,
    pub dir: &'a Path,
    n: usize,
}

impl<'a> Clients<'a> {
    pub fn new(cg: &'a CgroupGuard, dir: &'a Path) -> Self {
        std::fs::write(dir.join("raw_client.py"), RAW_CLIENT).expect("write raw client");
        Self { cg, dir, n: 0 }
    }

    /// `curl -s <args> <url>` in the cgroup; the answer is not checked
    /// (an unlisted path still gets 200 from the test server).
    pub fn curl(&self, url: &str, args: &[&str]) {
        let status = self
            .cg
            .command("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "5"])
            .args(args)
            .arg(url)
            .stdout(Stdio::null())
            .status()
            .expect("run curl");
        assert!(status.success(), "curl {args:?} {url} failed: {status}");
    }

    /// The python client in the cgroup, one send per part.
    pub fn raw(&mut self, server: SocketAddr, parts: &[&[u8]]) {
        let mut cmd = self.cg.command("python3");
        cmd.arg(self.dir.join("raw_client.py"))
            .arg(server.ip().to_string())
            .arg(server.port().to_string());
        for part in parts {
            self.n += 1;
            let f = self.dir.join(format!("part-{}", self.n));
            std::fs::write(&f, part).expect("write a payload part");
            cmd.arg(f);
        }
        let status = cmd.status().expect("run the python client");
        assert!(
            status.success(),
            "python client to {server} failed: {status}"
        );
    }
}

pub fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// HTTP/2 preface, empty SETTINGS and a HEADERS frame whose
/// `authorization` is a plain literal (the canary is in the bytes as is).
pub fn h2_with(authorization: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x00];
    block.push(u8::try_from("authorization".len()).expect("short"));
    block.extend_from_slice(b"authorization");
    block.push(u8::try_from(authorization.len()).expect("below 127"));
    block.extend_from_slice(authorization.as_bytes());
    let len = u32::try_from(block.len()).expect("small").to_be_bytes();
    let mut out = agent::protocol::http::H2_PREFACE.to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[len[1], len[2], len[3], 0x01, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

/// Garbage for a watched port: random bytes, a TLS record cut short, a
/// 100 KB request head (with a canary after the padding).
pub fn garbage(c: &mut Canaries) -> Vec<Vec<u8>> {
    let noise = tests::canary::Rng::from_entropy().bytes(4096);
    let tls_cut = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xaa,
    ];
    let mut huge = b"GET /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'p', 100 * 1024));
    huge.extend(
        format!(
            "\r\nAuthorization: Bearer {}\r\n\r\n",
            c.mint("after a 100 KB header")
        )
        .bytes(),
    );
    vec![noise, tls_cut, huge]
}

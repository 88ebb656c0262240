//! What /proc says about processes, for choosing which ones to probe:
//! sockets on watched endpoints (`/proc/<pid>/net/tcp{,6}` per network
//! namespace + `/proc/<pid>/fd`), the OpenSSL a process maps
//! (`/proc/<pid>/maps`), its name and executable. Everything here tolerates
//! processes vanishing between two reads.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

/// TCP states in /proc/net/tcp.
const ESTABLISHED: u8 = 0x01;
const LISTEN: u8 = 0x0a;

/// One line of /proc/net/tcp{,6}.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub state: u8,
    pub inode: u64,
}

impl TcpSocket {
    pub fn listening(&self) -> bool {
        self.state == LISTEN
    }
    pub fn established(&self) -> bool {
        self.state == ESTABLISHED
    }
}

/// Parses "0100007F:1F90" (v4) or the 32-hex-digit v6 form: the address is
/// printed as host-order 32-bit words.
fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |i: usize| {
        a.get(8 * i..8 * i + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut o = [0u8; 16];
            for i in 0..4 {
                o[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(o);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

/// One socket line of /proc/net/tcp or tcp6 (`sl local remote st
/// tx:rx tr:when retrnsmt uid timeout inode ...`); `None` for the header and
/// bad lines.
fn parse_tcp_line(l: &str) -> Option<TcpSocket> {
    let mut f = l.split_whitespace();
    let _sl = f.next()?;
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpSocket {
        local,
        remote,
        state,
        inode,
    })
}

/// Parses the text of /proc/net/tcp or tcp6; bad lines are skipped.
#[cfg(test)]
pub fn parse_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines().skip(1).filter_map(parse_tcp_line).collect()
}

/// Every pid in /proc.
pub fn pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Hands every TCP socket of every network namespace a process is in to
/// `each`, reading each namespace's table once, a line at a time: a node
/// with 200k connections has 30 MB of /proc/net/tcp, and holding it (and
/// a list of its sockets) at once was the agent's largest allocation in
/// `bench flows` (57 MiB at 100k loopback connections).
pub fn each_tcp_socket(pids: &[u32], mut each: impl FnMut(&TcpSocket)) {
    let mut seen_ns = HashSet::new();
    let mut line = String::new();
    for &pid in pids {
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !seen_ns.insert(ns) {
            continue;
        }
        for f in ["tcp", "tcp6"] {
            let Ok(file) = fs::File::open(format!("/proc/{pid}/net/{f}")) else {
                continue;
            };
            let mut r = BufReader::with_capacity(64 * 1024, file);
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(s) = parse_tcp_line(&line) {
                            each(&s);
                        }
                    }
                }
            }
        }
    }
}

/// Socket inodes each process holds, among `wanted`.
pub fn holders(pids: &[u32], wanted: &HashSet<u64>) -> HashMap<u32, Vec<u64>> {
    let mut out: HashMap<u32, Vec<u64>> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    for &pid in pids {
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(link) = fs::read_link(e.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if wanted.contains(&inode) {
                out.entry(pid).or_default().push(inode);
            }
        }
    }
    out
}

/// Where a process's OpenSSL is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslSource {
    /// A mapped libssl: its path inside the process's mount namespace.
    Library(PathBuf),
    /// No libssl mapped: the executable, which may carry OpenSSL itself.
    Executable(PathBuf),
}

impl SslSource {
    /// The path as the process sees it.
    pub fn path(&self) -> &Path {
        match self {
            Self::Library(p) | Self::Executable(p) => p,
        }
    }
}

/// Whether a file name is a libssl this agent probes (3 or 1.1).
pub fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so.3") || name.starts_with("libssl.so.1.1")
}

/// The libssl mapped in a maps text, else `None`.
pub fn libssl_in_maps(maps: &str) -> Option<PathBuf> {
    maps.lines().find_map(|l| {
        let path = l.split_whitespace().nth(5)?;
        let name = Path::new(path).file_name()?.to_str()?;
        is_libssl(name).then(|| PathBuf::from(path))
    })
}

/// The OpenSSL of `pid`: a mapped libssl, else its executable. `None` when
/// the process is gone.
pub fn ssl_source(pid: u32) -> Option<SslSource> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    if let Some(lib) = libssl_in_maps(&maps) {
        return Some(SslSource::Library(lib));
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(SslSource::Executable(exe))
}

/// The path to give the kernel for a file of `pid`: through its root, so a
/// library inside a container resolves to the container's file.
pub fn through_root(pid: u32, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(rel)
}

pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Addresses of this host's interfaces (a client connecting to one of them
/// talks to a server on this node).
pub fn local_addrs() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list freed below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.insert(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// Local addresses in a /proc/net/fib_trie text (`/32 host LOCAL` leaves).
pub fn fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// Addresses in a /proc/net/if_inet6 text.
pub fn if_inet6_addrs(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

/// The addresses of every network namespace on this node (containers and
/// pods included): a client connecting to one of them talks to a server on
/// this node, which is probed itself.
pub fn node_addrs(pids: &[u32]) -> HashSet<IpAddr> {
    let mut out = local_addrs();
    let mut seen_ns = HashSet::new();
    for &pid in pids {
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !seen_ns.insert(ns) {
            continue;
        }
        if let Ok(t) = fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
            out.extend(fib_trie_locals(&t).into_iter().map(IpAddr::V4));
        }
        if let Ok(t) = fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
            out.extend(if_inet6_addrs(&t).into_iter().map(IpAddr::V6));
        }
    }
    out
}

/// Whether a connection to `ip` stays on this node.
pub fn is_local(ip: IpAddr, locals: &HashSet<IpAddr>) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified() || locals.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_lines() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 678 1 0000000000000000 100 0 0 10 0
   garbage line
";
        let s = parse_tcp(v4);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, ("127.0.0.1".parse().unwrap(), 8080));
        assert!(s[0].listening());
        assert_eq!(s[1].remote, ("127.0.0.1".parse().unwrap(), 50000));
        assert!(s[1].established());
        assert_eq!(s[1].inode, 678);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:01BB 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1000 1 0000000000000000 100 0 0 10 0
";
        let s = parse_tcp(v6);
        assert_eq!(s[0].local, ("::1".parse().unwrap(), 443));
        assert_eq!(s[1].local, ("127.0.0.1".parse().unwrap(), 443));
    }

    /// The streaming reader finds this process's own listener and its
    /// accepted connection in the live tables, each once.
    #[test]
    fn reads_the_live_tables_a_line_at_a_time() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (_a, _) = l.accept().expect("accept");
        let (mut listening, mut established) = (0, 0);
        each_tcp_socket(&[std::process::id()], |s| {
            if s.local.1 == port && s.listening() {
                listening += 1;
            }
            if s.local.1 == port && s.established() {
                established += 1;
            }
        });
        assert_eq!((listening, established), (1, 1));
    }

    #[test]
    fn finds_libssl_in_maps() {
        let maps = "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libssl.so.3
";
        assert_eq!(
            libssl_in_maps(maps),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"))
        );
        assert_eq!(libssl_in_maps("7f00-7f01 r-xp 0 0:0 0 [vdso]\n"), None);
        assert!(is_libssl("libssl.so.1.1"));
        assert!(!is_libssl("libssl3.so"));
    }

    #[test]
    fn reads_namespace_addresses() {
        let trie = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.199.3.2
        /32 host LOCAL
     |-- 10.199.3.3
        /32 link BROADCAST
     |-- 127.0.0.1
        /32 host LOCAL
";
        assert_eq!(
            fib_trie_locals(trie),
            vec![Ipv4Addr::new(10, 199, 3, 2), Ipv4Addr::LOCALHOST]
        );
        let v6 = "00000000000000000000000000000001 01 80 10 80       lo
fd000199000300000000000000000002 02 40 00 80  veth0
";
        assert_eq!(
            if_inet6_addrs(v6),
            vec![
                Ipv6Addr::LOCALHOST,
                "fd00:199:3::2".parse::<Ipv6Addr>().unwrap()
            ]
        );
    }

    #[test]
    fn loopback_and_own_addresses_are_local() {
        let locals: HashSet<IpAddr> = ["10.1.2.3".parse().unwrap()].into();
        assert!(is_local("127.0.0.5".parse().unwrap(), &locals));
        assert!(is_local("::1".parse().unwrap(), &locals));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap(), &locals));
        assert!(is_local("10.1.2.3".parse().unwrap(), &locals));
        assert!(!is_local("192.0.2.1".parse().unwrap(), &locals));
        assert_eq!(
            through_root(7, Path::new("/usr/lib/libssl.so.3")),
            PathBuf::from("/proc/7/root/usr/lib/libssl.so.3")
        );
    }
}

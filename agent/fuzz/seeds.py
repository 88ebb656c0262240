#!/usr/bin/env python3
"""Writes the starting seeds of every fuzz target into DIR/<target>/.

The committed corpus (agent/fuzz/corpus/) is these seeds plus what the
fuzzers found, minimized with `cargo xtask fuzz TARGET --merge`. Sources:
the golden captures (tests/fixtures/*.pcap*), the HTTP/2 test streams
(agent/src/protocol/h2/testdata/), the contracts (examples/,
tests/fixtures/, agent/src/contract/tests/), and an audit log written by
the agent's own writer (audit_seed.bin, and audit_seed_v2.bin in format 2
with usage records; see corpus/README.md).

    python3 agent/fuzz/seeds.py agent/fuzz/target/seeds
"""

import hashlib
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
H2 = ROOT / "agent" / "src" / "protocol" / "h2" / "testdata"


def read_pcap(path):
    """(linktype, [(ts_ns, frame)]) of a legacy little-endian pcap."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    nano = magic == 0xA1B23C4D
    link = struct.unpack_from("<I", data, 20)[0]
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, pos)
        pos += 16
        out.append((sec * 10**9 + frac * (1 if nano else 1000), data[pos : pos + incl]))
        pos += incl
    return link, out


def ip_offset(link, frame):
    if link == 1:
        off, etype = 14, struct.unpack_from(">H", frame, 12)[0]
        while etype in (0x8100, 0x88A8):
            etype = struct.unpack_from(">H", frame, off + 2)[0]
            off += 4
        return off
    return {113: 16, 276: 20, 101: 0, 12: 0, 14: 0, 0: 4, 108: 4}.get(link)


def tcp_of(ip):
    """(src, dst, sport, dport, seq, flags, payload) or None."""
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        if ip[9] != 6:
            return None
        src, dst, tcp = b"\0" * 10 + b"\xff\xff" + ip[12:16], b"\0" * 10 + b"\xff\xff" + ip[16:20], ip[ihl:total]
    elif ip[0] >> 4 == 6:
        if ip[6] != 6:
            return None
        src, dst, tcp = ip[8:24], ip[24:40], ip[40 : 40 + struct.unpack_from(">H", ip, 4)[0]]
    else:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp)
    doff = (tcp[12] >> 4) * 4
    return src, dst, sport, dport, seq, tcp[13], tcp[doff:]


def captures():
    for p in sorted(FIX.glob("*.pcap")):
        link, frames = read_pcap(p)
        yield p, link, frames


def streams(frames, link):
    """Per flow, the in-order payload bytes of each direction (client first)."""
    flows = {}
    for _, frame in frames:
        off = ip_offset(link, frame)
        t = off is not None and tcp_of(frame[off:])
        if not t:
            continue
        src, dst, sport, dport, _, flags, payload = t
        key = frozenset([(src, sport), (dst, dport)])
        f = flows.setdefault(key, {"client": (src, sport) if flags & 0x12 == 0x02 else None, "dirs": {}})
        if f["client"] is None:
            f["client"] = (src, sport)
        d = "c" if (src, sport) == f["client"] else "s"
        f["dirs"][d] = f["dirs"].get(d, b"") + payload
    return [(f["dirs"].get("c", b""), f["dirs"].get("s", b"")) for f in flows.values()]


def sample(direction, flags, payload, seq, ts, key):
    head = struct.pack("<IBBHIIIIQQ", 0x10, direction, flags, 0, len(payload), len(payload), seq, 1, ts, 7)
    return head + key + b"\0\0\0\0" + payload


def flow_key(client, server):
    (ca, cp), (sa, sp) = client, server
    return ca + sa + struct.pack("<HHBBHI", cp, sp, 0, 0, 0, 0)


def flow_end(key, ts):
    dirs = struct.pack("<9Q", 3, 300, 100, 1, 1, ts, ts, 1, 0x1B) * 2
    stats = dirs + struct.pack("<QQII", 7, 0, 1, 0)
    return struct.pack("<IIQ", 0x20, 1, ts) + key + b"\0\0\0\0" + stats


def tls_data(direction, data, ts, key):
    head = struct.pack("<IBBHIIQIIIIIIQQ", 0x30, direction, 0, 0, len(data), len(data), 0, len(data),
                       1 if direction == 0 else 2, 42, 42, 1, 0, ts, 7)
    return head + key + b"\0\0\0\0" + data


def framed(records):
    return b"".join(struct.pack("<H", len(r)) + r for r in records)


def ring_seeds():
    for p, link, frames in captures():
        records, client = [], {}
        for ts, frame in frames:
            off = ip_offset(link, frame)
            t = off is not None and tcp_of(frame[off:])
            if not t:
                continue
            src, dst, sport, dport, seq, flags, payload = t
            conn = frozenset([(src, sport), (dst, dport)])
            if conn not in client:
                client[conn] = (src, sport) if not (flags & 0x12 == 0x12) else (dst, dport)
            c = client[conn]
            s = (dst, dport) if (src, sport) == c else (src, sport)
            key = flow_key(c, s)
            direction = 0 if (src, sport) == c else 1
            if payload:
                records.append(sample(direction, flags, payload[:4096], seq, ts, key))
                if payload[:4] in (b"GET ", b"POST", b"HTTP"):
                    records.append(tls_data(direction, payload[:4096], ts, key))
            if flags & 0x01:
                records.append(flow_end(key, ts))
        yield p.stem, framed(records)


def h2_seed(client, server, upgrade, chunk):
    out = bytes([1 if upgrade else 0])
    c, s = 0, 0
    while c < len(client) or s < len(server):
        for d, buf, pos in ((0, client, c), (1, server, s)):
            part = buf[pos : pos + chunk]
            if part:
                out += struct.pack("<BH", d, len(part)) + part
        c += chunk
        s += chunk
    return out


def to_pcapng(link, frames):
    """The same frames as a little-endian pcapng: SHB, IDB (ns), EPBs."""
    def block(kind, body):
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", kind, n) + body + struct.pack("<I", n)
    tsresol = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", link, 0, 65535) + tsresol)
    for ts, frame in frames:
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    return out


def write(dir_, name, data):
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / name).write_bytes(data)


def main(out):
    out = Path(out)
    for p, link, frames in captures():
        data = p.read_bytes()
        write(out / "pcap", p.name, data)
        write(out / "engine_replay", p.name, data)
        write(out / "pcapng", f"{p.stem}.pcapng", to_pcapng(link, frames))
        for i, (_, frame) in enumerate(frames[:12]):
            write(out / "ip_packet", f"{p.stem}-{i}", struct.pack("<H", link) + frame)
        for i, (c, s) in enumerate(streams(frames, link)):
            if c[:1] == b"\x16":
                write(out / "tls", f"{p.stem}-{i}-client", c[:16384])
                write(out / "tls", f"{p.stem}-{i}-server", s[:16384])
            elif c[:1].isalpha():
                write(out / "http1", f"{p.stem}-{i}", c[:16384])
                write(out / "http_lenient", f"{p.stem}-{i}", c[:4096])
                if c.startswith(b"PRI *") or b"h2c" in c:
                    write(out / "h2", f"{p.stem}-{i}", h2_seed(c, s, False, 1024))
    for p in sorted(FIX.glob("*.pcapng")):
        write(out / "pcapng", p.name, p.read_bytes())
        write(out / "engine_replay", p.name, p.read_bytes())
    for name, data in ring_seeds():
        write(out / "ring_records", name, data)
    for p in sorted(H2.glob("*.client.bin")):
        name = p.name.removesuffix(".client.bin")
        client, server = p.read_bytes(), (H2 / f"{name}.server.bin").read_bytes()
        write(out / "h2", name, h2_seed(client, server, name == "upgrade", 65535))
        write(out / "h2", f"{name}-interleaved", h2_seed(client, server, name == "upgrade", 97))
    for line in [b"GET /v1/x HTTP/1.1\r\n\r\n", b"FOO  /a HTTP/1.0\r\nHost: x\r\n\r\n",
                 b"GET /\r\n", b"PROPFIND /dav HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n",
                 b"get\t/x  HTTP/1.1\nHost:a\n\n"]:
        write(out / "http_lenient", hashlib.sha1(line).hexdigest()[:12], line)
    for p in [ROOT / "examples/contract.yaml", FIX / "contract.yaml",
              ROOT / "agent/src/contract/tests/example.yaml"]:
        write(out / "contract", f"{p.parent.name}-{p.name}", p.read_bytes())
    # The agent's config file: the documented example, a minimal one, and
    # typical mistakes (unknown field, wrong type, out of range).
    cfg_doc = (ROOT / "agent/src/runtime/config.rs").read_text()
    doc = [l[4:] for l in cfg_doc.splitlines() if l.startswith("//!")]
    start = doc.index("```yaml") + 1
    example = "\n".join(doc[start:doc.index("```", start)]) + "\n"
    for name, text in [("example", example), ("minimal", "metricsAddr: 127.0.0.1:9464\n"),
                       ("unknown-field", "metricsAdr: 1\n"),
                       ("bad-types", "capture:\n  snaplen: lots\n  ringBytes: -1\ntls: [1]\n"),
                       ("too-large", "capture:\n  flowEntries: 99999999999\n"),
                       ("empty", "")]:
        write(out / "agent_config", name, text.encode())
    # HMAC key files: raw bytes, hex, whitespace around hex, too short.
    for name, data in [("raw", bytes(range(32))), ("hex", b"ab" * 32 + b"\n"),
                       ("hex-spaced", b"  " + b"0f" * 40 + b"\n\n"), ("short", b"abc"),
                       ("odd-hex", b"a" * 65), ("empty", b"")]:
        write(out / "audit_key", name, data)
    # Segments of a log the agent's writer made (rotation, a torn tail and
    # its recovery record), joined by NUL as the target splits them.
    audit = (Path(__file__).parent / "audit_seed.bin").read_bytes()
    segs = audit.split(b"\0")
    write(out / "audit_verify", "log", audit)
    write(out / "audit_verify", "first-segment", segs[0])
    write(out / "audit_verify", "torn", audit[:-20])
    write(out / "audit_verify", "segment-lost", b"\0".join(segs[:1] + segs[2:]))
    # Format 2 (every record with "v"), with usage and usage_other records.
    v2 = (Path(__file__).parent / "audit_seed_v2.bin").read_bytes()
    write(out / "audit_verify", "log-v2", v2)
    write(out / "audit_verify", "first-segment-v2", v2.split(b"\0")[0])
    write(out / "audit_verify", "torn-v2", v2[:-20])
    for req in [b'{"cmd":"status"}\n', b'{"cmd":"violations","since_secs":60}\n',
                b'{"cmd":"violations","since_secs":18446744073709551615}\n', b'{"cmd":"flows"}\n',
                b'{"cmd":"clients"}\n', b'{"cmd":"stage"}\n', b'{"cmd":"watch"}\n', b"not json\n"]:
        write(out / "api_request", hashlib.sha1(req).hexdigest()[:12], req)
    for name, tok in jwt_seeds():
        write(out / "jwt", name, tok)


def jwt_seeds():
    """Compact JWS tokens the claims reader must handle: well-formed with
    every claim it keeps, padded, escaped strings, wrong types, duplicate
    claims, huge numbers, a long kid, JWE-shaped and truncated ones."""
    import base64
    import json

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    def tok(header, payload, sig=b"sig"):
        return b64(header) + b"." + b64(payload) + b"." + b64(sig)

    full = json.dumps({"iss": "https://idp.example", "sub": "svc", "client_id": "app",
                       "azp": "app2", "iat": 1764633600, "exp": 1764637200.25,
                       "nbf": 1764633500, "aud": ["a", {"b": [1, 2]}]}).encode()
    yield "full", tok(b'{"alg":"RS256","kid":"key-2026","typ":"JWT"}', full)
    yield "padded", base64.urlsafe_b64encode(b'{"alg":"none"}') + b"." + \
        base64.urlsafe_b64encode(b'{"iss":"i","sub":"s"}') + b"."
    yield "escaped", tok(b'{"kid":"k\\u00e9\\n"}', b'{"iss":"i\\"x","sub":"\\ud83d\\ude00"}')
    yield "wrong-types", tok(b'{"kid":7}', b'{"iss":["i"],"iat":"now"}')
    yield "duplicate", tok(b'{}', b'{"sub":"a","sub":"b"}')
    yield "huge-numbers", tok(b'{}', b'{"iat":1e308,"exp":-1,"nbf":9223372036.9}')
    yield "long-kid", tok(b'{"kid":"' + b"k" * 200 + b'"}', b'{}')
    yield "jwe-shaped", b"eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"
    yield "truncated", tok(b'{"alg":"HS256"}', full)[:40]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "agent/fuzz/target/seeds")

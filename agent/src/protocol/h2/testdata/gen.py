#!/usr/bin/python3
"""HTTP/2 byte streams for the h2 parser tests, made by python3-h2.

A python-h2 client and server talk through memory; each scenario writes
the bytes each side sent: NAME.client.bin (client to server) and
NAME.server.bin (server to client), and NAME.expect.json with what the
client asked for (requests in stream order, credential hashes by the
contract's rule) and the final status the server gave each stream, for the
Rust tests to compare against.

Regenerate (Debian: apt-get install python3-h2):
    /usr/bin/python3 agent/src/protocol/h2/testdata/gen.py
The output is deterministic: run it twice, git diff shows nothing.
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, "/usr/lib/python3/dist-packages")

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
import h2.utilities  # noqa: E402
from hyperframe.frame import HeadersFrame  # noqa: E402

OUT = os.path.dirname(os.path.abspath(__file__))
CRED = {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-auth-token", "cookie"}


def cred_sha256(name, value):
    """protocol::http::credential_sha256: Bearer/Basic stripped for authorization."""
    v = value.strip()
    if name == "authorization":
        for scheme in ("bearer", "basic"):
            if v[: len(scheme)].lower() == scheme and v[len(scheme) : len(scheme) + 1] == " ":
                v = v[len(scheme) :].strip()
                break
    return hashlib.sha256(v.encode()).hexdigest()


class Pair:
    """A client and a server connected through memory, every byte recorded."""

    def __init__(self, name, client_settings=None, server_settings=None, index_auth=False):
        self.name = name
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.requests = {}
        self.statuses = {}
        self.server_events = []
        # python-h2, like nghttp2 and Firefox, never indexes authorization;
        # encoders that do (Go's hpack, for one) put it in the dynamic
        # table. `index_auth` makes this client one of those.
        self.index_auth = index_auth
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.server.initiate_connection()
        if server_settings:
            self.server.update_settings(server_settings)
        self.pump()

    def pump(self):
        """Delivers bytes both ways until both sides are quiet."""
        while True:
            moved = False
            out = self.client.data_to_send()
            if out:
                moved = True
                self.c2s += out
                self.server_events += self.server.receive_data(out)
            out = self.server.data_to_send()
            if out:
                moved = True
                self.s2c += out
                for ev in self.client.receive_data(out):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(ev.headers)[b":status"])
                        if status >= 200:
                            self.statuses[ev.stream_id] = status
            if not moved:
                return

    def request(self, headers, end_stream=True, **kw):
        """Opens the next client stream; records what the parser must see."""
        sid = self.client.get_next_available_stream_id()
        if self.index_auth:
            saved = h2.utilities._secure_headers
            h2.utilities._secure_headers = lambda hs, _flags: hs
        try:
            self.client.send_headers(sid, headers, end_stream=end_stream, **kw)
        finally:
            if self.index_auth:
                h2.utilities._secure_headers = saved
        self.record(sid, headers)
        return sid

    def record(self, sid, headers):
        d = {}
        creds = []
        cookies = []
        for n, v in headers:
            if n.startswith(":"):
                d[n] = v
            elif n == "cookie":
                cookies.append(v)
            elif n in CRED:
                creds.append([n, cred_sha256(n, v)])
            elif n == "content-type":
                d["grpc"] = v.startswith("application/grpc")
        if cookies:
            creds.append(["cookie", cred_sha256("cookie", "; ".join(cookies))])
        host = d.get(":authority", "").lower().rsplit(":", 1)[0] or None
        self.requests[sid] = {
            "stream_id": sid,
            "method": d.get(":method", ""),
            "path": d.get(":path", ""),
            "host": host,
            "grpc": d.get("grpc", False),
            "credentials": creds,
        }

    def respond(self, sid, status, body=b"", trailers=None, end=True):
        self.server.send_headers(sid, [(":status", str(status)), ("server", "gen.py")],
                                 end_stream=not body and not trailers and end)
        if body:
            self.server.send_data(sid, body, end_stream=not trailers and end)
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)

    def write(self, prefix_c2s=b"", prefix_s2c=b"", extra=None):
        with open(os.path.join(OUT, self.name + ".client.bin"), "wb") as f:
            f.write(prefix_c2s + bytes(self.c2s))
        with open(os.path.join(OUT, self.name + ".server.bin"), "wb") as f:
            f.write(prefix_s2c + bytes(self.s2c))
        expect = {
            "requests": [self.requests[k] for k in sorted(self.requests)],
            "responses": {str(k): v for k, v in sorted(self.statuses.items())},
        }
        expect.update(extra or {})
        with open(os.path.join(OUT, self.name + ".expect.json"), "w") as f:
            json.dump(expect, f, indent=1, sort_keys=True)
            f.write("\n")


def base(authority="API.Example.com:8443", path="/v1/payments", method="GET"):
    return [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]


TOKEN = "Bearer tok-acme-7f3a9c1e5b2d4f60"


def indexed_credentials():
    """Credentials repeated across streams: from the 2nd on they are
    dynamic-table references; every literal is Huffman-coded."""
    p = Pair("indexed_credentials", index_auth=True)
    for i, status in enumerate([200, 401, 403, 200]):
        sid = p.request(base(path=f"/v1/payments/{i}") + [
            ("authorization", TOKEN),
            ("x-api-key", "key-0123456789abcdef"),
            ("user-agent", "gen.py/1"),
        ])
        p.pump()
        p.respond(sid, status)
        p.pump()
    p.write()


def never_indexed():
    """python-h2's defaults: authorization never indexed, cookie crumbs
    (short ones never indexed), proxy-authorization, a second token."""
    p = Pair("never_indexed")
    for tok in ["Bearer first-token", "Bearer second-token", "Bearer first-token"]:
        sid = p.request(base(authority="api.example.com") + [
            ("authorization", tok),
            ("cookie", "sid=31d4d96e407aad42"),
            ("cookie", "lang=en-US"),
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ])
        p.pump()
        p.respond(sid, 204)
        p.pump()
    p.write()


def continuation():
    """A header block larger than a frame: HEADERS + CONTINUATION, then a
    request that refers to entries it inserted."""
    p = Pair("continuation", index_auth=True)
    big = [(f"x-filler-{i}", "v" * 900) for i in range(40)]
    sid = p.request(base(method="POST", path="/v1/upload") + [("authorization", TOKEN)] + big)
    p.pump()
    p.respond(sid, 201)
    sid = p.request(base(path="/v1/after") + [("authorization", TOKEN)] + big[:3])
    p.pump()
    p.respond(sid, 200)
    p.pump()
    p.write()


def padding_priority():
    """HEADERS with PRIORITY (python-h2) and PADDED (built with hyperframe
    from the same connection's HPACK encoder), padded DATA."""
    p = Pair("padding_priority", index_auth=True)
    sid = p.request(base(method="POST", path="/v1/a") + [("authorization", TOKEN)],
                    end_stream=False, priority_weight=200, priority_depends_on=0,
                    priority_exclusive=True)
    p.client.send_data(sid, b"x" * 300, end_stream=True, pad_length=100)
    p.pump()
    p.respond(sid, 200, body=b"ok")
    p.pump()
    # A padded HEADERS python-h2 itself does not send: the client's own
    # encoder makes the block, so the HPACK state stays in step.
    sid = p.client.get_next_available_stream_id()
    headers = base(path="/v1/b") + [("authorization", TOKEN)]
    saved = h2.utilities._secure_headers
    h2.utilities._secure_headers = lambda hs, _flags: hs
    block = p.client.encoder.encode(headers)
    h2.utilities._secure_headers = saved
    f = HeadersFrame(sid, data=block, pad_length=37,
                     flags=["END_HEADERS", "END_STREAM", "PADDED", "PRIORITY"],
                     stream_weight=15, depends_on=1)
    raw = f.serialize()
    p.client.highest_outbound_stream_id = sid
    p.c2s += raw
    p.server_events += p.server.receive_data(raw)
    p.record(sid, headers)
    p.respond(sid, 202)
    # The client never opened this stream itself: keep its reply out of the
    # client (it would reject it) but in the recording.
    p.s2c += p.server.data_to_send()
    p.statuses[sid] = 202
    p.write()


def grpc_trailers():
    """A unary gRPC call with a bearer token in metadata, request trailers
    from the client on a second call, response trailers from the server."""
    p = Pair("grpc_trailers", index_auth=True)
    g = base(method="POST", path="/helloworld.Greeter/SayHello", authority="grpc.internal:50051") + [
        ("content-type", "application/grpc+proto"),
        ("te", "trailers"),
        ("authorization", "Bearer grpc-token-99"),
        ("grpc-timeout", "5S"),
    ]
    msg = b"\x00\x00\x00\x00\x07\x0a\x05world"
    sid = p.request(g, end_stream=False)
    p.client.send_data(sid, msg, end_stream=True)
    p.pump()
    p.respond(sid, 200, body=msg, trailers=[("grpc-status", "0"), ("grpc-message", "")])
    p.pump()
    sid = p.request(base(method="PUT", path="/v1/blob") + [("x-api-key", "blob-key")], end_stream=False)
    p.client.send_data(sid, b"blob" * 100)
    p.client.send_headers(sid, [("x-checksum", "abc123")], end_stream=True)
    p.pump()
    p.respond(sid, 200)
    p.pump()
    p.write()


def rst_goaway():
    """Streams 1..7: 1 answered, 3 refused by the server (RST
    REFUSED_STREAM), 5 cancelled by the client (RST CANCEL), then the
    server's GOAWAY with last stream 5: 7 is never answered."""
    p = Pair("rst_goaway", index_auth=True)
    sids = [p.request(base(path=f"/v1/r{i}") + [("authorization", TOKEN)]) for i in range(4)]
    p.pump()
    p.respond(sids[0], 200)
    p.server.reset_stream(sids[1], error_code=7)
    p.pump()
    p.client.reset_stream(sids[2], error_code=8)
    p.pump()
    p.server.close_connection(error_code=0, last_stream_id=sids[2])
    p.pump()
    p.write(extra={"resets": [[sids[1], "server", 7], [sids[2], "client", 8]],
                   "goaway": [sids[2], 0]})


def multiplex():
    """60 streams opened before any answer; bodies interleaved; answers in
    reverse order, a third of them 429."""
    p = Pair("multiplex", index_auth=True)
    sids = []
    for i in range(60):
        method = "POST" if i % 3 == 0 else "GET"
        tok = f"Bearer tenant-{i % 4}-token"
        sid = p.request(base(method=method, path=f"/v1/items/{i}?page={i % 7}") +
                        [("authorization", tok)], end_stream=(method == "GET"))
        sids.append(sid)
    for sid in sids:
        if p.requests[sid]["method"] == "POST":
            p.client.send_data(sid, b"{\"n\": %d}" % sid, end_stream=True)
    p.pump()
    for i, sid in enumerate(reversed(sids)):
        p.respond(sid, 429 if i % 3 == 0 else 200, body=b"r" * (i + 1))
        p.pump()
    p.write()


def push():
    """The server pushes /style.css (PUSH_PROMISE on stream 1, pushed
    stream 2): neither is a request."""
    p = Pair("push", index_auth=True)
    sid = p.request(base(path="/index.html") + [("authorization", TOKEN)])
    p.pump()
    p.server.push_stream(sid, 2, base(path="/style.css"))
    p.respond(2, 200, body=b"body{}")
    p.respond(sid, 200, body=b"<html>")
    p.pump()
    sid = p.request(base(path="/next") + [("authorization", TOKEN)])
    p.pump()
    p.respond(sid, 200)
    p.pump()
    p.write()


def table_size():
    """SETTINGS_HEADER_TABLE_SIZE both ways: the server allows the client
    256 bytes, the client allows the server none; each encoder signals a
    dynamic-table size update and goes on indexing within it."""
    p = Pair("table_size", index_auth=True,
             client_settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0},
             server_settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 256})
    for i in range(5):
        sid = p.request(base(path=f"/v1/t{i}") + [("authorization", TOKEN),
                                                ("x-api-key", f"k{i % 2}")])
        p.pump()
        p.respond(sid, 200 + i)
        p.pump()
    p.write()


def upgrade():
    """h2c upgrade: an HTTP/1.1 request with Upgrade: h2c, the server's 101,
    then HTTP/2 (stream 1 is the upgraded request)."""
    p = Pair.__new__(Pair)
    p.name = "upgrade"
    p.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    p.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    p.c2s, p.s2c = bytearray(), bytearray()
    p.requests, p.statuses, p.server_events = {}, {}, []
    p.index_auth = True
    settings = p.client.initiate_upgrade_connection()
    head = (b"GET /v1/upgrade HTTP/1.1\r\nHost: api.example.com\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: " + settings + b"\r\nAuthorization: " + TOKEN.encode() + b"\r\n\r\n")
    p.server.initiate_upgrade_connection(settings)
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    p.pump()
    p.respond(1, 200, body=b"upgraded")
    p.pump()
    sid = p.request(base(authority="api.example.com", path="/v1/second") + [("authorization", TOKEN)])
    p.pump()
    p.respond(sid, 404)
    p.pump()
    p.statuses[1] = 200
    p.write(prefix_c2s=head, prefix_s2c=switching)


if __name__ == "__main__":
    for scenario in [indexed_credentials, never_indexed, continuation, padding_priority,
                     grpc_trailers, rst_goaway, multiplex, push, table_size, upgrade]:
        scenario()
        print("wrote", scenario.__name__)

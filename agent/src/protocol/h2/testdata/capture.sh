#!/bin/bash
# h2c captures on loopback with tcpdump, for the h2 parser tests: nghttp
# (nghttp2's HPACK encoder, as in curl) to nghttpd over prior knowledge,
# and a python3-grpcio client and server (gRPC C-core's encoder,
# grpc_pair.py). For each, the two directions' TCP payloads become
# NAME.client.bin and NAME.server.bin.
#
# Needs root (tcpdump), nghttp2-client, nghttp2-server, python3-grpcio,
# tcpdump, tshark (Debian). Regenerate:
#     bash agent/src/protocol/h2/testdata/capture.sh
# The bytes differ from run to run (dates, gRPC's user-agent and stream
# flow-control frames), the requests and statuses the tests check do not.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
port=18479
cleanup() {
    [[ -n "${dump:-}" ]] && kill "$dump" 2>/dev/null || true
    [[ -n "${srv:-}" ]] && kill "$srv" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# capture NAME PORT COMMAND...: runs COMMAND while tcpdump records TCP
# port PORT on loopback, then writes both directions' payloads.
capture() {
    local name=$1 port=$2
    shift 2
    rm -f "$work/c.pcap" "$work/tcpdump.log"
    tcpdump -i lo -U -w "$work/c.pcap" "tcp port $port" 2>"$work/tcpdump.log" &
    dump=$!
    until grep -q "listening on" "$work/tcpdump.log" 2>/dev/null; do
        kill -0 "$dump"
    done
    "$@"
    # tcpdump writes each packet as it sees it (-U); it has seen the last
    # one once the FIN of both sides is in the file.
    until [[ "$(tcpdump -r "$work/c.pcap" 'tcp[tcpflags] & tcp-fin != 0' 2>/dev/null | wc -l)" -ge 2 ]]; do
        kill -0 "$dump"
    done
    kill "$dump"
    wait "$dump" || true
    dump=
    tshark -r "$work/c.pcap" -q -z follow,tcp,raw,0 >"$work/follow.txt"
    python3 "$out/follow_raw.py" "$work/follow.txt" "$out/$name"
}

mkdir -p "$work/www/v1"
echo ok >"$work/www/v1/payments"
echo ok >"$work/www/v1/orders"
nghttpd --no-tls -d "$work/www" "$port" >"$work/nghttpd.log" 2>&1 &
srv=$!
until ss -ltn "sport = :$port" | grep -q LISTEN; do
    kill -0 "$srv"
done

# Three streams on one connection, sent at once by nghttp (nghttp2's own
# client; curl 7.88 fails to reuse a prior-knowledge connection for a
# second URL). nghttp first builds its priority tree with PRIORITY frames
# on idle streams 3..11 (not requests), then opens 13, 15, 17. nghttp2
# never indexes authorization (a never-indexed literal each time) but
# indexes x-api-key, so the 2nd and 3rd requests refer to the dynamic
# table for it.
capture nghttp "$port" nghttp -n -H ":authority: API.Example.com:$port" \
    -H "authorization: Bearer nghttp-token-4b1d" \
    -H "x-api-key: nghttp-key-77" \
    "http://127.0.0.1:$port/v1/payments" \
    "http://127.0.0.1:$port/v1/orders" \
    "http://127.0.0.1:$port/v1/missing"

capture grpc $((port + 1)) /usr/bin/python3 "$out/grpc_pair.py" $((port + 1))

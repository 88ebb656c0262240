#!/usr/bin/env bash
# Regenerates the capture files in this directory: one small HTTP exchange
# (curl → python http.server on loopback) captured at once as Ethernet
# (-i lo), Linux cooked v2 (-i any), Linux cooked v1 (-i any -y LINUX_SLL),
# nanosecond pcap, and converted to pcapng with editcap.
#
# Needs: tcpdump, editcap, curl, python3; root (for the capture).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=48080
filter="tcp port $port"
tcpdump -i lo -U -s 0 -w lo_eth.pcap "$filter" 2>/dev/null &
tcpdump -i any -U -s 0 -w any_sll2.pcap "$filter" 2>/dev/null &
tcpdump -i any -y LINUX_SLL -U -s 0 -w any_sll1.pcap "$filter" 2>/dev/null &
tcpdump -i lo --time-stamp-precision=nano -U -s 0 -w lo_nano.pcap "$filter" 2>/dev/null &
sleep 1
(cd "$work" && echo hello > index.html && exec python3 -m http.server --bind 127.0.0.1 "$port") >/dev/null 2>&1 &
server=$!
sleep 1
curl -s -o /dev/null -H 'Authorization: Bearer test-token-123' "http://127.0.0.1:$port/index.html"
sleep 1
kill "$server"
for job in $(jobs -p); do kill "$job" 2>/dev/null || true; done
wait 2>/dev/null || true
editcap -F pcapng lo_nano.pcap lo_nano.pcapng
editcap -F pcapng lo_eth.pcap lo_eth.pcapng

#!/usr/bin/env bash
# Regenerates the TLS test vectors in this directory from real handshakes:
# openssl s_server/s_client on loopback, captured with tcpdump, split into
# the client's and the server's byte streams with tshark.
#
# Needs: openssl, tcpdump, tshark; root (for the capture). Loopback only.
# Output per case NAME: NAME.client.bin, NAME.server.bin (first bytes of each
# direction) and, for mtls, mtls.leaf.sha256 (the client cert's DER hash).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=server.test \
    -keyout "$work/server.key" -out "$work/server.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=client.test \
    -keyout "$work/client.key" -out "$work/client.crt" 2>/dev/null

port=44300
# case: server args | client args
run_case() {
    local name=$1 server_args=$2 client_args=$3
    port=$((port + 1))
    local pcap="$work/$name.pcap"
    tcpdump -i lo -U -s 0 -w "$pcap" "tcp port $port" 2>/dev/null &
    local dump=$!
    sleep 1
    # shellcheck disable=SC2086
    openssl s_server -accept "$port" -cert "$work/server.crt" -key "$work/server.key" \
        -naccept 1 -quiet $server_args >/dev/null 2>&1 &
    local server=$!
    sleep 0.5
    # shellcheck disable=SC2086
    echo | timeout 5 openssl s_client -connect "127.0.0.1:$port" $client_args \
        >/dev/null 2>&1 || true
    sleep 0.5
    kill "$server" 2>/dev/null || true
    kill "$dump"; wait "$dump" 2>/dev/null || true
    # follow,tcp,raw: lines of hex; server lines are indented with a tab.
    tshark -r "$pcap" -q -z follow,tcp,raw,0 | awk '/^[0-9a-f]+$/ {print > "'"$work/c.hex"'"} /^\t[0-9a-f]+$/ {gsub(/\t/,""); print > "'"$work/s.hex"'"}'
    xxd -r -p "$work/c.hex" > "$name.client.bin"
    xxd -r -p "$work/s.hex" > "$name.server.bin"
    head -c 4096 "$name.server.bin" > "$name.server.tmp" && mv "$name.server.tmp" "$name.server.bin"
    head -c 4096 "$name.client.bin" > "$name.client.tmp" && mv "$name.client.tmp" "$name.client.bin"
}

run_case tls13 "" "-servername api.example.com -alpn h2,http/1.1"
run_case tls12_gcm "-tls1_2" "-tls1_2 -servername Payments.Example.COM -cipher ECDHE-RSA-AES128-GCM-SHA256"
run_case tls12_cbc "-tls1_2" "-tls1_2 -servername cbc.example.com -cipher ECDHE-RSA-AES128-SHA"
run_case tls11 "-tls1_1 -cipher ALL:@SECLEVEL=0" "-tls1_1 -cipher ALL:@SECLEVEL=0 -servername old.example.com"
run_case mtls "-tls1_2 -Verify 1 -CAfile $work/client.crt" "-tls1_2 -cert $work/client.crt -key $work/client.key -servername mtls.example.com"
openssl x509 -in "$work/client.crt" -outform DER | sha256sum | cut -d' ' -f1 > mtls.leaf.sha256

"""Splits `tshark -q -z follow,tcp,raw,0` output into the two directions'
bytes: FOLLOW.txt OUT_PREFIX writes OUT_PREFIX.client.bin (the side that
spoke first, unindented lines) and OUT_PREFIX.server.bin (tab-indented)."""

import sys

lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith("Node 1:")) + 1
client, server = bytearray(), bytearray()
for line in lines[start:]:
    if line.startswith("="):
        break
    (server if line.startswith("\t") else client).extend(bytes.fromhex(line.strip()))
open(sys.argv[2] + ".client.bin", "wb").write(client)
open(sys.argv[2] + ".server.bin", "wb").write(server)
print(f"{sys.argv[2]}: client {len(client)} bytes, server {len(server)} bytes")

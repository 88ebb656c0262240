#!/bin/sh
# Checks and unit-tests the alert rules with promtool (Debian package `prometheus`).
# Called by `cargo xtask test`; runs unprivileged, needs no network or running Prometheus.
set -eu
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: install it with \`apt-get install -y prometheus\`" >&2
    exit 127
fi
promtool check rules rampwatch-rules.yaml
promtool test rules rampwatch-rules.test.yaml

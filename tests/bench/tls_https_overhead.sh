#!/bin/bash
# HTTPS overhead of the TLS probes (not a test; numbers for the notes):
# wrk -> nginx `return 200` over HTTPS on loopback, one nginx worker,
# rounds alternating no capture / capture with the probes on the worker
# (`rw-helper capture-cgroup-tls`, which consumes the events). Prints
# req/s, the ratio, and the TLS programs' runs and run time per request
# from bpf_stats. Run as root from the repository root, after
# `cargo build -p tests --bins`, under the kernel-test lock:
#   flock /tmp/rampwatch-kernel.lock tests/bench/tls_https_overhead.sh
# DUR (seconds per round, default 8) and ROUNDS (default 3) tune it.
set -u
HELPER=${RW_HELPER:-target/debug/rw-helper}
D=$(mktemp -d); P=18543
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=x -keyout $D/k.pem -out $D/c.pem 2>/dev/null
cat > $D/n.conf <<C
daemon off; master_process on; worker_processes 1; pid $D/n.pid; error_log $D/e.log;
events { worker_connections 256; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $D/b; proxy_temp_path $D/p; fastcgi_temp_path $D/f; uwsgi_temp_path $D/u; scgi_temp_path $D/s;
 server { listen 127.0.0.1:$P ssl; ssl_certificate $D/c.pem; ssl_certificate_key $D/k.pem; location / { return 200 "ok\n"; } } }
C
nginx -c $D/n.conf -p $D -e $D/e.log & NG=$!
sleep 1
W=$(pgrep -P $NG)
CG=/sys/fs/cgroup/unified/rwbench; mkdir -p $CG
run() { wrk -t1 -c4 -d${DUR:-8}s https://127.0.0.1:$P/ 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
sysctl -qw kernel.bpf_stats_enabled=1
for r in $(seq ${ROUNDS:-3}); do
  base=$(run)
  mkfifo $D/fifo.$r
  $HELPER capture-cgroup-tls $CG 127.0.0.1:$P $W < $D/fifo.$r > $D/h.$r.out &
  H=$!
  exec 4>$D/fifo.$r
  for i in $(seq 100); do grep -q probed $D/h.$r.out 2>/dev/null && break; sleep 0.1; done
  before=$(bpftool -j prog show | python3 -c 'import json,sys; print(sum(p.get("run_cnt",0) for p in json.load(sys.stdin) if p.get("name","").startswith("rw_tls")))')
  bt=$(bpftool -j prog show | python3 -c 'import json,sys; print(sum(p.get("run_time_ns",0) for p in json.load(sys.stdin) if p.get("name","").startswith("rw_tls")))')
  probed=$(run)
  after=$(bpftool -j prog show | python3 -c 'import json,sys; print(sum(p.get("run_cnt",0) for p in json.load(sys.stdin) if p.get("name","").startswith("rw_tls")))')
  at=$(bpftool -j prog show | python3 -c 'import json,sys; print(sum(p.get("run_time_ns",0) for p in json.load(sys.stdin) if p.get("name","").startswith("rw_tls")))')
  bpftool -j prog show | python3 -c 'import json,sys; [print("  ", p["name"], p.get("run_cnt",0), p.get("run_time_ns",0)) for p in json.load(sys.stdin) if p.get("name","").startswith("rw_tls")]'
  exec 4>&-; wait $H
  echo "round $r: base=$base req/s probed=$probed req/s ratio=$(python3 -c "print(round($probed/$base,3))") prog_runs=$((after-before)) prog_ns=$((at-bt)) runs_per_req=$(python3 -c "print(round(($after-$before)/($probed*${DUR:-8}),2))") prog_ns_per_req=$(python3 -c "print(round(($at-$bt)/($probed*${DUR:-8}),0))")"
done
sysctl -qw kernel.bpf_stats_enabled=0
kill $NG; wait $NG 2>/dev/null; sleep 0.5; rmdir $CG; rm -rf $D

#!/usr/bin/env python3
"""Generates rampwatch-rules.test.yaml (promtool unit tests) from the scenarios below.

    python3 deploy/prometheus/gen-rules-test.py deploy/prometheus/rampwatch-rules.yaml \
        > deploy/prometheus/rampwatch-rules.test.yaml

promtool compares annotations verbatim, so the expected annotations are rendered here from the
rules' templates (labels, $value, `with`); the scenarios, labels and timings are what the tests
pin down. Review the diff of the generated file after changing either.
"""
import re, yaml, sys
rules = yaml.safe_load(open(sys.argv[1]))
ann = {}
for g in rules["groups"]:
    for r in g["rules"]:
        ann[r["alert"]] = (r["annotations"], r["labels"])

def render(t, labels, value=None):
    def with_(m):
        key, body = m.group(1), m.group(2)
        v = labels.get(key, "")
        return body.replace("{{ . }}", v) if v else ""
    t = re.sub(r'\{\{ with \$labels\.(\w+) \}\}(.*?)\{\{ end \}\}', with_, t)
    t = re.sub(r'\{\{ \$labels\.(\w+) \}\}', lambda m: labels.get(m.group(1), ""), t)
    t = t.replace('{{ $value | printf "%.1f" }}', "%.1f" % value if value is not None else "")
    t = t.replace('{{ $value }}', ("%g" % value) if value is not None else "")
    assert "{{" not in t, t
    return t

def alert(name, labels, value=None):
    a, l = ann[name]
    exp = dict(labels); exp.update(l)
    return {"exp_labels": exp, "exp_annotations": {k: render(v, labels, value) for k, v in a.items()}}

KINDS = {
    "unencrypted_flow": "RampUnencryptedFlow", "weak_tls": "RampWeakTls",
    "quota_overshoot": "RampQuotaOvershoot", "revoked_client": "RampRevokedClient",
    "stale_credential": "RampStaleCredential", "unlisted_endpoint": "RampUnlistedEndpoint",
    "unknown_client": "RampUnknownClient",
}
A = {"job": "rampwatch", "instance": "node-a:9464"}
B = {"job": "rampwatch", "instance": "node-b:9464"}
C = {"job": "rampwatch", "instance": "node-c:9464"}
def sel(name, labels):
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"

tests = []

# 1. Violation alerts: every kind at once, so each alert also proves it ignores the others.
series, checks = [], []
for kind, name in KINDS.items():
    la = dict(A, kind=kind, endpoint="payments", client="billing")
    lb = dict(B, kind=kind, endpoint="search", client="unknown")
    series.append({"series": sel("rampwatch_violations_total", la), "values": "0 0 1x10"})
    series.append({"series": sel("rampwatch_violations_total", lb), "values": "_ _ _ 1x9"})
    checks += [
        {"eval_time": "1m", "alertname": name, "exp_alerts": []},
        {"eval_time": "2m", "alertname": name, "exp_alerts": [alert(name, la)]},
        {"eval_time": "3m", "alertname": name, "exp_alerts": [alert(name, la), alert(name, lb)]},
        {"eval_time": "7m", "alertname": name, "exp_alerts": [alert(name, lb)]},
        {"eval_time": "9m", "alertname": name, "exp_alerts": []},
    ]
tests.append({"name": "violation alerts: counter increase (node-a) and a series born at 1 (node-b), then quiet",
              "interval": "1m", "input_series": series, "alert_rule_test": checks})

# 2. Old violations that stopped long ago do not alert.
series, checks = [], []
for kind, name in KINDS.items():
    series.append({"series": sel("rampwatch_violations_total", dict(C, kind=kind, endpoint="payments", client="billing")), "values": "3x15"})
    checks.append({"eval_time": "6m", "alertname": name, "exp_alerts": []})
    checks.append({"eval_time": "15m", "alertname": name, "exp_alerts": []})
tests.append({"name": "violation alerts: counters that stopped increasing stay quiet",
              "interval": "1m", "input_series": series, "alert_rule_test": checks})

# 3. The SLA clocks: one series per open violation; critical, then breach.
V = dict(kind="quota_overshoot", endpoint="payments", client="billing")
lwarn = dict(A, severity="warning", **V)
lcrit = dict(A, severity="critical", **V)
lbreach = dict(A, severity="breach", **V)
other = dict(A, severity="warning", kind="weak_tls", endpoint="search", client="crawler")
# The agent drops a series when its violation changes step or resolves: the scrape marks it stale.
tests.append({"name": "an open violation steps to critical, then breach; each step alerts",
    "interval": "1m",
    "input_series": [
        {"series": sel("rampwatch_violations_open", lwarn), "values": "1 1 stale"},
        {"series": sel("rampwatch_violations_open", lcrit), "values": "_ _ 1 1 stale"},
        {"series": sel("rampwatch_violations_open", lbreach), "values": "_ _ _ _ 1 1 stale"},
        {"series": sel("rampwatch_violations_open", other), "values": "1x6"},
    ],
    "alert_rule_test": [
        {"eval_time": "1m", "alertname": "RampViolationCritical", "exp_alerts": []},
        {"eval_time": "1m", "alertname": "RampViolationBreach", "exp_alerts": []},
        {"eval_time": "2m", "alertname": "RampViolationCritical", "exp_alerts": [alert("RampViolationCritical", lcrit, 1)]},
        {"eval_time": "2m", "alertname": "RampViolationBreach", "exp_alerts": []},
        {"eval_time": "4m", "alertname": "RampViolationCritical", "exp_alerts": []},
        {"eval_time": "4m", "alertname": "RampViolationBreach", "exp_alerts": [alert("RampViolationBreach", lbreach, 1)]},
        {"eval_time": "6m", "alertname": "RampViolationBreach", "exp_alerts": []},
    ]})
# the alert's severity label overrides the series' severity
tests[-1]["alert_rule_test"][2]["exp_alerts"][0]["exp_labels"]["severity"] = "warning"
tests[-1]["alert_rule_test"][5]["exp_alerts"][0]["exp_labels"]["severity"] = "critical"

# 4. Cluster quota: 15s samples; per node 6 req/s, quota 10, two nodes: 12 > 10.
per15 = lambda rps: f"0+{rps*15}x40"
q = lambda labels, v: {"series": sel("rampwatch_quota_requests_per_second", labels), "values": f"{v}x40"}
r = lambda labels, rps: {"series": sel("rampwatch_requests_total", labels), "values": per15(rps)}
over = {"endpoint": "payments", "client": "billing"}
under = {"endpoint": "search", "client": "crawler"}
noquota = {"endpoint": "search", "client": "unknown"}
lab = lambda base, pair: dict(base, **pair)
tests.append({"name": "cluster quota: each node under quota, the sum over it fires; sum under quota does not",
    "interval": "15s",
    "input_series": [
        r(lab(A, over), 6), r(lab(B, over), 6), q(lab(A, over), 10), q(lab(B, over), 10),
        r(lab(A, under), 4), r(lab(B, under), 4), q(lab(A, under), 10), q(lab(B, under), 10),
        r(lab(A, noquota), 50), r(lab(B, noquota), 50),
    ],
    "alert_rule_test": [
        {"eval_time": "1m", "alertname": "RampClusterQuotaOvershoot", "exp_alerts": []},
        {"eval_time": "4m", "alertname": "RampClusterQuotaOvershoot", "exp_alerts": [alert("RampClusterQuotaOvershoot", over, 12.0)]},
        {"eval_time": "4m", "alertname": "RampQuotaOvershoot", "exp_alerts": []},
    ]})
# 4b. One node alone over quota also counts (quota differs during rollout: max wins).
tests.append({"name": "cluster quota: most lenient quota during a rollout, not over it",
    "interval": "15s",
    "input_series": [
        r(lab(A, over), 6), r(lab(B, over), 6), q(lab(A, over), 10), q(lab(B, over), 15),
    ],
    "alert_rule_test": [
        {"eval_time": "5m", "alertname": "RampClusterQuotaOvershoot", "exp_alerts": []},
    ]})

# 4c. Readiness before a stage: per node 6 req/s, next stage's quota 10, two nodes: 12 > 10;
# a pair the next stage grants nothing (quota 0) with traffic; one under its next quota.
nq = lambda labels, v: {"series": sel("rampwatch_next_stage_quota_requests_per_second", labels), "values": f"{v}x80"}
r80 = lambda labels, rps: {"series": sel("rampwatch_requests_total", labels), "values": f"0+{rps*15}x80"}
nxt = lambda ts: [{"series": sel("rampwatch_stage_next_change_timestamp_seconds", n), "values": f"{ts}x80"} for n in (A, B)]
lead = [{"series": sel("rampwatch_readiness_lead_seconds", n), "values": "86400x80"} for n in (A, B)]
closed = {"endpoint": "legacy", "client": "billing"}
readiness_series = [
    r80(lab(A, over), 6), r80(lab(B, over), 6), nq(lab(A, over), 10), nq(lab(B, over), 10),
    r80(lab(A, under), 4), r80(lab(B, under), 4), nq(lab(A, under), 10), nq(lab(B, under), 10),
    r80(lab(A, closed), 1), r80(lab(B, closed), 1), nq(lab(A, closed), 0), nq(lab(B, closed), 0),
    r80(lab(A, noquota), 50), r80(lab(B, noquota), 50),
] + lead
tests.append({"name": "readiness: the cluster's rate above the next stage's quota within the lead time",
    "interval": "15s",
    # The next stage starts 2 h after the test's epoch, well inside the 24 h lead.
    "input_series": readiness_series + nxt(7200),
    "alert_rule_test": [
        {"eval_time": "3m", "alertname": "RampStageNotReady", "exp_alerts": []},
        {"eval_time": "12m", "alertname": "RampStageNotReady", "exp_alerts": [
            alert("RampStageNotReady", closed, 2.0), alert("RampStageNotReady", over, 12.0)]},
    ]})
tests.append({"name": "readiness: quiet while the next stage is beyond the lead time, or there is none",
    "interval": "15s",
    "input_series": readiness_series + nxt(7 * 86400),
    "alert_rule_test": [
        {"eval_time": "12m", "alertname": "RampStageNotReady", "exp_alerts": []},
    ]})
tests.append({"name": "readiness: quiet after the last stage (next change 0)",
    "interval": "15s",
    "input_series": readiness_series + nxt(0),
    "alert_rule_test": [
        {"eval_time": "12m", "alertname": "RampStageNotReady", "exp_alerts": []},
    ]})

# 5. Events lost.
la = dict(A, reason="ringbuf_full"); lb = dict(B, reason="ringbuf_full")
tests.append({"name": "events lost on one node",
    "interval": "1m",
    "input_series": [
        {"series": sel("rampwatch_events_lost_total", la), "values": "0 0 0 5x20"},
        {"series": sel("rampwatch_events_lost_total", lb), "values": "0x23"},
    ],
    "alert_rule_test": [
        {"eval_time": "2m", "alertname": "RampAgentEventsLost", "exp_alerts": []},
        {"eval_time": "3m", "alertname": "RampAgentEventsLost", "exp_alerts": [alert("RampAgentEventsLost", la)]},
        {"eval_time": "20m", "alertname": "RampAgentEventsLost", "exp_alerts": []},
    ]})

# 6. Contract reload.
la = dict(A); lb = dict(B)
tests.append({"name": "contract reload rejected on one node, then fixed",
    "interval": "1m",
    "input_series": [
        {"series": sel("rampwatch_contract_reload_success", la), "values": "1 1 0 0 0 0 1 1"},
        {"series": sel("rampwatch_contract_reload_success", lb), "values": "1x8"},
    ],
    "alert_rule_test": [
        {"eval_time": "2m", "alertname": "RampContractReloadFailed", "exp_alerts": []},
        {"eval_time": "4m", "alertname": "RampContractReloadFailed", "exp_alerts": [alert("RampContractReloadFailed", la)]},
        {"eval_time": "7m", "alertname": "RampContractReloadFailed", "exp_alerts": []},
    ]})

# 6b. Audit log unwritable for a while on one node, then writable again.
la = dict(A); lb = dict(B)
tests.append({"name": "audit log unwritable on one node, then recovered",
    "interval": "1m",
    "input_series": [
        {"series": sel("rampwatch_audit_writable", la), "values": "1 1 0x7 1 1 1"},
        {"series": sel("rampwatch_audit_writable", lb), "values": "1x12"},
    ],
    "alert_rule_test": [
        {"eval_time": "4m", "alertname": "RampAuditLogUnwritable", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "RampAuditLogUnwritable", "exp_alerts": [alert("RampAuditLogUnwritable", la)]},
        {"eval_time": "11m", "alertname": "RampAuditLogUnwritable", "exp_alerts": []},
    ]})

# 7. Agent down, and no agent at all.
tests.append({"name": "agent down on one node; other jobs ignored",
    "interval": "1m",
    "input_series": [
        {"series": sel("up", A), "values": "1 1 0x12"},
        {"series": sel("up", B), "values": "1x14"},
        {"series": sel("up", {"job": "node", "instance": "node-a:9100"}), "values": "0x14"},
    ],
    "alert_rule_test": [
        {"eval_time": "5m", "alertname": "RampAgentDown", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "RampAgentDown", "exp_alerts": [alert("RampAgentDown", A)]},
    ]})
tests.append({"name": "no rampwatch target at all",
    "interval": "1m",
    "input_series": [
        {"series": sel("up", {"job": "node", "instance": "node-a:9100"}), "values": "1x14"},
    ],
    "alert_rule_test": [
        {"eval_time": "3m", "alertname": "RampAgentDown", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "RampAgentDown", "exp_alerts": [alert("RampAgentDown", {})]},
    ]})

doc = {"rule_files": ["rampwatch-rules.yaml"], "evaluation_interval": "15s", "tests": tests}
print("# GENERATED by gen-rules-test.py; edit the scenarios there and regenerate.")
print("# promtool unit tests for rampwatch-rules.yaml:")
print("#   promtool test rules deploy/prometheus/rampwatch-rules.test.yaml")
print("# (or deploy/prometheus/test-rules.sh, which also runs `promtool check rules`).")
print("# Every alert has firing and quiet cases. Annotations are compared verbatim, so changing an")
print("# annotation in the rules means changing it here too.\n")
print(yaml.dump(doc, sort_keys=False, width=1000, default_flow_style=False, allow_unicode=True))

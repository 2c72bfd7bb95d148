"""Metrics, alert rules and dashboard against a real Prometheus scraping real hms-guard
processes in front of a real metastore while traffic flows (the `monitoring` fixture in
conftest.py describes the lab).

- The exporter side: the metric families hms-guard exports are exactly EXPECTED_METRICS (a new
  metric must be added here, to the dashboard and, where it signals trouble, to the rules).
- The rules: `promtool check rules` passes, Prometheus loads them and evaluates each without
  error, the alerts that must fire on the broken proxy do (pending or firing), and none of
  them fires on the healthy ones.
- Every PromQL expression of the alert rules and of the dashboard, evaluated through the HTTP
  API, returns at least one series: a renamed or missing metric fails its test, which names
  the expression. An alert expression is evaluated as its signal: each comparison with `bool`
  (`x > 0.05` becomes `x > bool 0.05`), which keeps every series and gives 0 or 1, so the test
  does not depend on the alert firing; whether alerts fire is tested separately.

Labelled counters appear on /metrics only once touched, so the traffic touches all of them.
The storage metrics (hms_guard_storage_*, and hms_guard_cache_lookups_total for the storage
caches) exist only once storage checks run; until the proxy makes storage checks, the tests
that need them fail and name the missing metrics and expressions: they are not skipped."""
import json
import re
import subprocess
import time

import pytest
import yaml

import hms
from deploylab import DASHBOARD, JOB, rule_groups

# Every metric family hms-guard exports, by the name PromQL uses, with its type.
EXPECTED_METRICS = {
    "hms_guard_build_info": "gauge",
    "hms_guard_connections_active": "gauge",
    "hms_guard_connections_total": "counter",
    "hms_guard_connections_rejected_total": "counter",
    "hms_guard_rejected_transports_total": "counter",
    "hms_guard_requests_total": "counter",
    "hms_guard_request_duration_seconds": "histogram",
    "hms_guard_upstream_duration_seconds": "histogram",
    "hms_guard_proxied_bytes_total": "counter",
    "hms_guard_upstream_errors_total": "counter",
    "hms_guard_client_errors_total": "counter",
    "hms_guard_rejected_requests_total": "counter",
    "hms_guard_mismatched_replies_total": "counter",
    "hms_guard_upstream_connects_total": "counter",
    "hms_guard_upstream_up": "gauge",
    "hms_guard_decisions_total": "counter",
    "hms_guard_questions_total": "counter",
    "hms_guard_cache_lookups_total": "counter",
    "hms_guard_facts_calls_total": "counter",
    "hms_guard_audit_events_total": "counter",
    "hms_guard_audit_failures_total": "counter",
    "hms_guard_audit_queue_depth": "gauge",
    # authentication (docs/IDENTITY.md): the lab's Kerberos proxy (TLS, Kerberos both ways)
    "hms_guard_tls_handshakes_total": "counter",
    "hms_guard_sasl_handshakes_total": "counter",
    "hms_guard_handshake_timeouts_total": "counter",
    "hms_guard_delegation_tokens_total": "counter",
    # users' groups from their sources (docs/IDENTITY.md, "Groups")
    "hms_guard_group_lookups_total": "counter",
    "hms_guard_group_lookup_failures_total": "counter",
    "hms_guard_group_names_refused_total": "counter",
    "hms_guard_group_cache_entries": "gauge",
    # the shared metadata cache and the notification log (docs/OPERATIONS.md)
    "hms_guard_reply_cache_stores_total": "counter",
    "hms_guard_reply_cache_evictions_total": "counter",
    "hms_guard_reply_cache_invalidated_total": "counter",
    "hms_guard_reply_cache_bytes": "gauge",
    "hms_guard_reply_cache_entries": "gauge",
    "hms_guard_reply_cache_serving": "gauge",
    "hms_guard_notification_polls_total": "counter",
    "hms_guard_notification_gaps_total": "counter",
    "hms_guard_notification_last_event": "gauge",
    "hms_guard_notification_lag_ms": "gauge",
    # the location index (docs/STORAGE.md, "Locations are exclusive")
    "hms_guard_index_state": "gauge",
    "hms_guard_index_entries": "gauge",
    "hms_guard_index_tables": "gauge",
    "hms_guard_index_build_tables": "gauge",
    "hms_guard_index_build_duration_seconds": "gauge",
    "hms_guard_index_builds_total": "counter",
    "hms_guard_index_rebuilds_total": "counter",
    "hms_guard_index_refreshes_total": "counter",
    # storage checks (dual IAM, docs/STORAGE.md)
    "hms_guard_storage_sts_calls_total": "counter",
    "hms_guard_storage_credential_refreshes_total": "counter",
    "hms_guard_storage_probes_total": "counter",
    "hms_guard_storage_listings_total": "counter",
    "hms_guard_storage_checks_total": "counter",
    "hms_guard_storage_check_duration_seconds": "histogram",
}
# Label values that only storage checks produce.
STORAGE_CACHES = ("storage_credentials", "storage_decisions")

# Grafana's variables, as the dashboard would resolve them against this Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$job": JOB, "$instance": ".*"}

# Alerts the broken proxy must raise (pending or firing) and the healthy ones must not.
BROKEN_ALERTS = {"HmsGuardNotReady", "HmsGuardUpstreamErrors", "HmsGuardFactsUnavailable",
                 "HmsGuardAuditWriteFailures", "HmsGuardConnectionLimit"}
ALERT_TIMEOUT = 60  # seconds for those alerts to become active


# ---------------------------------------------------------------------------------------------
# the expressions


def alert_rules():
    return [r for g in rule_groups()["groups"] for r in g["rules"]]


def dashboard():
    return json.loads(DASHBOARD.read_text())


def dashboard_targets():
    """[(id, expr)] of every query of every panel."""
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((f"{p['title']} [{t['refId']}]", t["expr"]))
    return out


def resolve(expr):
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unresolved Grafana variable in {expr}"
    return expr


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")


def signal(expr):
    """expr with every comparison outside label matchers, ranges and strings turned into a
    `bool` comparison: `a > 0.1 and b > 1` -> `a > bool 0.1 and b > bool 1`."""
    out, i, depth, quote = [], 0, 0, None
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\":
                out.append(expr[i + 1])
                i += 1
            elif ch == quote:
                quote = None
            i += 1
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif depth == 0:
            m = _COMPARISON.match(expr, i)
            if m and not expr.startswith("=~", i) and not expr.startswith("!~", i):
                op = m.group(1)
                out.append(op)
                i += len(op)
                if not re.match(r"\s*bool\b", expr[i:]):
                    out.append(" bool")
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def metric_names(expr):
    """The hms_guard_* metric families an expression selects (histogram series by family)."""
    def family(name):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return base if EXPECTED_METRICS.get(base) == "histogram" else name
    return {family(n) for n in re.findall(r"\bhms_guard_[a-z_]+", expr)}


def exported_families(text):
    """{PromQL family name: type} from the # TYPE lines of a /metrics page."""
    out = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"
        out[name] = kind
    return out


def _why_empty(prom, expr):
    """For a failure message: which hms_guard metrics of expr Prometheus has no series of."""
    missing = sorted(n for n in metric_names(expr)
                     if not prom.query(f'count({{__name__=~"{n}(_bucket)?",job="{JOB}"}})'))
    return f"; metrics with no series: {missing}" if missing else ""


# ---------------------------------------------------------------------------------------------
# static checks (no lab)


def test_signal_rewrite():
    assert signal('a{x!="1"} > 0.5') == 'a{x!="1"} > bool 0.5'
    assert signal("up == 0") == "up == bool 0"
    assert signal("(a / b > 0.2) and (c >= 1)") == "(a / b > bool 0.2) and (c >= bool 1)"
    assert signal('x{k=~"a|b"}[5m] > bool 1') == 'x{k=~"a|b"}[5m] > bool 1'


def test_every_metric_used_is_exported_by_name():
    """Every metric a rule or panel selects is in EXPECTED_METRICS (catches typos without a
    running Prometheus)."""
    used = {}
    for r in alert_rules():
        for n in metric_names(r["expr"]):
            used.setdefault(n, []).append(r.get("alert") or r.get("record"))
    for where, expr in dashboard_targets():
        for n in metric_names(expr):
            used.setdefault(n, []).append(where)
    unknown = {n: w for n, w in used.items() if n not in EXPECTED_METRICS}
    assert not unknown, f"metrics not exported by hms-guard: {unknown}"


def test_every_metric_is_on_the_dashboard():
    on_dashboard = set()
    for _, expr in dashboard_targets():
        on_dashboard |= metric_names(expr)
    missing = sorted(set(EXPECTED_METRICS) - on_dashboard)
    assert not missing, f"exported but on no dashboard panel: {missing}"


def test_dashboard_shape():
    d = dashboard()
    assert d["uid"] == "hms-guard" and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["datasource", "job", "instance"], names
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], \
                    f"{p['title']}: {t['expr']}"
    titles = " | ".join(p["title"].lower() for p in d["panels"])
    for topic in ("calls/s by method", "latency", "decisions", "top denied", "cache hit",
                  "sts", "credential refreshes", "s3 probes", "connections", "audit events",
                  "audit failures", "upstream"):
        assert topic in titles, f"no panel about {topic!r}"


def test_promtool_check_rules(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(alert_rules())
    assert f"SUCCESS: {n} rules found" in r.stdout + r.stderr, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# against the lab


def test_traffic_did_what_it_claims(monitoring):
    seen = monitoring.traffic.seen
    assert monitoring.traffic.error is None, repr(monitoring.traffic.error)
    assert set(seen["main admin get_table"]) == {"ok"}, seen
    assert set(seen["main analyst get_table"]) == {"ok"}, seen
    assert set(seen["main nobody get_table"]) == {"MetaException"}, seen
    assert set(seen["main nobody drop_table"]) == {"MetaException"}, seen
    assert set(seen["shadow nobody get_table"]) == {"ok"}, seen  # shadow forwards
    assert "ok" not in seen.get("broken nobody getVersion", {}), seen
    # admin's role may write under the warehouse prefix, not in the archive bucket
    assert set(seen["main admin create_table warehouse"]) == {"ok"}, seen
    if "hms_guard_storage_checks_total" in monitoring.guards["main"].metrics():
        assert "ok" not in seen["main admin create_table archive"], seen


def metrics_pages(monitoring):
    return {role: g.metrics() for role, g in monitoring.guards.items()}


def test_no_unlisted_metrics(monitoring):
    exported = {}
    for text in metrics_pages(monitoring).values():
        exported.update(exported_families(text))
    unlisted = {n: t for n, t in exported.items() if n not in EXPECTED_METRICS}
    assert not unlisted, (f"hms-guard exports metrics this test does not know: {unlisted}; add "
                          "them to EXPECTED_METRICS, the dashboard and, if they signal trouble, "
                          "the alert rules")
    wrong = {n: (t, EXPECTED_METRICS[n]) for n, t in exported.items()
             if EXPECTED_METRICS[n] != t}
    assert not wrong, f"(exported type, expected type): {wrong}"


def test_every_listed_metric_is_exported(monitoring):
    exported = set()
    pages = metrics_pages(monitoring)
    for text in pages.values():
        exported |= set(exported_families(text))
    missing = sorted(set(EXPECTED_METRICS) - exported)
    caches = {lb.get("cache") for text in pages.values()
              for lb, _ in hms.metric_series(text, "hms_guard_cache_lookups_total")}
    missing += [f'hms_guard_cache_lookups_total{{cache="{c}"}}' for c in STORAGE_CACHES
                if c not in caches]
    assert not missing, ("not on /metrics of any proxy after the traffic (a labelled counter "
                         "appears once touched; storage metrics once storage checks run): "
                         f"{missing}")


def test_rules_loaded_and_healthy(monitoring):
    groups = monitoring.prometheus.api("rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    want = [r["alert"] for r in alert_rules()]
    assert sorted(loaded) == sorted(want)
    deadline = time.monotonic() + 30
    while any(r.get("lastEvaluation", "").startswith("0001") for r in loaded.values()):
        assert time.monotonic() < deadline, "rules were never evaluated"
        time.sleep(1)
        loaded = {r["name"]: r for g in monitoring.prometheus.api("rules")["groups"]
                  for r in g["rules"]}
    bad = {n: r.get("lastError") for n, r in loaded.items() if r["health"] != "ok"}
    assert not bad, bad


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rule_expression_returns_series(monitoring, rule):
    prom = monitoring.prometheus
    q = signal(rule["expr"])
    result = prom.query(q)
    assert result, (f"{rule['alert']}: no series for\n  {q}{_why_empty(prom, rule['expr'])}")


@pytest.mark.parametrize("where,expr", dashboard_targets(), ids=[w for w, _ in dashboard_targets()])
def test_dashboard_expression_returns_series(monitoring, where, expr):
    prom = monitoring.prometheus
    q = resolve(expr)
    result = prom.query(q)
    assert result, f"panel {where}: no series for\n  {q}{_why_empty(prom, q)}"


def test_dashboard_variables_have_values(monitoring):
    prom = monitoring.prometheus
    for v in dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
        selector, label = resolve(m.group(1)), m.group(2)
        values = {r["metric"].get(label) for r in prom.query(selector)}
        assert values - {None}, f"variable {v['name']}: no values of {label} in {selector}"
        if v["name"] == "instance":
            assert len(values) == len(monitoring.guards), values


def active_alerts(monitoring):
    """{(alertname, role of the proxy): state} of the pending and firing alerts."""
    roles = {f"127.0.0.1:{g.admin_port}": r for r, g in monitoring.guards.items()}
    return {(a["labels"]["alertname"], roles.get(a["labels"].get("instance"))): a["state"]
            for a in monitoring.prometheus.api("alerts")["alerts"]}


def test_alerts_fire_where_they_should(monitoring):
    # ... and the main proxy's steady stream of denied calls (5 of ~12 decisions a round,
    # several a second) is a deny spike
    want = {(a, "broken") for a in BROKEN_ALERTS} | {("HmsGuardDenySpike", "main")}
    deadline = time.monotonic() + ALERT_TIMEOUT
    while True:
        active = active_alerts(monitoring)
        if want <= set(active):
            break
        assert time.monotonic() < deadline, (
            f"not active after {ALERT_TIMEOUT}s: {sorted(want - set(active))}; active: {active}")
        time.sleep(1)
    healthy = {(a, r) for a, r in active if r in ("main", "shadow") and a in BROKEN_ALERTS}
    assert not healthy, f"alerts on healthy proxies: {healthy}"
    assert not any(a in ("HmsGuardTargetDown", "HmsGuardUpstreamDown") for a, _ in active), active


def test_audit_log_of_the_main_proxy(monitoring):
    lines = [json.loads(x) for x in monitoring.audit_file.read_text().splitlines() if x]
    assert lines, "no audit lines"
    denied = [e for e in lines if e.get("user") == "nobody" and e.get("decision") == "deny"]
    assert denied, lines[:3]
    e = denied[0]
    for key in ("time", "event_id", "user", "method", "decision", "reason"):
        assert key in e, (key, e)

"""Unit tests of the alert rules with `promtool test rules`: for every alert, synthetic series
that must make it fire (with the labels and rendered annotations it must carry) and series
that must not. This covers what the live test (test_monitoring.py) cannot provoke, such as the
storage alerts, a whole namespace losing its metastore, or an audit backlog, and pins each
threshold and label set. Needs only promtool (tests/deploy/setup.sh)."""
import re
import subprocess

import pytest
import yaml

from deploylab import rule_groups

I = 'job="hms-guard", instance="a:9464"'  # the labels of one replica

# alert -> (firing series, eval_time, extra labels of the alert, $value) and quiet series.
# Series values use promtool's expanding notation, one sample per minute.
CASES = {
    "HmsGuardTargetDown": (
        [(f"up{{{I}}}", "0x20")], "10m", {}, 0,
        [(f"up{{{I}}}", "1x20")]),
    "HmsGuardNotReady": (
        [(f"hms_guard_upstream_up{{{I}}}", "0x20")], "10m", {}, 0,
        [(f"hms_guard_upstream_up{{{I}}}", "1x20")]),
    "HmsGuardUpstreamDown": (
        [(f'hms_guard_upstream_up{{{I}, namespace="ns"}}', "0x20"),
         (f'hms_guard_upstream_up{{job="hms-guard", instance="b:9464", namespace="ns"}}', "0x20")],
        "10m", {"namespace": "ns", "instance": None}, 0,
        [(f'hms_guard_upstream_up{{{I}, namespace="ns"}}', "0x20"),
         (f'hms_guard_upstream_up{{job="hms-guard", instance="b:9464", namespace="ns"}}', "1x20")]),
    "HmsGuardUpstreamErrors": (
        [(f'hms_guard_upstream_errors_total{{{I}, kind="connect"}}', "0+6x40"),
         (f'hms_guard_requests_total{{{I}, method="get_table", decision="error"}}', "0+60x40")],
        "30m", {}, 0.1,
        [(f'hms_guard_upstream_errors_total{{{I}, kind="closed_idle"}}', "0+30x40"),
         (f'hms_guard_requests_total{{{I}, method="get_table", decision="pass"}}', "0+60x40")]),
    "HmsGuardConnectionLimit": (
        [(f'hms_guard_connections_rejected_total{{{I}, kind="limit"}}', "0+1x30")],
        "20m", {}, 1 / 60,
        [(f'hms_guard_connections_rejected_total{{{I}, kind="shutdown"}}', "0+1x30")]),
    "HmsGuardMismatchedReplies": (
        [(f"hms_guard_mismatched_replies_total{{{I}}}", "0 0 0 1 1 1 1 1")], "4m", {}, 1,
        [(f"hms_guard_mismatched_replies_total{{{I}}}", "0x20")]),
    "HmsGuardDenySpike": (
        [(f'hms_guard_decisions_total{{{I}, decision="deny", reason="missing_privilege"}}', "0+30x40"),
         (f'hms_guard_decisions_total{{{I}, decision="allow", reason="grant"}}', "0+30x40")],
        "30m", {}, 0.5,
        # half denied, but only 3 a minute
        [(f'hms_guard_decisions_total{{{I}, decision="deny", reason="missing_privilege"}}', "0+3x40"),
         (f'hms_guard_decisions_total{{{I}, decision="allow", reason="grant"}}', "0+3x40")]),
    "HmsGuardFactsUnavailable": (
        [(f'hms_guard_decisions_total{{{I}, decision="deny", reason="facts_unavailable"}}', "0+6x30")],
        "20m", {}, 0.1,
        [(f'hms_guard_decisions_total{{{I}, decision="deny", reason="missing_privilege"}}', "0+6x30")]),
    "HmsGuardGroupLookupFailures": (
        [(f'hms_guard_group_lookup_failures_total{{{I}, source="ldap"}}', "0+6x30")],
        "20m", {"source": "ldap"}, 0.1,
        [(f'hms_guard_group_lookup_failures_total{{{I}, source="ldap"}}', "0x30")]),
    "HmsGuardLocationIndexUnavailable": (
        [(f'hms_guard_index_state{{{I}, state="incomplete"}}', "1x30"),
         (f'hms_guard_index_state{{{I}, state="ready"}}', "0x30")],
        "20m", {"state": "incomplete"}, 1,
        # ready; a build shorter than the wait
        [(f'hms_guard_index_state{{{I}, state="ready"}}', "1x30"),
         (f'hms_guard_index_state{{{I}, state="building"}}', "1x10 0x20")]),
    "HmsGuardNotificationLogBehind": (
        [(f'hms_guard_notification_lag_ms{{{I}}}', "120000x20")],
        "10m", {}, 120000,
        [(f'hms_guard_notification_lag_ms{{{I}}}', "500x20")]),
    "HmsGuardStsFailures": (
        [(f'hms_guard_storage_sts_calls_total{{{I}, hop="user", outcome="ok"}}', "0+7x40"),
         (f'hms_guard_storage_sts_calls_total{{{I}, hop="user", outcome="denied"}}', "0+3x40")],
        "30m", {"hop": "user"}, 0.3,
        [(f'hms_guard_storage_sts_calls_total{{{I}, hop="user", outcome="ok"}}', "0+7x40"),
         (f'hms_guard_storage_sts_calls_total{{{I}, hop="bucket", outcome="ok"}}', "0+7x40")]),
    "HmsGuardCredentialRefreshFailures": (
        [(f'hms_guard_storage_credential_refreshes_total{{{I}, outcome="ok"}}', "0+1x30"),
         (f'hms_guard_storage_credential_refreshes_total{{{I}, outcome="error"}}', "0+1x30")],
        "20m", {}, 10,
        [(f'hms_guard_storage_credential_refreshes_total{{{I}, outcome="ok"}}', "0+1x30")]),
    "HmsGuardS3ProbeErrors": (
        [(f'hms_guard_storage_probes_total{{{I}, action="write", outcome="allow"}}', "0+7x40"),
         (f'hms_guard_storage_probes_total{{{I}, action="read", outcome="error"}}', "0+3x40")],
        "30m", {}, 0.3,
        [(f'hms_guard_storage_probes_total{{{I}, action="write", outcome="allow"}}', "0+7x40"),
         (f'hms_guard_storage_probes_total{{{I}, action="read", outcome="deny"}}', "0+3x40")]),
    "HmsGuardStorageChecksUnavailable": (
        [(f'hms_guard_storage_checks_total{{{I}, action="write", outcome="unavailable", cached="false"}}', "0+6x30")],
        "20m", {}, 0.1,
        [(f'hms_guard_storage_checks_total{{{I}, action="write", outcome="deny", cached="false"}}', "0+6x30")]),
    "HmsGuardAuditWriteFailures": (
        [(f'hms_guard_audit_failures_total{{{I}, kind="write"}}', "0+1x20")],
        "10m", {}, 5,
        [(f"hms_guard_audit_events_total{{{I}}}", "0+60x20")]),
    "HmsGuardAuditBacklog": (
        [(f"hms_guard_audit_queue_depth{{{I}}}", "2500x20")], "10m", {}, 2500,
        [(f"hms_guard_audit_queue_depth{{{I}}}", "100x20")]),
}


def rules():
    return {r["alert"]: r for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}


def go_value(v):
    """A float as Go's %v prints it in a Prometheus template."""
    return f"{v:.15g}" if v != int(v) else str(int(v))


def render(template, labels, value):
    """The subset of Prometheus' alert templating the rules use."""
    out = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    out = re.sub(r"\{\{\s*\$value\s*\|\s*humanizePercentage\s*\}\}",
                 lambda m: f"{value * 100:.4g}%", out)
    out = re.sub(r"\{\{\s*\$value\s*\}\}", lambda m: go_value(value), out)
    assert "{{" not in out, f"template syntax this test does not render: {template}"
    return out


def test_every_alert_has_cases():
    assert sorted(CASES) == sorted(rules())


@pytest.fixture(scope="module")
def promtool_run(tmp_path_factory):
    """Writes the rule file and one test file covering every alert, runs promtool once."""
    d = tmp_path_factory.mktemp("promtool")
    (d / "rules.yml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    tests = []
    all_rules = rules()
    for alert, (series, at, extra, value, quiet) in CASES.items():
        rule = all_rules[alert]
        labels = {"job": "hms-guard", "instance": "a:9464", **rule["labels"], **extra}
        labels = {k: v for k, v in labels.items() if v is not None}
        annotations = {k: render(v, labels, value) for k, v in rule["annotations"].items()}
        for name, ser, expected in (("fires", series, [{"exp_labels": labels,
                                                        "exp_annotations": annotations}]),
                                    ("quiet", quiet, [])):
            tests.append({
                "name": f"{alert} {name}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in ser],
                "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                     "exp_alerts": expected}],
            })
    (d / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests},
        sort_keys=False, width=200))
    r = subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=d, capture_output=True,
                       text=True, timeout=120)
    return r


def test_alerts_fire_and_stay_quiet(promtool_run):
    r = promtool_run
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert "SUCCESS" in r.stdout + r.stderr

"""The Kubernetes manifests (deploy/k8s): every overlay renders with kustomize (the real one:
tests/deploy/kustomize.py), every object and every resource file validates offline against the
Kubernetes JSON schemas of a pinned version (PyPI kubernetes-validate, strict: unknown fields
are errors), the Prometheus Operator objects against a structural schema of the fields they
use, the configs in the ConfigMaps pass `hms-guard check-config`, and the pieces refer to each
other consistently (selectors, named ports, probes, config paths, identity)."""
import os
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploylab import K8S, OVERLAYS, REPO
import hms

# The Kubernetes version the manifests are written for (native sidecars need 1.29+, the
# preStop sleep action 1.30+).
K8S_VERSION = "1.32.0"
CONFIG_DIR = "/etc/hms-guard"
CONFIG_FILE = "hms-guard.toml"
BUILTIN_GROUPS = ("", "apps", "policy", "networking.k8s.io")

# The fields of monitoring.coreos.com/v1 PodMonitor and PrometheusRule these manifests use,
# as the Prometheus Operator documents them (API reference, v0.7x); additionalProperties
# false, so a misspelt key fails here rather than being ignored by the operator.
_METADATA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
    "additionalProperties": False}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_LABEL_SELECTOR = {"type": "object", "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    "matchExpressions": {"type": "array"}}, "additionalProperties": False}
CRD_SCHEMAS = {
    "PodMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
            "metadata": _METADATA,
            "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"],
                     "additionalProperties": False, "properties": {
                         "selector": _LABEL_SELECTOR,
                         "namespaceSelector": {"type": "object", "additionalProperties": False,
                                               "properties": {"any": {"type": "boolean"},
                                                              "matchNames": {"type": "array"}}},
                         "jobLabel": {"type": "string"},
                         "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "additionalProperties": False, "properties": {
                                 "port": {"type": "string"}, "path": {"type": "string"},
                                 "scheme": {"enum": ["http", "https"]},
                                 "interval": _DURATION, "scrapeTimeout": _DURATION,
                                 "honorLabels": {"type": "boolean"},
                                 "relabelings": {"type": "array", "items": {
                                     "type": "object", "additionalProperties": False,
                                     "properties": {
                                         "sourceLabels": {"type": "array"},
                                         "separator": {"type": "string"},
                                         "targetLabel": {"type": "string"},
                                         "regex": {"type": "string"},
                                         "replacement": {"type": "string"},
                                         "action": {"type": "string"}}}}}}}}}}},
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"}, "metadata": _METADATA,
            "spec": {"type": "object", "required": ["groups"], "additionalProperties": False,
                     "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "required": ["name", "rules"],
                         "additionalProperties": False, "properties": {
                             "name": {"type": "string"}, "interval": _DURATION,
                             "rules": {"type": "array", "minItems": 1, "items": {
                                 "type": "object", "required": ["expr"],
                                 "additionalProperties": False,
                                 "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                 "properties": {
                                     "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                                     "record": {"type": "string"},
                                     "expr": {"type": "string", "minLength": 1},
                                     "for": _DURATION,
                                     "labels": {"type": "object",
                                                "additionalProperties": {"type": "string"}},
                                     "annotations": {"type": "object",
                                                     "additionalProperties": {"type": "string"}},
                                 }}}}}}}}}},
}


def validate(obj):
    """Validates one object; returns where it was validated ("kubernetes 1.32" or "crd")."""
    group = obj["apiVersion"].rpartition("/")[0]
    if obj["kind"] in CRD_SCHEMAS:
        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
        return "crd"
    assert group in BUILTIN_GROUPS, f"{obj['kind']} {obj['apiVersion']}: no schema here"
    return "kubernetes " + kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def objects(rendered, overlay, kind):
    return [o for o in rendered[overlay] if o["kind"] == kind]


def one(rendered, overlay, kind):
    found = objects(rendered, overlay, kind)
    assert len(found) == 1, f"{overlay}: {len(found)} {kind}s"
    return found[0]


def pod_templates(rendered, overlay):
    return [(o, o["spec"]["template"]) for o in rendered[overlay]
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def guard_container(template):
    """The hms-guard container of a pod template (a container or a native sidecar)."""
    spec = template["spec"]
    found = [c for c in spec.get("containers", []) + spec.get("initContainers", [])
             if c["name"] == "hms-guard"]
    assert len(found) == 1, "no hms-guard container"
    return found[0]


def guard_config(rendered, overlay, template):
    """The TOML config mounted at /etc/hms-guard in the pod, parsed."""
    container = guard_container(template)
    mount = [m for m in container.get("volumeMounts", []) if m["mountPath"] == CONFIG_DIR]
    assert len(mount) == 1, f"nothing mounted at {CONFIG_DIR}"
    volume = [v for v in template["spec"]["volumes"] if v["name"] == mount[0]["name"]][0]
    cm_name = volume["configMap"]["name"]
    cms = [c for c in objects(rendered, overlay, "ConfigMap") if c["metadata"]["name"] == cm_name]
    assert cms, f"{overlay}: the pod mounts ConfigMap {cm_name}, which the render lacks"
    assert CONFIG_FILE in cms[0]["data"], f"ConfigMap {cm_name} has no {CONFIG_FILE}"
    return tomllib.loads(cms[0]["data"][CONFIG_FILE])


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def named_port(container, name):
    ports = [p for p in container.get("ports", []) if p["name"] == name]
    assert len(ports) == 1, f"container {container['name']} has no port named {name}"
    return ports[0]["containerPort"]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def resource_files():
    """Every Kubernetes object file under deploy/k8s (not kustomizations, not patches)."""
    return sorted(p for p in K8S.rglob("*.yaml")
                  if p.name != "kustomization.yaml" and not p.name.startswith("patch-"))


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(rendered, overlay):
    objs = rendered[overlay]
    assert objs, f"kustomize build {overlay} rendered nothing"
    report = {name_of(o): validate(o) for o in objs}
    assert all(v for v in report.values()), report


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_resource_file_validates(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for d in docs:
        validate(d)


def test_kubernetes_validate_rejects_what_it_should(rendered):
    """The validator is strict: a misspelt field and a wrong type fail (guards against a
    validator that silently accepts everything)."""
    dep = one(rendered, "standalone", "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    bad = yaml.safe_load(yaml.safe_dump(dep))
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    rule = one(rendered, "monitoring", "PrometheusRule")
    bad = yaml.safe_load(yaml.safe_dump(rule))
    bad["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


def config_texts(rendered):
    """(where, TOML text) of every hms-guard config: each rendered ConfigMap's, and the one
    the container image bakes in."""
    out = []
    for overlay in OVERLAYS:
        for cm in objects(rendered, overlay, "ConfigMap"):
            for key, text in cm.get("data", {}).items():
                if key.endswith(".toml"):
                    out.append((f"{overlay}: ConfigMap {cm['metadata']['name']} {key}", text))
    out.append(("image default", (REPO / "deploy/k8s/base/hms-guard.toml").read_text()))
    return out


def test_configs_pass_check_config(rendered, tmp_path):
    binary = hms.guard_bin()
    assert os.access(binary, os.X_OK), f"{binary} missing: cargo build --bins"
    texts = config_texts(rendered)
    assert len(texts) >= 4, texts
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMS_GUARD_PINNED")}
    for i, (where, text) in enumerate(texts):
        path = tmp_path / f"config-{i}.toml"
        path.write_text(text)
        r = subprocess.run([binary, "check-config", "--config", str(path)], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{where}: check-config exit {r.returncode}:\n{r.stdout}{r.stderr}"
    # check-config is not a rubber stamp: a broken copy of one of them fails.
    bad = tmp_path / "bad.toml"
    bad.write_text(texts[0][1].replace("[server]", "[server]\nlisten_adress = \"x\"", 1))
    r = subprocess.run([binary, "check-config", "--config", str(bad)], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "listen_adress" in r.stdout + r.stderr, r


@pytest.mark.parametrize("overlay", ["base", "standalone", "sidecar"])
def test_hms_guard_pod(rendered, overlay):
    """Probes, ports, config mount, non-root and read-only: consistent with the config."""
    templates = pod_templates(rendered, overlay)
    assert templates
    for workload, tpl in templates:
        c = guard_container(tpl)
        cfg = guard_config(rendered, overlay, tpl)
        assert c["args"] == ["serve", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"], c["args"]
        admin = named_port(c, "hms-admin")
        assert admin == port_of(cfg["admin"]["listen"])
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "hms-admin"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "hms-admin"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        # the readiness check connects upstream: its timeout covers connect_timeout_ms
        connect_ms = cfg["upstream"].get("connect_timeout_ms", 5000)
        assert c["readinessProbe"]["timeoutSeconds"] * 1000 > connect_ms
        sc = {**tpl["spec"].get("securityContext", {}), **c.get("securityContext", {})}
        assert sc.get("runAsUser") == 65532 and sc.get("runAsGroup") == 65532, sc
        assert sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True, sc
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"]
        assert c["image"].split("/")[-1].startswith("hms-guard:"), c["image"]
        # scraped by the monitoring overlay's PodMonitor
        pm = one(rendered, "monitoring", "PodMonitor")
        assert matches(pm["spec"]["selector"], tpl["metadata"]["labels"]), name_of(workload)
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "hms-admin"
        grace = tpl["spec"]["terminationGracePeriodSeconds"]
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        shutdown_ms = cfg["server"].get("shutdown_grace_ms", 30000)
        assert grace * 1000 > shutdown_ms + pre_stop * 1000, (grace, shutdown_ms, pre_stop)


@pytest.mark.parametrize("overlay", ["base", "standalone"])
def test_standalone_wiring(rendered, overlay):
    dep = one(rendered, overlay, "Deployment")
    tpl = dep["spec"]["template"]
    labels = tpl["metadata"]["labels"]
    assert matches(dep["spec"]["selector"], labels)
    c = guard_container(tpl)
    cfg = guard_config(rendered, overlay, tpl)
    assert cfg["identity"]["mode"] == "set_ugi"
    assert named_port(c, "thrift") == port_of(cfg["server"]["listen"]) == 9083
    assert cfg["server"]["listen"].startswith("0.0.0.0:")
    svc = one(rendered, overlay, "Service")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"thrift", "hms-admin"}
    sa = one(rendered, overlay, "ServiceAccount")
    assert tpl["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert tpl["spec"]["automountServiceAccountToken"] is False


def test_standalone_production_pieces(rendered):
    r = rendered
    dep = one(r, "standalone", "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["metadata"]["namespace"] == "hms-guard"
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(r, "standalone", "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"], labels)
    np = one(r, "standalone", "NetworkPolicy")
    assert matches(np["spec"]["podSelector"], labels)
    c = guard_container(dep["spec"]["template"])
    names = {p["name"] for p in c["ports"]}
    for rule in np["spec"]["ingress"]:
        for p in rule["ports"]:
            assert p["port"] in names, p
    egress_ports = {p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])}
    assert {9083, 53, 443} <= egress_ports, egress_ports
    sa = one(r, "standalone", "ServiceAccount")
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", arn), arn
    cfg = guard_config(r, "standalone", dep["spec"]["template"])
    assert len(cfg["upstream"]["uris"]) >= 2
    assert cfg["authz"]["mode"] == "enforce"
    # the overlay's config replaced the base's (one ConfigMap, the standalone file)
    cms = objects(r, "standalone", "ConfigMap")
    assert len(cms) == 1
    assert cms[0]["data"][CONFIG_FILE] == (K8S / "standalone" / CONFIG_FILE).read_text()
    assert re.fullmatch(r"hms-guard-config-[a-z0-9]{10}", cms[0]["metadata"]["name"])


def test_sidecar_pod(rendered):
    dep = one(rendered, "sidecar", "Deployment")
    tpl = dep["spec"]["template"]
    spec = tpl["spec"]
    # hms-guard is a native sidecar: started before the driver, stopped after it
    guard = [c for c in spec["initContainers"] if c["name"] == "hms-guard"]
    assert guard and guard[0]["restartPolicy"] == "Always"
    cfg = guard_config(rendered, "sidecar", tpl)
    assert cfg["identity"]["mode"] == "pinned"
    assert cfg["server"]["listen"] == "127.0.0.1:9083", "the pinned proxy must be loopback-only"
    # the pinned user comes from the pod's own label, which the pod template sets
    env = {e["name"]: e for e in guard[0]["env"]}
    path = env["HMS_GUARD_PINNED_USER"]["valueFrom"]["fieldRef"]["fieldPath"]
    label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path).group(1)
    assert tpl["metadata"]["labels"][label]
    gpath = env["HMS_GUARD_PINNED_GROUPS"]["valueFrom"]["fieldRef"]["fieldPath"]
    annotation = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", gpath).group(1)
    assert annotation in tpl["metadata"]["annotations"]
    # the driver's metastore is the sidecar
    driver = [c for c in spec["containers"] if c["name"] == "spark-driver"][0]
    conf_mount = [m for m in driver["volumeMounts"]
                  if m["mountPath"].endswith("spark-defaults.conf")][0]
    volume = [v for v in spec["volumes"] if v["name"] == conf_mount["name"]][0]
    cm = [c for c in objects(rendered, "sidecar", "ConfigMap")
          if c["metadata"]["name"] == volume["configMap"]["name"]][0]
    conf = dict(line.split(None, 1) for line in cm["data"]["spark-defaults.conf"].splitlines()
                if line.strip() and not line.startswith("#"))
    assert conf["spark.hadoop.hive.metastore.uris"].strip() == "thrift://127.0.0.1:9083"
    assert conf["spark.sql.catalogImplementation"].strip() == "hive"
    # hms-guard-spark: loaded from the hms-guard image, mounted into the driver
    assert conf["spark.sql.extensions"].strip() == "hmsguard.spark.GuardExtension"
    jar = conf["spark.jars"].strip()
    mount = [m for m in driver["volumeMounts"] if jar.startswith(m["mountPath"] + "/")]
    assert mount, (jar, driver["volumeMounts"])
    vol = [v for v in spec["volumes"] if v["name"] == mount[0]["name"]][0]
    assert vol["image"]["reference"] == guard[0]["image"], (vol, guard[0]["image"])
    assert mount[0]["subPath"] == "opt/hms-guard", mount  # where deploy/Dockerfile puts it
    assert jar == "/opt/hms-guard/hms-guard-spark.jar"
    # no Service exposes the pinned proxy
    assert not objects(rendered, "sidecar", "Service")


def test_monitoring_objects(rendered):
    pm = one(rendered, "monitoring", "PodMonitor")
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "hms-guard"} in ep["relabelings"]
    rule = one(rendered, "monitoring", "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    for a in alerts:
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"]
        assert a["annotations"]["runbook"] == f"docs/OPERATIONS.md#{a['alert'].lower()}"
        assert 'job="hms-guard"' in a["expr"], a["alert"]


def test_every_alert_has_a_runbook_section():
    ops = (REPO / "docs" / "OPERATIONS.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^###\s+(\S+)\s*$", ops, re.M)}
    rule = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    missing = [a for a in alerts if a.lower() not in headings]
    assert not missing, f"docs/OPERATIONS.md has no '### NAME' section for {missing}"


def test_kustomizations_use_current_fields():
    """No field kustomize v5 deprecates (bases, commonLabels, patchesStrategicMerge, vars...)."""
    deprecated = {"bases", "commonLabels", "patchesStrategicMerge", "patchesJson6902", "vars",
                  "imageTags"}
    for k in sorted(K8S.rglob("kustomization.yaml")):
        doc = yaml.safe_load(k.read_text())
        assert not deprecated & set(doc), f"{k}: {sorted(deprecated & set(doc))}"
        assert doc["kind"] == "Kustomization"


def test_kustomize_is_the_real_one(tmp_path):
    """The renderer is kustomize itself: it rejects what kustomize rejects."""
    import kustomize
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(kustomize.KustomizeError, match="missing.yaml"):
        kustomize.build(tmp_path)
    assert Path(kustomize.library_path()).exists()

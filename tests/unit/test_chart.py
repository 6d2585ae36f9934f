"""The CRD and the Helm chart, checked without a cluster (helm lint/template when helm is installed)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "storyteller.dev_storytellerdeployments.yaml"
CHART = REPO / "helm" / "storyteller"


def crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return data


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field (property, and list item) of the schema with its dotted path."""
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield f"{path}[]", schema["items"]
        yield from walk(schema["items"], f"{path}[]")


# ---------------------------------------------------------------------------------------------------- CRD


def test_crd_matches_its_generator() -> None:
    spec = importlib.util.spec_from_file_location("crd_generate", REPO / "crds" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert CRD.read_text() == module.render(), "run `python crds/generate.py`"


def test_chart_crd_is_the_same_bytes() -> None:
    copies = list((CHART / "crds").iterdir())
    assert [c.name for c in copies] == [CRD.name]
    assert copies[0].read_bytes() == CRD.read_bytes(), "cp crds/*.yaml helm/storyteller/crds/"


def test_every_field_has_a_description() -> None:
    missing = [
        path
        for path, sub in walk(root_schema(), "")
        if path != ".metadata" and not sub.get("description")  # the API server forbids one on metadata
    ]
    assert missing == []


def test_schema_is_structural() -> None:
    for path, sub in walk(root_schema(), ""):
        assert sub.get("type") or sub.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_names_subresources_and_columns() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "storyteller.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "StorytellerDeployment"
    assert spec["names"]["plural"] == "storytellerdeployments"
    assert spec["names"]["shortNames"] == ["sd"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    scale = version["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Replicas", "Active Sessions", "Age"} <= columns


def test_contract_defaults() -> None:
    spec = root_schema()["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["livekit"]
    assert props["livekit"]["required"] == ["url", "credentialsSecret"]
    pool = {k: v.get("default") for k, v in props["pool"]["properties"].items()}
    assert pool == {
        "minReplicas": 1,
        "maxReplicas": 10,
        "sessionsPerWorker": 4,
        "idleProcesses": 2,
        "spareSessions": 2,
        "scaleDownDelaySeconds": 300,
        "drainTimeoutSeconds": 900,
        "autoscaler": "builtin",
    }
    intro = props["intro"]["properties"]
    assert intro["llm"]["default"] == {"provider": "openai", "model": "gpt-4o-mini"}
    assert intro["stt"]["default"] == {"provider": "deepgram", "model": "nova-3", "language": "en"}
    assert "default" not in intro["tts"]  # a realtime intro llm leaves it out; the worker fills it otherwise
    story = props["story"]["properties"]
    assert "default" not in story["stt"] and "default" not in story["tts"]
    assert story["llm"]["properties"]["provider"]["enum"] == ["openai", "openai-realtime"]
    assert intro["stt"]["properties"]["provider"]["enum"] == ["deepgram", "openai"]
    assert intro["tts"]["properties"]["provider"]["enum"] == ["openai", "deepgram"]
    obs = props["observability"]["properties"]
    assert obs["metricsPort"]["default"] == 9100
    assert obs["tracing"]["properties"]["sampleRatio"]["default"] == 1.0
    assert (
        props["worker"]["properties"]["image"]["default"]
        == "ghcr.io/storyteller-dev/storyteller-worker:0.1.0"
    )
    assert props["suspend"]["default"] is False and props["providerSecrets"]["default"] == []


def test_preserve_unknown_fields_only_for_kubernetes_shapes() -> None:
    preserved = [p for p, sub in walk(root_schema(), "") if sub.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".spec.worker.tolerations[]", ".spec.worker.affinity"]


# -------------------------------------------------------------------------------------------------- chart


def test_every_values_key_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    free_form_indent: int | None = None  # inside a Kubernetes-shaped value (resources: ...)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        if free_form_indent is not None and indent > free_form_indent:
            continue
        free_form_indent = indent if m.group(2) == "resources" else None
        prev = next((p for p in reversed(lines[:i]) if p.strip()), "")
        if not prev.strip().startswith("#"):
            uncommented.append(line.strip())
    assert uncommented == []


def test_values_schema_is_valid_json_and_covers_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def check(vals: dict[str, Any], sch: dict[str, Any], path: str) -> None:
        for key, val in vals.items():
            assert key in sch.get("properties", {}), f"{path}{key} is not in values.schema.json"
            sub = sch["properties"][key]
            if isinstance(val, dict) and sub.get("properties"):
                check(val, sub, f"{path}{key}.")

    check(values, schema, "")


def helm_bin() -> Path:
    try:
        from storyteller_devkit.cluster import find_tool
    except ImportError:  # pragma: no cover - the venv always has the devkit
        pytest.skip("storyteller_devkit is not installed (make venv)")
    try:
        return find_tool("helm")
    except FileNotFoundError:
        pytest.skip("helm is not installed (make tools)")


def helm_template(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(helm_bin()), "template", "st", str(CHART), "--namespace", "storyteller-system",
         "--kube-version", "1.35.0", *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_helm_lint() -> None:
    proc = subprocess.run(
        [str(helm_bin()), "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def helm_template_error(*args: str) -> str:
    """What `helm template` prints when it refuses these values (it must refuse them)."""
    proc = subprocess.run(
        [str(helm_bin()), "template", "st", str(CHART), "--kube-version", "1.35.0", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout[:500]
    return proc.stderr


def test_values_schema_rejects_unknown_keys() -> None:
    assert "typo" in helm_template_error("--set", "operator.typo=1")


def test_default_render() -> None:
    docs = helm_template()
    kinds = sorted(d["kind"] for d in docs)
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Pod"} <= set(
        kinds
    )
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "st"
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    dashboards = [
        d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]
    ]
    assert len(dashboards) == len(list((CHART / "dashboards").glob("*.json")))


def test_cluster_role_is_least_privilege() -> None:
    (role,) = [d for d in helm_template() if d["kind"] == "ClusterRole"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    assert granted[("", "secrets")] == {"get"}
    assert granted[("storyteller.dev", "storytellerdeployments")] == {"get", "list", "watch"}
    assert granted[("storyteller.dev", "storytellerdeployments/status")] == {"get", "patch"}
    # Nothing is deleted by the operator (owner references let the garbage collector do it), except the
    # ScaledObject of a tenant that left keda: its HPA would keep writing spec.replicas.
    assert all(
        ("delete" not in verbs and "update" not in verbs)
        or res.endswith("/finalizers")
        or (group, res) == ("keda.sh", "scaledobjects")
        for (group, res), verbs in granted.items()
    )
    assert granted[("keda.sh", "scaledobjects")] == {"get", "create", "patch", "delete"}
    # Every kind the operator writes is granted.
    from storyteller_operator.kube import KINDS

    for (api_version, _kind), (_prefix, plural) in KINDS.items():
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        assert (group, plural) in granted, (group, plural)


def test_operator_pod_passes_restricted() -> None:
    (dep,) = [d for d in helm_template() if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"


def test_helm_test_pod_runs_where_the_operator_may_and_has_one_component_label() -> None:
    placement = {
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "regcred"}],
    }
    docs = helm_template("--set-json", f"operator={json.dumps(placement)}")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    for field in placement:
        assert test_pod["spec"][field] == dep["spec"]["template"]["spec"][field] == placement[field]
    # Once only (strict YAML parsers refuse a duplicate key), and not the operator's: the operator's
    # Service must not select the test pod.
    rendered = subprocess.run(
        [str(helm_bin()), "template", "st", str(CHART), "--kube-version", "1.35.0", "--show-only",
         "templates/tests/test-operator.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert rendered.count("app.kubernetes.io/component:") == 1, rendered
    assert test_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"


def test_operator_disabled_keeps_crd_rbac() -> None:
    kinds = {d["kind"] for d in helm_template("--set", "operator.enabled=false")}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap"}


def test_optional_monitors() -> None:
    docs = helm_template("--set", "serviceMonitor.enabled=true", "--set", "operator.watchNamespaces={a,b}")
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STORYTELLER_OPERATOR_NAMESPACES"] == "a,b"


def test_prometheus_url_and_sessions_source_reach_the_operator() -> None:
    docs = helm_template(
        "--set", "prometheus.url=http://prometheus-operated.monitoring:9090",
        "--set", "operator.sessionsSource=prometheus",
    )  # fmt: skip
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STORYTELLER_OPERATOR_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring:9090"
    assert env["STORYTELLER_OPERATOR_SESSIONS_SOURCE"] == "prometheus"


def test_prometheus_sessions_without_a_url_is_refused_by_name() -> None:
    error = helm_template_error("--set", "operator.sessionsSource=prometheus")
    assert "operator.sessionsSource prometheus needs prometheus.url" in error


def prometheus_rule(*args: str) -> dict[str, Any]:
    (rule,) = [
        d
        for d in helm_template("--set", "prometheusRule.enabled=true", *args)
        if d["kind"] == "PrometheusRule"
    ]
    return rule


def test_prometheus_rule_carries_the_repositorys_rules() -> None:
    source = yaml.safe_load((REPO / "dashboards" / "rules.yaml").read_text())
    assert prometheus_rule()["spec"]["groups"] == source["groups"]


def test_prices_from_values_replace_or_add_and_pass_promtool(tmp_path: Path) -> None:
    prices = [
        {"provider": "openai", "model": "gpt-4o-mini", "unit": "llm_prompt_token", "usd": 0.0000002},
        {"provider": "openai", "model": "gpt-4.1", "unit": "llm_prompt_token", "usd": 0.000002},
    ]
    groups = prometheus_rule("--set-json", f"prometheusRule.prices={json.dumps(prices)}")["spec"]["groups"]
    source = yaml.safe_load((REPO / "dashboards" / "rules.yaml").read_text())["groups"]
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == [g["name"] for g in source]
    price_rules = by_name["storyteller-prices"]["rules"]
    table = {
        (r["labels"]["provider"], r["labels"]["model"], r["labels"]["unit"]): r["expr"] for r in price_rules
    }
    assert len(table) == len(price_rules)  # replaced, not duplicated

    def usd(key: tuple[str, str, str]) -> float:
        return float(table[key].removeprefix("vector(").removesuffix(")"))

    assert usd(("openai", "gpt-4o-mini", "llm_prompt_token")) == 0.0000002
    assert usd(("openai", "gpt-4.1", "llm_prompt_token")) == 0.000002
    assert table[("deepgram", "nova-3", "stt_minute")] == "vector(0.0043)"  # the others stay
    assert by_name["storyteller-alerts"] == next(g for g in source if g["name"] == "storyteller-alerts")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    promtool = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def test_a_price_without_a_unit_is_refused_by_name() -> None:
    bad = json.dumps([{"provider": "openai", "model": "gpt-4o-mini", "usd": 1}])
    assert "unit" in helm_template_error("--set-json", f"prometheusRule.prices={bad}")

"""The CRD and the Helm chart, checked without a cluster (helm lint/template when helm is installed)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
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


def chart_docs() -> Any:
    """helm/generate.py: the values comments, the schema descriptions and the README made from them."""
    spec = importlib.util.spec_from_file_location("chart_docs", REPO / "helm" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_values_key_has_a_comment() -> None:
    keys = dict(chart_docs().commented_keys((CHART / "values.yaml").read_text()))
    assert "operator.image.registry" in keys and "operator.resources.requests" not in keys  # free form
    assert [k for k, text in keys.items() if not text] == []


def test_schema_descriptions_and_readme_are_generated_from_the_values_comments() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "helm" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    readme = (CHART / "README.md").read_text()
    # helm-docs' values table: every value (a leaf, or a Kubernetes shape documented whole) has its row.
    docs = chart_docs()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, _text in docs.commented_keys((CHART / "values.yaml").read_text()):
        value = values
        for part in key.split("."):
            value = value[part]
        if not isinstance(value, dict) or not value or key.rsplit(".", 1)[-1] in docs.FREE_FORM:
            assert f"| {key} |" in readme, key
    assert "helm upgrade` never updates a CRD" in readme
    assert "kubectl apply --server-side --force-conflicts" in readme
    assert "--kube-version" in readme


def test_every_schema_property_is_described_and_typed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def check(node: dict[str, Any], path: str) -> Iterator[str]:
        for key, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                yield f"{path}{key}: no description"
            if "type" not in sub and "$ref" not in sub:
                yield f"{path}{key}: no type"
            yield from check(sub, f"{path}{key}.")

    assert list(check(schema, "")) == []


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


def _granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    return granted


def _leader_election(doc: dict[str, Any]) -> bool:
    """The Role (or its binding) for the operator's leader-election Lease, in the release namespace."""
    return str(doc["metadata"]["name"]).endswith("-leader-election")


def _assert_least_privilege(granted: dict[tuple[str, str], set[str]]) -> None:
    assert granted[("storyteller.dev", "storytellerdeployments")] == {"get", "list", "watch"}
    assert granted[("storyteller.dev", "storytellerdeployments/status")] == {"get", "patch"}
    assert granted[("", "pods")] == {"list", "watch", "patch"}  # never create or delete a pod
    # Nothing is deleted by the operator (owner references let the garbage collector do it), except old
    # config revisions, a canary Deployment once promoted or rolled back, and the ScaledObject of a tenant
    # that left keda (its HPA would keep writing).
    assert all(
        ("delete" not in verbs and "update" not in verbs)
        or res.endswith("/finalizers")
        or (group, res) in {("keda.sh", "scaledobjects"), ("", "configmaps"), ("apps", "deployments")}
        for (group, res), verbs in granted.items()
    )
    assert granted[("keda.sh", "scaledobjects")] == {"get", "create", "patch", "delete"}
    # A pool whose pods may not roll is resized through the scale subresource, and nothing else is.
    assert granted[("apps", "deployments/scale")] == {"patch"}
    # Every kind the operator writes is granted.
    from storyteller_operator.kube import KINDS

    for (api_version, kind), (_prefix, plural) in KINDS.items():
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        if kind != "Secret":
            assert (group, plural) in granted, (group, plural)


def test_cluster_role_is_least_privilege_and_reads_no_secret_cluster_wide() -> None:
    docs = helm_template()
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    main = roles[binding["roleRef"]["name"]]
    granted = _granted(main["rules"])
    _assert_least_privilege(granted)
    assert ("", "secrets") not in granted
    # Secret metadata is a separate ClusterRole, bound only by namespace (none by default).
    assert _granted(roles["st-storyteller-secrets"]["rules"]) == {("", "secrets"): {"get", "list", "watch"}}
    assert not [d for d in docs if d["kind"] in ("RoleBinding", "Role") and not _leader_election(d)]
    docs = helm_template("--set-json", 'rbac.secretNamespaces=["tenant-a"]')
    (grant,) = [d for d in docs if d["kind"] == "RoleBinding" and not _leader_election(d)]
    assert grant["metadata"]["namespace"] == "tenant-a"
    assert grant["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "st-storyteller-secrets"
    }  # fmt: skip


def test_given_namespaces_get_roles_and_nothing_cluster_wide() -> None:
    docs = helm_template("--set-json", 'operator.watchNamespaces=["tenant-a", "tenant-b"]')
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [d for d in docs if d["kind"] == "Role" and not _leader_election(d)]
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and not _leader_election(d)]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["tenant-a", "tenant-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["tenant-a", "tenant-b"]
    for role in roles:
        granted = _granted(role["rules"])
        _assert_least_privilege(granted)
        assert granted[("", "secrets")] == {"get", "list", "watch"}  # in the watched namespaces only
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "st-storyteller", "namespace": "storyteller-system"}
        ]


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
    # Two replicas electing a leader: a rollout starts the new pod before it stops an old one.
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
    }  # fmt: skip


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
    # The leader-election Role too: a local operator runs under the chart's ServiceAccount.
    assert kinds == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Role",
        "RoleBinding",
    }


def test_optional_monitors() -> None:
    docs = helm_template("--set", "serviceMonitor.enabled=true", "--set", "operator.watchNamespaces={a,b}")
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = _env(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["STORYTELLER_OPERATOR_NAMESPACES"] == "a,b"


def test_prometheus_url_and_sessions_source_reach_the_operator() -> None:
    docs = helm_template(
        "--set", "prometheus.url=http://prometheus-operated.monitoring:9090",
        "--set", "operator.sessionsSource=prometheus",
    )  # fmt: skip
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = _env(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["STORYTELLER_OPERATOR_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring:9090"
    assert env["STORYTELLER_OPERATOR_SESSIONS_SOURCE"] == "prometheus"


def test_the_tenant_rules_reach_the_operator_as_it_reads_them() -> None:
    """The chart's `tenants` value is the operator's TenancyRules: the defaults are the operator's own, and
    every key the chart takes is one the operator reads (it refuses unknown ones)."""
    from storyteller_operator.tenancy import TenancyRules

    def rules(*args: str) -> TenancyRules:
        (dep,) = [d for d in helm_template(*args) if d["kind"] == "Deployment"]
        env = _env(dep["spec"]["template"]["spec"]["containers"][0])
        return TenancyRules.from_json(env["STORYTELLER_OPERATOR_TENANT_RULES"])

    assert rules() == TenancyRules()
    full = rules("-f", str(CHART / "ci" / "full-values.yaml"))
    assert full.max_pods == 20 and full.allowed_toleration_keys == ("nvidia.com/gpu",)
    assert full.max_resources_per_pod["nvidia.com/gpu"] == "1"


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


# ------------------------------------------------------------------------------- chart standard (issue 18)


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The operator's pod spec and the `helm test` pod's, by name."""
    pods = {"test": next(d for d in docs if d["kind"] == "Pod")["spec"]}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if deployments:
        pods["operator"] = deployments[0]["spec"]["template"]["spec"]
    return pods


def test_resources_children_are_typed() -> None:
    assert "cpux" in helm_template_error("--set", "operator.resources.requests.cpux=1")
    assert "memory" in helm_template_error("--set", "operator.resources.limits.memory=lots")
    assert "reqests" in helm_template_error("--set", "tests.resources.reqests.cpu=1")


def test_helm_test_pod_has_requests_and_limits() -> None:
    (c,) = _pods(helm_template())["test"]["containers"]
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, c["resources"]


def test_security_contexts_default_to_restricted_and_are_configurable() -> None:
    for name, pod in _pods(helm_template()).items():
        assert pod["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name  # fmt: skip
        (c,) = pod["containers"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # OpenShift: the SCC assigns the UID; the pods must not fix one, and stay non-root.
    for name, pod in _pods(helm_template("-f", str(CHART / "ci" / "openshift-values.yaml"))).items():
        assert "runAsUser" not in pod["securityContext"] and "runAsGroup" not in pod["securityContext"], name
        assert pod["securityContext"]["runAsNonRoot"] is True
    pod = _pods(helm_template("--set", "operator.podSecurityContext.fsGroup=2000"))["operator"]
    assert pod["securityContext"]["fsGroup"] == 2000


def test_global_registry_and_pull_secrets_reach_every_pod() -> None:
    default = _pods(helm_template())
    assert (
        default["operator"]["containers"][0]["image"] == "ghcr.io/storyteller-dev/storyteller-operator:0.1.0"
    )
    assert "imagePullSecrets" not in default["operator"]
    docs = helm_template(
        "--set", "global.imageRegistry=mirror.example:5000",
        "--set-json", 'global.imagePullSecrets=[{"name": "mirror"}]',
        "--set-json", 'operator.imagePullSecrets=[{"name": "own"}]',
    )  # fmt: skip
    for name, pod in _pods(docs).items():
        assert (
            pod["containers"][0]["image"] == "mirror.example:5000/storyteller-dev/storyteller-operator:0.1.0"
        )
        assert pod["imagePullSecrets"] == [{"name": "mirror"}, {"name": "own"}], name
    # No registry: the repository is the whole name (a local image, as the real-node tests use).
    local = helm_template(
        "--set", "operator.image.registry=", "--set", "operator.image.repository=localhost/op"
    )
    assert _pods(local)["operator"]["containers"][0]["image"] == "localhost/op:0.1.0"
    assert "imageRegistry" in helm_template_error("--set", "global.imageRegistry=Not A Registry")


def _network_policy(*args: str) -> dict[str, Any]:
    (policy,) = [
        d for d in helm_template("--set", "networkPolicy.enabled=true", *args) if d["kind"] == "NetworkPolicy"
    ]
    return policy


def test_operator_network_policy() -> None:
    from storyteller_api import contract

    assert not [d for d in helm_template() if d["kind"] == "NetworkPolicy"]  # off by default
    (dep,) = [d for d in helm_template() if d["kind"] == "Deployment"]
    policy = _network_policy(
        "--set", "prometheus.url=https://prometheus.monitoring.svc", "--set", "operator.watchNamespaces={a,b}"
    )["spec"]
    assert policy["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["metrics", "health"] and "from" not in ingress
    ports = {(p["port"], p.get("protocol")) for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (contract.HEALTH_PORT, "TCP")}
    (to_workers,) = [r for r in policy["egress"] if r["ports"][0]["port"] == contract.HEALTH_PORT]
    (peer,) = to_workers["to"]
    assert peer["podSelector"]["matchLabels"] == {contract.LABEL_MANAGED_BY: contract.MANAGER}
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["a", "b"]
    # Prometheus as the sessions source: no traffic to the pods, only to Prometheus's port.
    policy = _network_policy(
        "--set", "prometheus.url=http://prom.monitoring:9090", "--set", "operator.sessionsSource=prometheus",
        "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector": {}}]',
    )["spec"]  # fmt: skip
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert ports == {53, 443, 6443, 9090}
    test_pod = _pods(helm_template())["test"]
    assert policy["ingress"][0]["from"] == [
        {"namespaceSelector": {}},
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/instance": "st", "app.kubernetes.io/component": "test"}
            }
        },
    ]
    assert test_pod  # the `helm test` pod carries those labels:
    (pod_doc,) = [d for d in helm_template() if d["kind"] == "Pod"]
    assert {"app.kubernetes.io/instance": "st", "app.kubernetes.io/component": "test"}.items() <= pod_doc[
        "metadata"
    ]["labels"].items()
    assert "bogus" in helm_template_error(
        "--set", "networkPolicy.enabled=true", "--set-json", 'networkPolicy.metricsFrom=[{"bogus": {}}]'
    )


def test_every_alert_links_its_runbook_under_the_base_url() -> None:
    source = yaml.safe_load((REPO / "dashboards" / "rules.yaml").read_text())
    alerts = [r for g in source["groups"] for r in g["rules"] if "alert" in r]
    pages = {r["alert"]: r["annotations"]["runbook_url"].rsplit("/", 1)[1] for r in alerts}
    base = "https://wiki.example.internal/runbooks/"
    rendered = prometheus_rule("--set", f"prometheusRule.runbookBaseUrl={base}")["spec"]["groups"]
    urls = {r["alert"]: r["annotations"]["runbook_url"] for g in rendered for r in g["rules"] if "alert" in r}
    assert urls == {alert: base + page for alert, page in pages.items()}
    assert "runbookBaseUrl" in helm_template_error("--set", "prometheusRule.runbookBaseUrl=no-slash")


def test_chart_metadata_for_artifact_hub() -> None:
    from storyteller_api.spec import DEFAULT_WORKER_IMAGE, TenantSpec

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["sources"] and chart["maintainers"] and chart["icon"].startswith("https://")
    assert (REPO / chart["icon"].rsplit("/main/", 1)[1]).is_file()
    notes = chart["annotations"]
    images = {i["name"]: i["image"] for i in yaml.safe_load(notes["artifacthub.io/images"])}
    operator_image = _pods(helm_template())["operator"]["containers"][0]["image"]
    assert images == {"storyteller-operator": operator_image, "storyteller-worker": DEFAULT_WORKER_IMAGE}
    (crd_note,) = yaml.safe_load(notes["artifacthub.io/crds"])
    assert crd_note["name"] == crd()["metadata"]["name"]
    (example,) = yaml.safe_load(notes["artifacthub.io/crdsExamples"])
    TenantSpec.model_validate(example["spec"])  # the example is a valid tenant
    assert {link["name"] for link in yaml.safe_load(notes["artifacthub.io/links"])} >= {
        "Documentation",
        "Runbooks",
    }


def test_worker_facts_in_the_helpers_match_the_contract() -> None:
    from storyteller_api import contract

    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(
        r'define "storyteller.workerStatusPort" -}}\n' + str(contract.HEALTH_PORT) + "\n", helpers
    )
    assert re.search(r'define "storyteller.workerManagedBy" -}}\n' + contract.MANAGER + "\n", helpers)


@pytest.mark.parametrize("values", sorted(p.name for p in (CHART / "ci").glob("*-values.yaml")))
def test_ci_scenario_renders_and_lints(values: str) -> None:
    assert helm_template("-f", str(CHART / "ci" / values))
    proc = subprocess.run(
        [str(helm_bin()), "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_can_be_left_out_by_name_and_a_typo_is_refused() -> None:
    groups = prometheus_rule("--set", "prometheusRule.disabledAlerts={StorytellerOperatorDown}")["spec"][
        "groups"
    ]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert "StorytellerOperatorDown" not in alerts and "StorytellerOperatorNotReconciling" in alerts
    error = helm_template_error(
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.disabledAlerts={StorytellerOperatorDwn}",
    )
    assert "prometheusRule.disabledAlerts: StorytellerOperatorDwn is not one of the chart's alerts" in error


# ------------------------------------------------------------------------ replicas and leader election


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("args", [(), ("--set", "operator.enabled=false"),
                                  ("--set-json", 'operator.watchNamespaces=["tenant-a"]')])  # fmt: skip
def test_leader_election_rbac_is_one_lease_in_the_release_namespace(args: tuple[str, ...]) -> None:
    docs = helm_template(*args)
    (role,) = [d for d in docs if d["kind"] == "Role" and _leader_election(d)]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and _leader_election(d)]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "storyteller-system"
    # get/update of the one Lease by name; create cannot be narrowed to a name (RBAC never matches it).
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["st-storyteller-leader"], "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]  # fmt: skip
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "st-storyteller", "namespace": "storyteller-system"}
    ]
    assert not [d for d in helm_template(*args, "--set", "rbac.create=false") if _leader_election(d)]


def test_the_operator_is_told_its_lease_and_identity() -> None:
    (dep,) = [d for d in helm_template() if d["kind"] == "Deployment"]
    env = _env(dep["spec"]["template"]["spec"]["containers"][0])
    assert env["STORYTELLER_OPERATOR_LEASE_NAME"] == "st-storyteller-leader"  # the Role's resourceName
    assert env["STORYTELLER_OPERATOR_LEASE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The pod's name: unique per replica, kept by a restarted container (which reclaims its Lease at once).
    assert env["STORYTELLER_OPERATOR_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_operators_default_lease_is_the_charts_for_the_usual_release_name() -> None:
    """A local operator (`python -m storyteller_operator`, the cluster tests) uses the Lease a release named
    storyteller grants without being told; another release name needs --lease-name."""
    from storyteller_operator.__main__ import parse_args

    out = subprocess.run(
        [str(helm_bin()), "template", "storyteller", str(CHART), "--kube-version", "1.35.0",
         "--show-only", "templates/leader-election-rbac.yaml"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    role = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Role")
    assert parse_args([]).lease_name in role["rules"][0]["resourceNames"]


def test_more_than_one_replica_gets_a_disruption_budget_and_spreads_over_nodes() -> None:
    docs = helm_template()
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["metadata"]["namespace"] == "storyteller-system"
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    (term,) = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == dep["spec"]["selector"]

    single = helm_template("--set", "operator.replicas=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]  # it would block every drain
    (dep,) = [d for d in single if d["kind"] == "Deployment"]
    assert dep["spec"]["replicas"] == 1 and "affinity" not in dep["spec"]["template"]["spec"]
    assert not [
        d for d in helm_template("--set", "operator.enabled=false") if d["kind"] == "PodDisruptionBudget"
    ]

    # The installer's own affinity replaces the default spread.
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}  # fmt: skip
    (dep,) = [d for d in helm_template("--set-json", f"operator.affinity={json.dumps(own)}")
              if d["kind"] == "Deployment"]  # fmt: skip
    assert dep["spec"]["template"]["spec"]["affinity"] == own
    assert "replicas" in helm_template_error("--set", "operator.replicas=0")

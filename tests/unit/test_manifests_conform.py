"""kubeconform, strict, on every manifest we ship: the chart's ci/ scenarios, what the operator renders for a
tenant, and the examples. The schemas come from the API server's OpenAPI document at K8S_VERSION and the
CRDs (ours, KEDA's, the Prometheus Operator's), generated offline by storyteller_devkit.kube_schemas.

Strict: an unknown field or a key given twice is an error, as the API server's strict field validation
makes it; a kind without a schema is an error too (never skipped).
"""

from __future__ import annotations

import functools
import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from storyteller_devkit import kube_schemas
from storyteller_devkit.cluster import find_tool
from storyteller_operator import render
from tests.unit.test_operator_render import tenant

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "storyteller"
# chart-testing's scenarios; the defaults alone when the chart ships none.
SCENARIOS: list[Path | None] = [*sorted((CHART / "ci").glob("*-values.yaml"))] or [None]
EXAMPLES = [REPO / "examples" / "tenant.yaml", REPO / "examples" / "tenant-secrets.yaml"]
PROMETHEUS = "http://prometheus.monitoring:9090"


@functools.cache
def kube_version() -> str:
    return kube_schemas.lib_settings()["K8S_VERSION"].removeprefix("v")


@functools.cache
def schema_location() -> str:
    return kube_schemas.ensure_default_schemas()  # written once per input change, then a stamp check


def conform(manifests: str) -> dict[str, Any]:
    """kubeconform's JSON report on these YAML documents: the non-valid resources and the summary."""
    proc = subprocess.run(
        [str(find_tool("kubeconform")), "-strict", "-summary", "-output", "json",
         "-schema-location", schema_location(), "-kubernetes-version", kube_version(), "-"],
        input=manifests, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def assert_all_valid(manifests: str, expected: int) -> None:
    report = conform(manifests)
    problems = [f"{r['kind']} {r['name']}: {r['msg']}" for r in report["resources"]]
    assert problems == []
    assert report["summary"] == {"valid": expected, "invalid": 0, "errors": 0, "skipped": 0}


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


# ------------------------------------------------------------------------------------------------ chart


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda v: v.stem if v else "defaults")
def test_every_chart_scenario_conforms(values: Path | None) -> None:
    proc = subprocess.run(
        [str(find_tool("helm")), "template", "st", str(CHART), "--namespace", "storyteller-system",
         "--include-crds", "--kube-version", kube_version(), *(["-f", str(values)] if values else [])],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert "CustomResourceDefinition" in kinds and kinds & {
        "ClusterRole",
        "Role",
    }  # RBAC: cluster-wide or not
    assert_all_valid(proc.stdout, len(docs))  # the chart's own bytes: a duplicate key would fail here


# ---------------------------------------------------------------------------------------------- operator


def rich_tenant() -> dict[str, Any]:
    """Every optional pod-facing field set, so each renders into the manifests."""
    return tenant(
        {
            "providerSecrets": ["acme-openai", "acme-deepgram"],
            "worker": {
                "image": "registry.example.internal/storyteller-worker:1.2.3",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": 2048}},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "voice", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
                "podAnnotations": {"example.com/team": "voice"},
            },
            "observability": {"tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4317"}},
        }
    )


def keda_tenant(**spec: Any) -> dict[str, Any]:
    return tenant({"pool": {"autoscaler": "keda", "minReplicas": 0, "maxReplicas": 12}, **spec})


OPERATOR_CASES: dict[str, tuple[Callable[[], dict[str, Any]], dict[str, Any]]] = {
    "defaults": (tenant, {"pod_monitor_enabled": True}),
    "rich": (rich_tenant, {"pod_monitor_enabled": True, "replicas": 3}),
    "keda": (keda_tenant, {"pod_monitor_enabled": True, "keda_prometheus_url": PROMETHEUS}),
    "keda-suspended": (lambda: keda_tenant(suspend=True), {"keda_prometheus_url": PROMETHEUS}),
}


def rendered(case: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    make_tenant, options = OPERATOR_CASES[case]
    obj = make_tenant()
    return obj, render.children(obj, **options)


@pytest.mark.parametrize("case", OPERATOR_CASES)
def test_the_operators_children_conform(case: str) -> None:
    obj, children = rendered(case)
    # The tenant too: the fields these cases set are real fields of the CRD.
    assert_all_valid(dump([obj, *children]), 1 + len(children))


def test_the_cases_cover_every_kind_the_operator_renders() -> None:
    kinds = {c["kind"] for case in OPERATOR_CASES for c in rendered(case)[1]}
    assert kinds == {
        "ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "NetworkPolicy",
        "PodMonitor", "ScaledObject",
    }  # fmt: skip


def test_the_rich_tenant_reaches_the_pod() -> None:
    (dep,) = [c for c in rendered("rich")[1] if c["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert {"nodeSelector", "tolerations", "affinity"} <= pod.keys()
    assert pod["containers"][0]["resources"]["limits"] == {"memory": 2048}  # a bare number is a Quantity


# ---------------------------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_conform(path: Path) -> None:
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert_all_valid(text, len(docs))


def test_the_example_tenant_is_checked_against_our_crd() -> None:
    (doc,) = yaml.safe_load_all((REPO / "examples" / "tenant.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("storyteller.dev/v1alpha1", "StorytellerDeployment")
    doc["spec"]["pool"]["maxReplicas"] = "5"  # a string where the CRD wants an integer
    (result,) = conform(dump([doc]))["resources"]
    assert result["status"] == "statusInvalid"
    assert "storytellerdeployment-storyteller-v1alpha1.json" in result["msg"]


# ---------------------------------------------------------------------------------------------- negative

CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: twice
  labels:
    app: storyteller
    app: storyteller
"""


def test_a_duplicated_key_is_rejected() -> None:
    report = conform(CONFIG_MAP)
    (result,) = report["resources"]
    assert result["status"] == "statusError" and 'key "app" already set' in result["msg"]
    assert report["summary"]["valid"] == 0


UNKNOWN_FIELDS = {
    "built-in": (
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: d}
        spec:
          replica: 2
          selector: {matchLabels: {a: b}}
          template: {metadata: {labels: {a: b}}, spec: {containers: []}}
        """,
        "/spec",
        "replica",
    ),
    "metadata": (
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c, lables: {a: b}}
        """,
        "/metadata",
        "lables",
    ),
    "our-crd": (
        """
        apiVersion: storyteller.dev/v1alpha1
        kind: StorytellerDeployment
        metadata: {name: t}
        spec:
          livekit: {url: "ws://lk:7880", credentialsSecret: lk}
          pool: {maxReplica: 3}
        """,
        "/spec/pool",
        "maxReplica",
    ),
}


@pytest.mark.parametrize("case", UNKNOWN_FIELDS)
def test_an_unknown_field_is_rejected(case: str) -> None:
    manifest, path, field = UNKNOWN_FIELDS[case]
    (result,) = conform(textwrap.dedent(manifest))["resources"]
    assert result["status"] == "statusInvalid"
    assert {"path": path, "msg": f"additional properties '{field}' not allowed"} in result["validationErrors"]


def test_a_kind_without_a_schema_is_an_error_not_a_skip() -> None:
    report = conform(dump([{"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "u"}}]))
    assert report["summary"] == {"valid": 0, "invalid": 0, "errors": 1, "skipped": 0}


# --------------------------------------------------------------------------------- the generator, pure


def test_file_names_are_kubeconforms() -> None:
    name = kube_schemas.file_name
    assert name("Deployment", "apps", "v1") == "deployment-apps-v1.json"
    assert name("ConfigMap", "", "v1") == "configmap-v1.json"  # the core group has no label
    assert name("NetworkPolicy", "networking.k8s.io", "v1") == "networkpolicy-networking-v1.json"
    assert name("ScaledObject", "keda.sh", "v1alpha1") == "scaledobject-keda-v1alpha1.json"


def test_crd_schema_is_strict_nullable_and_int_or_string() -> None:
    crd = {
        "spec": {
            "group": "example.com",
            "names": {"kind": "Thing"},
            "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "required": ["port"], "properties": {
                        "port": {"x-kubernetes-int-or-string": True,
                                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                 "properties": {"x": {"type": "string"}}},
                    }},
                },
            }}}],
        }
    }  # fmt: skip
    schema = kube_schemas.crd_schemas([crd], {"type": "object"})["thing-example-v1.json"]
    spec = schema["properties"]["spec"]
    assert schema["additionalProperties"] is False and spec["additionalProperties"] is False
    assert spec["properties"]["port"]["type"] == ["integer", "string"]  # required: not nullable
    assert spec["properties"]["mode"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert "additionalProperties" not in spec["properties"]["free"]
    assert schema["properties"]["kind"]["enum"] == ["Thing"]
    assert schema["properties"]["apiVersion"]["enum"] == ["example.com/v1"]

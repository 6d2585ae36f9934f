"""What a tenant cannot take from others on a real API server: an object whose name one of its children
would have stays untouched (not changed, not adopted, not deleted with the tenant), and the tenant says
so (Degraded, NameConflict, naming the object)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.real_platform import condition, get_sd, is_ready, tenant_yaml, wait_for
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    operator,
    secrets_yaml,
)

ROLE = {"iam.example.com/role": "arn:example:iam::1:role/payments"}  # a cloud identity, say


def degraded_by_conflict(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    sd = get_sd(cluster, ns)
    return sd if condition(sd, "Degraded").get("reason") == "NameConflict" else None


def get(cluster: Cluster, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl("-n", ns, "get", kind, name, "--ignore-not-found", "-o", "json").stdout
    found: dict[str, Any] | None = json.loads(out) if out.strip() else None
    return found


def test_a_service_account_made_by_someone_else_is_not_taken_over(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "acme-worker", "namespace": namespace, "annotations": ROLE},
    }
    cluster.apply(yaml.safe_dump(theirs))
    cluster.apply(secrets_yaml(namespace))
    cluster.apply(tenant_yaml(namespace))

    sd = wait_for("Degraded: NameConflict", lambda: degraded_by_conflict(cluster, namespace))
    message = condition(sd, "Degraded")["message"]
    assert "ServiceAccount acme-worker" in message and namespace in message, message
    assert condition(sd, "Ready")["status"] == "False"
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=acme"
    )
    assert any(e["reason"] == "NameConflict" for e in events["items"])
    sa = get(cluster, namespace, "serviceaccount", "acme-worker")
    assert sa is not None
    assert "ownerReferences" not in sa["metadata"] and "automountServiceAccountToken" not in sa
    assert ROLE.items() <= sa["metadata"]["annotations"].items()
    assert not any(
        m.get("manager") == "storyteller-operator" for m in sa["metadata"].get("managedFields", [])
    )
    # Nothing after it was applied: no pod runs as someone else's ServiceAccount.
    assert get(cluster, namespace, "deployment", "acme-worker") is None

    # Deleting the tenant leaves it (the garbage collector follows owner references, and it has none).
    cluster.kubectl("-n", namespace, "delete", "sd", "acme", "--wait=true", "--timeout=60s")
    assert get(cluster, namespace, "serviceaccount", "acme-worker") is not None

    # Once the name is free, the tenant gets its own.
    cluster.kubectl("-n", namespace, "delete", "serviceaccount", "acme-worker")
    cluster.apply(tenant_yaml(namespace))
    sd = wait_for("Ready with its own ServiceAccount", lambda: is_ready(cluster, namespace))
    sa = get(cluster, namespace, "serviceaccount", "acme-worker") or {}
    assert sa["metadata"]["ownerReferences"][0]["uid"] == sd["metadata"]["uid"]


def test_a_later_child_taken_by_someone_else_is_left_alone_and_named(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    theirs = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "acme-worker", "namespace": namespace},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "payments"}}},
    }
    cluster.apply(yaml.safe_dump(theirs))
    cluster.apply(secrets_yaml(namespace))
    cluster.apply(tenant_yaml(namespace))
    sd = wait_for("Degraded: NameConflict", lambda: degraded_by_conflict(cluster, namespace))
    assert "PodDisruptionBudget acme-worker" in condition(sd, "Degraded")["message"]
    pdb = get(cluster, namespace, "pdb", "acme-worker") or {}
    assert pdb["spec"] == theirs["spec"] and "ownerReferences" not in pdb["metadata"]

"""What a tenant cannot take from others on a real API server: an object whose name one of its children
would have stays untouched (not changed, not adopted, not deleted with the tenant), and the tenant says
so (Degraded, NameConflict, naming the object); a Secret its owner did not label for tenants is not
mounted (SecretNotAllowed); pods over the platform's limits are not created (PlatformLimit); and a child
the API server refuses (a quota) stops neither the other children nor the pool's sizing."""

from __future__ import annotations

import json
from typing import Any

import yaml

from storyteller_api import contract
from storyteller_devkit.cluster import Cluster
from storyteller_devkit.real_platform import condition, get_sd, is_ready, tenant_yaml, wait_for
from storyteller_operator import tenancy
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    deploy_ready_tenant,
    operator,
    patch_spec,
    secrets_yaml,
)

ROLE = {"iam.example.com/role": "arn:example:iam::1:role/payments"}  # a cloud identity, say


def degraded_by(cluster: Cluster, ns: str, reason: str) -> dict[str, Any] | None:
    sd = get_sd(cluster, ns)
    return sd if condition(sd, "Degraded").get("reason") == reason else None


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

    sd = wait_for("Degraded: NameConflict", lambda: degraded_by(cluster, namespace, "NameConflict"))
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
    sd = wait_for("Degraded: NameConflict", lambda: degraded_by(cluster, namespace, "NameConflict"))
    assert "PodDisruptionBudget acme-worker" in condition(sd, "Degraded")["message"]
    pdb = get(cluster, namespace, "pdb", "acme-worker") or {}
    assert pdb["spec"] == theirs["spec"] and "ownerReferences" not in pdb["metadata"]


def test_a_secret_its_owner_did_not_give_to_tenants_is_never_mounted(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    cluster.apply(secrets_yaml(namespace))
    payroll = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "payroll", "namespace": namespace},
        "stringData": {"DB_PASSWORD": "hunter2"},
    }
    cluster.apply(yaml.safe_dump(payroll))
    cluster.apply(tenant_yaml(namespace, providerSecrets=["acme-openai", "payroll"]))

    sd = wait_for("Degraded: SecretNotAllowed", lambda: degraded_by(cluster, namespace, "SecretNotAllowed"))
    message = condition(sd, "Degraded")["message"]
    assert '"payroll" (spec.providerSecrets[1])' in message and tenancy.SECRET_LABEL in message, message
    assert get(cluster, namespace, "deployment", "acme-worker") is None  # no pod ever reads it
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=acme"
    )
    assert any(e["reason"] == "SecretNotAllowed" for e in events["items"])

    # Its owner gives it to this tenant by name: the pods roll.
    cluster.kubectl("-n", namespace, "label", "secret", "payroll", f"{tenancy.SECRET_LABEL}=acme")
    wait_for("Ready once the Secret is labelled for it", lambda: is_ready(cluster, namespace))


def test_pods_over_a_platform_limit_are_not_created_and_the_limit_is_named(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    cluster.apply(secrets_yaml(namespace))
    worker = {"podAnnotations": ROLE, "tolerations": [{"operator": "Exists"}]}
    cluster.apply(tenant_yaml(namespace, worker=worker))
    sd = wait_for("Degraded: PlatformLimit", lambda: degraded_by(cluster, namespace, "PlatformLimit"))
    message = condition(sd, "Degraded")["message"]
    assert "spec.worker.tolerations[0]" in message and "tenants.allowedTolerationKeys" in message, message
    assert get(cluster, namespace, "deployment", "acme-worker") is None
    patch_spec(cluster, namespace, {"worker": {"tolerations": None}})
    sd = wait_for(
        "the annotation named next",
        lambda: (
            (s := degraded_by(cluster, namespace, "PlatformLimit"))
            and "iam.example.com/role" in condition(s, "Degraded")["message"]
            and s
        ),
    )
    patch_spec(cluster, namespace, {"worker": {"podAnnotations": None}})
    wait_for("Ready within the limits", lambda: is_ready(cluster, namespace))


def test_a_refused_config_map_holds_the_rollout_but_not_the_pools_size(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    deploy_ready_tenant(cluster, namespace)
    before = get(cluster, namespace, "deployment", "acme-worker")
    assert before is not None
    template = before["spec"]["template"]["metadata"]["annotations"][contract.CONFIG_HASH_ANNOTATION]
    count = len(cluster.kubectl_json("-n", namespace, "get", "configmaps")["items"])
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-more-configmaps", "namespace": namespace},
        "spec": {"hard": {"count/configmaps": str(count)}},
    }
    cluster.apply(yaml.safe_dump(quota))
    # Admission counts against the quota's status: wait until the quota controller has written it.
    wait_for(
        "the quota in force",
        lambda: (
            (get(cluster, namespace, "resourcequota", "no-more-configmaps") or {})
            .get("status", {})
            .get("used", {})
            .get("count/configmaps")
            == str(count)
        ),
    )
    # A new config (a new ConfigMap, refused by the quota) and a bigger pool, in one edit.
    patch_spec(cluster, namespace, {"persona": "Your name is Whale.", "pool": {"minReplicas": 3}})

    sd = wait_for("Degraded: ApplyFailed", lambda: degraded_by(cluster, namespace, "ApplyFailed"))
    message = condition(sd, "Degraded")["message"]
    assert "ConfigMap acme-config-" in message and "quota" in message.lower(), message
    dep = wait_for(
        "the pool resized all the same",
        lambda: (
            (d := get(cluster, namespace, "deployment", "acme-worker")) and d["spec"]["replicas"] == 3 and d
        ),
    )
    # ... and not rolled onto a config that is not there.
    assert dep["spec"]["template"]["metadata"]["annotations"][contract.CONFIG_HASH_ANNOTATION] == template

    cluster.kubectl("-n", namespace, "delete", "resourcequota", "no-more-configmaps")
    sd = wait_for("Ready on the new config once the quota is gone", lambda: is_ready(cluster, namespace))
    assert sd["status"]["configHash"] != template

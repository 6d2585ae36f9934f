"""`autoscaler: keda` on the local control plane, against KEDA's own ScaledObject CRD.

KEDA itself is not run here (its operator and metrics adapter are a large build, and its HPA needs the
aggregated external-metrics API). What it relies on is real: the ScaledObject the operator renders is
stored by the API server under KEDA's CRD schema without a field pruned; the HPA KEDA creates writes
the scale subresource, which `kubectl scale` drives through the same endpoint; and the trigger's
PromQL is evaluated on a real Prometheus scraping a real worker (tests/e2e/test_voice_session.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storyteller_devkit.cluster import Cluster, keda_crd
from storyteller_devkit.real_platform import wait_established
from storyteller_operator import render
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    condition,
    deploy_ready_tenant,
    get_sd,
    operator,
    patch_spec,
    wait_for,
    worker_pods,
    worker_replicas,
)
from tests.fakes.worker_status import FakePool

PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
POOL = {
    "autoscaler": "keda",
    "minReplicas": 1,
    "maxReplicas": 4,
    "sessionsPerWorker": 2,
    "spareSessions": 1,
    "scaleDownDelaySeconds": 60,
    "drainTimeoutSeconds": 1,
}


@pytest.fixture(scope="module")
def keda_crds(cluster: Cluster) -> Iterator[None]:
    path = keda_crd()
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    try:
        wait_established(cluster, "scaledobjects.keda.sh")
        yield
    finally:
        # Also when the wait failed: a KEDA CRD left served changes what later tests' operators ask for.
        cluster.kubectl("delete", "crd", "scaledobjects.keda.sh", "--wait=false", check=False)


@pytest.fixture
def operator_env(keda_crds: None) -> dict[str, str]:
    return {"STORYTELLER_OPERATOR_PROMETHEUS_URL": PROMETHEUS_URL}


def _scaled_object(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    found = cluster.kubectl_json("-n", ns, "get", "scaledobjects.keda.sh")["items"]
    return found[0] if found else None


def test_keda_tenant_gets_a_valid_scaled_object_and_follows_its_scale_subresource(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    sd = deploy_ready_tenant(cluster, namespace, pool=POOL)
    so = wait_for("the ScaledObject", lambda: _scaled_object(cluster, namespace))
    assert so["metadata"]["name"] == "acme-worker"
    assert so["metadata"]["ownerReferences"][0]["uid"] == sd["metadata"]["uid"]
    # KEDA's structural schema prunes unknown fields silently: everything rendered must have been kept.
    rendered = render.scaled_object(sd, PROMETHEUS_URL)["spec"]
    assert render.project(rendered, so["spec"]) == rendered
    # The running size is written to spec.replicas (through the scale subresource, with a precondition),
    # so KEDA starts from it rather than "from zero".
    wait_for("spec.replicas seeded", lambda: get_sd(cluster, namespace)["spec"].get("replicas") == 1)

    # KEDA's HPA writes the scale subresource; kubectl scale uses the same endpoint.
    cluster.kubectl("-n", namespace, "scale", "sd", "acme", "--replicas=3")
    wait_for("the Deployment at 3", lambda: worker_replicas(cluster, namespace) == 3, deadline=30)
    scale = cluster.kubectl_json("-n", namespace, "get", "sd", "acme", "--subresource=scale")
    assert scale["spec"]["replicas"] == 3
    assert "app.kubernetes.io/instance=acme" in scale["status"]["selector"]  # what the HPA selects by
    wait_for(
        "3 pods with addresses",
        lambda: sum(1 for p in worker_pods(cluster, namespace) if p.get("status", {}).get("podIP")) == 3,
        deadline=90,
    )

    # Calls on one pod; then KEDA scales in to 1: the busy pod stays, priced by its sessions.
    fake = FakePool()
    try:
        fake.sync(worker_pods(cluster, namespace))
        busy = sorted(fake.workers)[1]
        fake.set(busy, 2)
        wait_for("activeSessions 2", lambda: get_sd(cluster, namespace)["status"].get("activeSessions") == 2)
        cluster.kubectl("-n", namespace, "scale", "sd", "acme", "--replicas=1")
        wait_for("the Deployment at 1", lambda: worker_replicas(cluster, namespace) == 1, deadline=30)
        remaining = wait_for(
            "the idle pods removed",
            lambda: [p["metadata"]["name"] for p in worker_pods(cluster, namespace)] == [busy] or None,
            deadline=90,
        )
        assert remaining is True
    finally:
        fake.close()

    # Leaving keda removes the ScaledObject (and with it KEDA's HPA), so nothing else writes the size.
    patch_spec(cluster, namespace, {"pool": {"autoscaler": "none"}})
    wait_for("the ScaledObject deleted", lambda: _scaled_object(cluster, namespace) is None, deadline=30)
    reasons = [
        e["reason"]
        for e in cluster.kubectl_json("-n", namespace, "get", "events")["items"]
        if e["involvedObject"].get("name") == "acme"
    ]
    assert "Deleted" in reasons


def test_suspend_pauses_the_scaled_object(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    deploy_ready_tenant(cluster, namespace, pool=POOL)
    wait_for("the ScaledObject", lambda: _scaled_object(cluster, namespace))
    patch_spec(cluster, namespace, {"suspend": True})

    def paused() -> bool:
        so = _scaled_object(cluster, namespace) or {}
        return bool(so.get("metadata", {}).get("annotations", {}).get("autoscaling.keda.sh/paused") == "true")

    wait_for("the ScaledObject paused", paused, deadline=30)
    wait_for("the pool at zero", lambda: worker_replicas(cluster, namespace) == 0, deadline=30)

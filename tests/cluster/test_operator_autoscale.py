"""The builtin autoscaler on the local control plane: sessions read from the pods drive the pool.

The test plays the workers (tests/fakes/worker_status.py: `GET :8081/worker` on each kwok pod's own
loopback address) and moves their session counts; the operator (a local process with the chart's
RBAC, reconciling every second) must scale up at once, scale down only after the delay, and remove
the idle pod, never the one with a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storyteller_devkit.cluster import Cluster
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    condition,
    deploy_ready_tenant,
    operator,
    wait_for,
    worker_pods,
    worker_replicas,
)
from tests.fakes.worker_status import FakePool

POOL = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "sessionsPerWorker": 2,
    "spareSessions": 1,
    "scaleDownDelaySeconds": 6,
    "drainTimeoutSeconds": 1,
}


@pytest.fixture
def fake_pool(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Iterator[FakePool]:  # noqa: F811
    """A Ready tenant with one pod, and a stand-in for that pod's worker (0 sessions)."""
    deploy_ready_tenant(cluster, namespace, pool=POOL)
    pool = FakePool()
    pool.sync(worker_pods(cluster, namespace))
    yield pool
    pool.close()


def test_load_scales_up_at_once_and_down_after_the_delay_removing_the_idle_pod(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
    fake_pool: FakePool,
) -> None:
    (first,) = fake_pool.workers
    wait_for("activeSessions 0 observed", lambda: _status(cluster, namespace).get("activeSessions") == 0)
    assert worker_replicas(cluster, namespace) == 1  # ceil((0 + 1 spare) / 2)

    # A step of load: 2 sessions + 1 spare need 2 pods, at once.
    fake_pool.set(first, 2)
    wait_for("the scale-up to 2", lambda: worker_replicas(cluster, namespace) == 2, deadline=15)
    wait_for(
        "2 pods with addresses",
        lambda: sum(1 for p in worker_pods(cluster, namespace) if p.get("status", {}).get("podIP")) == 2,
        deadline=60,
    )
    fake_pool.sync(worker_pods(cluster, namespace))
    (second,) = set(fake_pool.workers) - {first}

    # The calls move: the first pod's end, one starts on the second. Demand falls to 1 pod, but only
    # after scaleDownDelaySeconds; then the idle first pod goes and the busy second one stays.
    fake_pool.set(second, 1)
    fake_pool.set(first, 0)
    wait_for("activeSessions 1", lambda: _status(cluster, namespace).get("activeSessions") == 1)
    assert worker_replicas(cluster, namespace) == 2, "scaled down before scaleDownDelaySeconds"
    wait_for("the scale-down to 1", lambda: worker_replicas(cluster, namespace) == 1, deadline=30)
    remaining = wait_for(
        "the idle pod removed",
        lambda: [p["metadata"]["name"] for p in worker_pods(cluster, namespace)] == [second],
    )
    assert remaining

    # Each pod was priced by its sessions before the scale-down (what the ReplicaSet used).
    costs = {
        p["metadata"]["name"]: p["metadata"]
        .get("annotations", {})
        .get("controller.kubernetes.io/pod-deletion-cost")
        for p in worker_pods(cluster, namespace)
    }
    assert costs == {second: "1"}

    status = _status(cluster, namespace)
    assert status["desiredReplicas"] == 1 and status["lastScaleTime"]
    limited = condition({"status": status}, "ScalingLimited")
    assert limited["status"] == "False", limited


def test_demand_above_max_is_held_at_max_and_says_so(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
    fake_pool: FakePool,
) -> None:
    (first,) = fake_pool.workers
    fake_pool.set(first, 9)  # ceil((9 + 1 spare) / 2) = 5 pods or more wanted, max is 3
    wait_for("the pool at max", lambda: worker_replicas(cluster, namespace) == 3, deadline=15)

    def limited() -> dict[str, Any] | None:
        cond = condition({"status": _status(cluster, namespace)}, "ScalingLimited")
        return cond if cond.get("status") == "True" else None

    cond = wait_for("ScalingLimited", limited)
    assert cond["reason"] == "AtMaxReplicas" and "held at 3" in cond["message"], cond
    assert cond["message"].startswith("9 active sessions, 1 spare slot"), cond


def _status(cluster: Cluster, ns: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.kubectl_json("-n", ns, "get", "sd", "acme").get("status") or {}
    return status

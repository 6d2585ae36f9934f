"""Operator replicas electing a leader on a Lease, on the local control plane (kwok runs no containers, so
the replicas are local processes under the chart's ServiceAccount, each with its own identity).

Exactly one reconciles: the others watch, log no reconcile and count none. A leader killed with SIGKILL
(no release) is replaced, and a tenant change made after the kill reconciled, within 20 s (client-go's
15 s lease, a poll, a request); a leader stopped with SIGTERM releases the Lease and is replaced at once.
A stall of the API server: test_operator_leadership_stall.py. Waits are polls with deadlines.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.operator_process import OperatorProcess
from storyteller_devkit.real_platform import get_sd, wait_for
from storyteller_operator import leadership
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    RELEASE_NS,
    _sa_kubeconfig,
    chart,
    deploy_ready_tenant,
    patch_spec,
)

LEASE = "storyteller-leader"  # the chart's for the release "storyteller", the operator's default
# A killed leader's tenants are reconciled again within this: the Lease's 15 s, the poll that saw the last
# renewal late, a request.
TAKEOVER_BOUND_S = 20.0


@pytest.fixture
def replicas(cluster: Cluster, chart: None, tmp_path: Path) -> Iterator[dict[str, OperatorProcess]]:  # noqa: F811
    """Three operator processes (not started), a, b and c, on the chart's Lease."""
    env = {**cluster.env, "KUBECONFIG": str(_sa_kubeconfig(cluster, tmp_path / "operator.kubeconfig"))}
    env.pop("STORYTELLER_OPERATOR_NAMESPACES", None)
    # At debug every reconcile logs "reconciled", also those that wrote nothing.
    args = ["--recheck-seconds", "1", "--resync-seconds", "3", "--log-format", "json", "--log-level", "debug"]
    ops = {
        n: OperatorProcess(env, tmp_path / f"operator-{n}.log", args, identity=f"replica-{n}")
        for n in ("a", "b", "c")
    }
    try:
        yield ops
    finally:
        for op in ops.values():
            if op.proc is not None:
                op.stop()  # gracefully: the next test's operator finds the Lease released
                print(f"operator log {op.identity}: {op.log_path}\n" + op.log_path.read_text()[-3000:])


def lease(cluster: Cluster) -> dict[str, Any]:
    spec: dict[str, Any] = cluster.kubectl_json("-n", RELEASE_NS, "get", "lease", LEASE)["spec"]
    return spec


def logged(op: OperatorProcess, message: str) -> list[dict[str, Any]]:
    return [r for r in op.records() if r.get("message") == message]


def reconciles_counted(op: OperatorProcess) -> float:
    return sum(
        op.metric("storyteller_operator_reconcile_total", result=r) for r in ("changed", "unchanged", "error")
    )


def at(record: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record["time"])


def observed(cluster: Cluster, namespace: str, generation: int) -> bool:
    return int(get_sd(cluster, namespace).get("status", {}).get("observedGeneration") or 0) >= generation


def change_the_tenant(cluster: Cluster, namespace: str, instructions: str) -> int:
    """A spec change (a new generation) only a reconcile can observe; its generation."""
    patch_spec(cluster, namespace, {"story": {"instructions": instructions}})
    return int(get_sd(cluster, namespace)["metadata"]["generation"])


def test_one_replica_reconciles_and_a_killed_or_stopped_leader_is_replaced(
    cluster: Cluster, namespace: str, replicas: dict[str, OperatorProcess]
) -> None:
    a, b, c = replicas["a"], replicas["b"], replicas["c"]
    a.start()
    # A Lease a killed operator of an earlier run still holds expires first.
    wait_for("replica a to lead", a.leading, deadline=leadership.LEASE_DURATION_S + 15)
    b.start()
    wait_for(
        "replica b to follow a", lambda: [r for r in logged(b, "following") if r["holder"] == a.identity]
    )
    assert lease(cluster)["holderIdentity"] == a.identity

    deploy_ready_tenant(cluster, namespace)
    generation = change_the_tenant(cluster, namespace, "Tell a short story about a lighthouse.")
    wait_for("the change reconciled", lambda: observed(cluster, namespace, generation))
    wait_for("a few rechecks by the leader", lambda: len(logged(a, "reconciled")) >= 5, deadline=30)
    # The follower watched the same tenant all along and reconciled nothing: no log line, no count.
    assert logged(b, "reconciled") == [] and reconciles_counted(b) == 0
    assert not b.leading() and a.leading()

    # SIGKILL: no release. The follower takes over once the Lease expires and reconciles what changed since.
    a.kill()
    killed = time.monotonic()
    generation = change_the_tenant(cluster, namespace, "Tell a short story about a harbour.")
    wait_for(
        "b to reconcile a change made after the leader's kill",
        lambda: observed(cluster, namespace, generation),
        deadline=TAKEOVER_BOUND_S - (time.monotonic() - killed),
        every=0.1,
    )
    takeover_s = time.monotonic() - killed
    (took,) = logged(b, "leading")
    assert took["how"] == "expired" and lease(cluster)["holderIdentity"] == b.identity
    print(f"takeover after SIGKILL: the change reconciled {takeover_s:.1f} s after the kill")

    # SIGTERM: the leader lets its reconciles finish and releases the Lease; c takes it a second later.
    c.start()
    wait_for(
        "replica c to follow b", lambda: [r for r in logged(c, "following") if r["holder"] == b.identity]
    )
    assert logged(c, "reconciled") == [] and reconciles_counted(c) == 0
    assert b.stop() == 0, "a SIGTERM ends the leader by itself, after releasing its Lease"
    stopped = time.monotonic()
    assert logged(b, "lease released")
    generation = change_the_tenant(cluster, namespace, "Tell a short story about a lantern.")
    wait_for(
        "c to reconcile a change made after b stopped",
        lambda: observed(cluster, namespace, generation),
        deadline=TAKEOVER_BOUND_S,
        every=0.1,
    )
    print(f"takeover after SIGTERM: the change reconciled {time.monotonic() - stopped:.1f} s after the stop")
    (took,) = logged(c, "leading")
    assert took["how"] == "released" and lease(cluster)["holderIdentity"] == c.identity

    # Never two writers: each replica's reconciles lie between its taking the Lease and its end.
    a_done = max(at(r) for r in logged(a, "reconciled"))
    b_runs = [at(r) for r in logged(b, "reconciled")]
    c_runs = [at(r) for r in logged(c, "reconciled")]
    assert b_runs and c_runs
    assert a_done < min(b_runs) and max(b_runs) < min(c_runs)
    assert not logged(a, "leadership lost") and not logged(b, "leadership lost")

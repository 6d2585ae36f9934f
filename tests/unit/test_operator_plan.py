"""The planner on hand-built snapshots: no Kube client, fake or real, anywhere."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from storyteller_api import contract
from storyteller_operator import plan as planner
from storyteller_operator import policy, render
from storyteller_operator.observe import Sessions, Snapshot
from storyteller_operator.tenant import Tenant
from tests.unit.test_operator_render import tenant

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
LONG_AGO = "2026-11-30T11:00:00Z"
CLOCK = 1000.0  # the planner's monotonic now


def pod(name: str, *, ready: bool = True, price: str | None = None, leaving: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "team-a"}
    if price is not None:
        meta["annotations"] = {contract.POD_DELETION_COST: price}
    if leaving:
        meta["deletionTimestamp"] = LONG_AGO
    cond = {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": LONG_AGO}
    return {"metadata": meta, "status": {"conditions": [cond]}}


def deployment(replicas: int, autoscaler: str = "builtin") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "acme-worker",
            "annotations": {contract.AUTOSCALER_ANNOTATION: autoscaler},
            "ownerReferences": [{"uid": "uid-1"}],
            "generation": 1,
        },
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas},
    }


def snapshot(
    spec: dict[str, Any] | None = None,
    *,
    dep: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    per_pod: dict[str, int] | None = None,
    **kw: Any,
) -> Snapshot:
    obj = tenant(spec)
    obj["metadata"]["resourceVersion"] = "7"
    sessions = (
        None if per_pod is None else Sessions(per_pod=per_pod, where="GET :8081/worker", settle_seconds=5)
    )
    fields: dict[str, Any] = {
        "tenant": Tenant.from_object(obj),
        "status": {},
        "deployment": dep,
        "missing_secrets": [],
        "secret_versions": {},
        "agent_name_held": False,
        "pod_monitor_served": False,
        "keda_served": None,
        "scaled_object_checked": False,
        "scaled_object": None,
        "pods": pods or [],
        "sessions": sessions,
        "observed_at": NOW,
    }
    return Snapshot(**{**fields, **kw})


def make(snap: Snapshot, memory: planner.Memory | None = None, url: str | None = None) -> planner.Plan:
    return planner.plan(snap, memory or planner.Memory(), prometheus_url=url, now=CLOCK)


def deployment_replicas(p: planner.Plan) -> int:
    (dep,) = [m for m in p.children if m["kind"] == "Deployment"]
    return int(dep["spec"]["replicas"])


def test_builtin_sizes_on_sessions_and_prices_only_what_changed() -> None:
    pods = [pod("a", price="3"), pod("b")]
    p = make(snapshot(dep=deployment(2), pods=pods, per_pod={"a": 3, "b": 2}))
    # ceil((5 active + 2 spare) / 4 per worker) = 2
    assert p.sizing.desired == deployment_replicas(p) == 2
    assert p.sizing.active == 5
    assert p.prices == {"b": "2"}  # a's price is already right
    assert p.memory.history is not None and p.seed_replicas is None


def test_a_silent_ready_worker_holds_the_pool_and_says_so() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    idle_long = planner.Memory(history=policy.History(recommendations=((0.0, 1),)))
    p = make(snapshot(dep=deployment(3), pods=pods, per_pod={"a": 0}), idle_long)
    assert p.sizing.desired == 3  # the policy alone would shrink to 1
    assert p.scaling_problem is not None and p.scaling_problem[0] == "WorkersNotReporting"
    assert "2 of 3 ready workers" in p.scaling_problem[1]


def test_a_scale_in_waits_one_plan_for_new_prices_then_goes() -> None:
    # Idle for longer than the delay: the policy shrinks to the floor.
    old = policy.History(recommendations=((0.0, 1),))
    pods = [pod("a", price="0"), pod("b", price="1")]
    first = make(
        snapshot(dep=deployment(2), pods=pods, per_pod={"a": 0, "b": 0}), planner.Memory(history=old)
    )
    assert first.prices == {"b": "0"} and first.sizing.desired == 2 and first.memory.deferred_scale_in
    pods = [pod("a", price="0"), pod("b", price="0")]
    second = make(snapshot(dep=deployment(2), pods=pods, per_pod={"a": 0, "b": 0}), first.memory)
    assert second.prices == {} and second.sizing.desired == 1 and not second.memory.deferred_scale_in


def test_leaving_pods_are_not_repriced() -> None:
    p = make(snapshot(dep=deployment(1), pods=[pod("a", leaving=True)], per_pod={"a": 2}))
    assert p.prices == {}


def test_a_manual_tenant_without_replicas_is_seeded_from_the_running_size() -> None:
    p = make(snapshot({"pool": {"autoscaler": "none"}}, dep=deployment(3)))
    assert p.seed_replicas == 3 and p.tenant.spec.replicas == 3
    assert deployment_replicas(p) == 3
    # The seeded size is not part of the worker config: no rollout.
    assert p.config_hash == make(snapshot({"pool": {"autoscaler": "none"}})).config_hash


def test_a_seed_is_clamped_and_only_comes_from_builtin_or_nothing() -> None:
    spec = {"pool": {"autoscaler": "none", "maxReplicas": 2}, "replicas": 1}
    assert make(snapshot(spec, dep=deployment(5, "none"))).seed_replicas is None  # the user's 1 stands
    assert make(snapshot(spec, dep=deployment(5, "builtin"))).seed_replicas == 2  # stale: reseeded, clamped


def test_keda_without_a_prometheus_address_renders_no_scaled_object() -> None:
    p = make(snapshot({"pool": {"autoscaler": "keda"}}))
    assert p.scaling_problem is not None and p.scaling_problem[0] == "KedaNotConfigured"
    assert "ScaledObject" not in {m["kind"] for m in p.children}
    served = make(snapshot({"pool": {"autoscaler": "keda"}}, keda_served=True), url="http://prom:9090")
    assert served.scaling_problem is None
    assert "ScaledObject" in {m["kind"] for m in served.children}


def test_prune_only_an_owned_scaled_object_and_report_it() -> None:
    theirs = {"metadata": {"ownerReferences": [{"uid": "someone-else"}]}}
    assert not make(snapshot(scaled_object_checked=True, scaled_object=theirs)).prune_scaled_object
    ours = {"metadata": {"ownerReferences": [{"uid": "uid-1"}]}}
    snap = snapshot(scaled_object_checked=True, scaled_object=ours)
    p = make(snap)
    assert p.prune_scaled_object
    _, events = planner.report(p, snap, planner.Applied((), None, None), "2026-11-30T12:00:00Z")
    assert events[0].reason == "Deleted" and "ScaledObject/acme-worker" in events[0].message


def test_report_turns_an_apply_error_into_degraded_and_a_warning() -> None:
    snap = snapshot(dep=deployment(1))
    p = make(snap)
    applied = planner.Applied(
        ["ConfigMap/acme-config"], "applying Deployment acme-worker: 422 bad", snap.deployment
    )
    status, events = planner.report(p, snap, applied, "2026-11-30T12:00:00Z")
    assert status["phase"] == "Degraded"
    assert [(e.type, e.reason) for e in events] == [("Normal", "Applied"), ("Warning", "ApplyFailed")]


def test_missing_secrets_and_the_pod_monitor_come_from_the_snapshot() -> None:
    snap = snapshot(missing_secrets=[("lk-creds", "spec.livekit.credentialsSecret")], pod_monitor_served=True)
    p = make(snap)
    assert "PodMonitor" in {m["kind"] for m in p.children}
    status, _ = planner.report(p, snap, planner.Applied((), None, None), "2026-11-30T12:00:00Z")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "SecretNotFound" and "spec.livekit.credentialsSecret" in degraded["message"]


def test_plan_is_pure_same_input_same_plan() -> None:
    snap = snapshot(dep=deployment(2), pods=[pod("a")], per_pod={"a": 1})
    assert make(snap) == make(dataclasses.replace(snap))
    assert render.worker_name(make(snap).tenant.name) == "acme-worker"

"""Static pool sizes (autoscaler none/keda, suspend) and the KEDA ScaledObject: rendering and reconciling."""

from __future__ import annotations

from typing import Any

import pytest

from storyteller_api import contract
from storyteller_api.spec import TenantSpec
from storyteller_operator import policy, render, scaling
from storyteller_operator import status as st
from storyteller_operator.reconcile import Reconciler
from storyteller_operator.render import KEDA_API
from tests.unit.test_operator_reconcile import Events, FakeKube, secret
from tests.unit.test_operator_render import tenant

PROM = "http://prometheus.monitoring:9090"


@pytest.mark.parametrize(
    ("spec", "replicas", "requested", "limited"),
    [
        ({}, 1, None, None),  # builtin before any session count: the floor
        ({"replicas": 7}, 1, None, None),  # the builtin autoscaler ignores spec.replicas
        ({"pool": {"autoscaler": "none"}}, 1, None, None),  # none without spec.replicas: the floor
        ({"pool": {"autoscaler": "none"}, "replicas": 4}, 4, 4, None),
        ({"pool": {"autoscaler": "keda"}, "replicas": 4}, 4, 4, None),
        ({"pool": {"autoscaler": "none", "maxReplicas": 5}, "replicas": 9}, 5, 9, policy.AT_MAX),
        ({"pool": {"autoscaler": "none", "minReplicas": 2}, "replicas": 0}, 2, 0, policy.AT_MIN),
        ({"pool": {"autoscaler": "none"}, "replicas": 4, "suspend": True}, 0, None, None),
    ],
)
def test_static_size(spec: dict[str, Any], replicas: int, requested: int | None, limited: str | None) -> None:
    assert scaling.static_size(TenantSpec.model_validate(tenant(spec)["spec"])) == scaling.StaticSize(
        replicas, requested, limited
    )


def test_spec_replicas_resizes_without_rolling_the_pool() -> None:
    a = tenant({"pool": {"autoscaler": "none"}, "replicas": 2})
    b = tenant({"pool": {"autoscaler": "none"}, "replicas": 5})
    assert render.deployment(a)["spec"]["replicas"] == 2 and render.deployment(b)["spec"]["replicas"] == 5
    assert "replicas" not in render.worker_config("acme", "team-a", b["spec"])  # the worker refuses it
    template = render.deployment(a)["spec"]["template"]
    assert template == render.deployment(b)["spec"]["template"]  # same pods: a resize, not a rollout


def keda_tenant(**spec: Any) -> dict[str, Any]:
    pool = {
        "autoscaler": "keda",
        "minReplicas": 2,
        "maxReplicas": 12,
        "sessionsPerWorker": 3,
        "spareSessions": 5,
        "scaleDownDelaySeconds": 120,
    }
    return tenant({"pool": pool, **spec})


def test_scaled_object_is_the_builtin_formula_on_the_scale_subresource() -> None:
    so = render.scaled_object(keda_tenant(), PROM)
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    assert so["metadata"]["name"] == render.worker_name("acme")
    assert so["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "name": "acme",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 12)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    # AverageValue: the HPA asks for ceil(value / threshold) = ceil((active + spare) / sessionsPerWorker).
    assert trigger["metadata"] == {
        "serverAddress": PROM,
        "query": '(sum(storyteller_sessions_active{namespace="team-a", tenant="acme"}) or vector(0)) + 5',
        "threshold": "3",
    }
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # Tolerance 0: with the HPA's default 10 %, a full pool of 5+ pods would never grow ((4N+2)/4N <= 1.1).
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 120, "tolerance": "0"}
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0 and behavior["scaleUp"]["tolerance"] == "0"
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 12, "periodSeconds": 15}]
    assert "annotations" not in so["metadata"]


def test_scale_down_window_is_capped_at_the_hpas_hour() -> None:
    t = tenant({"pool": {"autoscaler": "keda", "scaleDownDelaySeconds": 7200}})
    so = render.scaled_object(t, PROM)
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 3600,
        "tolerance": "0",
    }
    assert so["spec"]["cooldownPeriod"] == 7200  # KEDA's own delay has no such limit


def test_suspend_pauses_the_scaled_object() -> None:
    so = render.scaled_object(keda_tenant(suspend=True), PROM)
    assert so["metadata"]["annotations"] == {"autoscaling.keda.sh/paused": "true"}


def test_scaled_object_only_for_keda_with_an_address() -> None:
    def kinds(t: dict[str, Any], url: str | None) -> list[str]:
        return [c["kind"] for c in render.children(t, keda_prometheus_url=url)]

    assert kinds(keda_tenant(), PROM)[-1] == "ScaledObject"
    assert "ScaledObject" not in kinds(keda_tenant(), None)
    assert "ScaledObject" not in kinds(tenant(), PROM)
    assert "ScaledObject" not in kinds(tenant({"pool": {"autoscaler": "none"}}), PROM)


# ----------------------------------------------------------------------------------------- reconcile


def cluster_with(t: dict[str, Any], *, keda_served: bool) -> FakeKube:
    kube = FakeKube()
    kube.add(t)
    kube.add(secret("lk-creds"))
    if keda_served:
        kube.apis.add(KEDA_API)
    return kube


def reconciler(kube: FakeKube, events: Events, url: str | None = PROM) -> Reconciler:
    return Reconciler(kube, events, clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False,
                      prometheus_url=url)  # fmt: skip


def limited(kube: FakeKube) -> dict[str, Any]:
    status = kube.objects[(contract.KIND, "team-a", "acme")]["status"]
    return dict(st.condition(status, st.SCALING_LIMITED) or {})


def test_keda_tenant_gets_its_scaled_object_and_spec_replicas_sizes_the_pool() -> None:
    kube, events = cluster_with(keda_tenant(replicas=4), keda_served=True), Events()
    reconciler(kube, events).reconcile("team-a", "acme")
    assert ("ScaledObject", "team-a", "acme-worker") in kube.objects
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 4
    cond = limited(kube)
    assert (cond["status"], cond["reason"]) == ("False", "WithinBounds")
    assert cond["message"] == "spec.replicas asks for 4 workers, within the pool's bounds"


@pytest.mark.parametrize(
    ("keda_served", "url", "reason", "names"),
    [
        (False, PROM, "KedaNotInstalled", "keda.sh/v1alpha1/ScaledObject"),
        (True, None, "KedaNotConfigured", "chart value prometheus.url"),
    ],
)
def test_keda_tenant_without_keda_says_why_and_keeps_serving(
    keda_served: bool, url: str | None, reason: str, names: str
) -> None:
    kube, events = cluster_with(keda_tenant(), keda_served=keda_served), Events()
    rec = reconciler(kube, events, url)
    rec.reconcile("team-a", "acme")
    assert ("ScaledObject", "team-a", "acme-worker") not in kube.objects
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 2  # the floor
    cond = limited(kube)
    assert (cond["status"], cond["reason"]) == ("True", reason)
    assert names in cond["message"] and "stays at 2 workers" in cond["message"]
    assert [e for e in events.posted if e[1] == reason] == [("Warning", reason, cond["message"])]
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    status = kube.objects[(contract.KIND, "team-a", "acme")]["status"]
    assert status["phase"] == "Ready"  # the pool serves; only its scaling is stuck
    assert len([e for e in events.posted if e[1] == reason]) == 1  # no repeat while unchanged


def test_leaving_keda_deletes_the_scaled_object() -> None:
    kube, events = cluster_with(keda_tenant(), keda_served=True), Events()
    rec = reconciler(kube, events)
    rec.reconcile("team-a", "acme")
    assert ("ScaledObject", "team-a", "acme-worker") in kube.objects
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["pool"]["autoscaler"] = "builtin"
    rec.reconcile("team-a", "acme", force_apply=False)
    assert ("ScaledObject", "team-a", "acme-worker") not in kube.objects
    assert (
        "Normal",
        "Deleted",
        "deleted ScaledObject/acme-worker: pool.autoscaler is not keda",
    ) in events.posted
    writes = len(kube.writes)
    rec.reconcile("team-a", "acme", force_apply=False)
    assert len(kube.writes) == writes  # nothing left to delete, nothing asked again


def test_a_scaled_object_owned_by_someone_else_is_left_alone() -> None:
    kube, events = cluster_with(tenant(), keda_served=True), Events()
    foreign = render.scaled_object(keda_tenant(), PROM)
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    kube.add(foreign)
    reconciler(kube, events).reconcile("team-a", "acme", force_apply=True)
    assert ("ScaledObject", "team-a", "acme-worker") in kube.objects


# ------------------------------------------------------------------ builtin, with workers not reporting


class Sessions:
    """A session source whose answers the test sets (pods absent from `answers` do not answer)."""

    where = "the test's answers"
    settle_seconds = 0.0

    def __init__(self) -> None:
        self.answers: dict[str, int] = {}

    def active_sessions(self, pods: Any) -> dict[str, int]:
        names = [p["metadata"]["name"] for p in pods]
        return {n: self.answers[n] for n in names if n in self.answers}


def running_pod(name: str, ready: bool = True) -> dict[str, Any]:
    ready_condition = {"type": "Ready", "status": "True" if ready else "False",
                       "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "labels": render.selector_labels("acme")},
        "status": {"phase": "Running", "podIP": "127.77.0.9", "conditions": [ready_condition]},
    }


def test_a_pool_is_never_shrunk_on_a_partial_count_and_says_why() -> None:
    t = tenant({"pool": {"minReplicas": 1, "maxReplicas": 5, "scaleDownDelaySeconds": 0}})
    kube, events, source = cluster_with(t, keda_served=False), Events(), Sessions()
    rec = Reconciler(kube, events, clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False,
                     sessions=source)  # fmt: skip
    kube.add(render.deployment(t, 3))
    for name in ("w-a", "w-b", "w-c"):
        kube.add(running_pod(name))
    source.answers = {"w-a": 0, "w-b": 0}  # w-c is silent: it may be busy
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3
    cond = limited(kube)
    assert (cond["status"], cond["reason"]) == ("True", "WorkersNotReporting")
    assert cond["message"] == (
        "1 of 3 ready workers did not report their sessions (the test's answers); "
        "the pool is held at 3 workers until they do"
    )

    source.answers["w-c"] = 1  # now everyone answers: 1 session + 2 spare fit in one pod of 4
    rec.reconcile("team-a", "acme")
    pods = {n: kube.objects[("Pod", "team-a", n)]["metadata"] for n in ("w-a", "w-b", "w-c")}
    costs = {n: meta["annotations"]["controller.kubernetes.io/pod-deletion-cost"] for n, meta in pods.items()}
    assert costs == {"w-a": "0", "w-b": "0", "w-c": "1"}  # priced first...
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3
    rec.reconcile("team-a", "acme")  # ...and shrunk once the ReplicaSet can have seen the prices
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 1
    assert (limited(kube)["status"], limited(kube)["reason"]) == ("False", "WithinBounds")


def test_prices_that_keep_moving_hold_a_scale_in_back_only_once() -> None:
    t = tenant({"pool": {"autoscaler": "none"}, "replicas": 1})
    kube, events, source = cluster_with(t, keda_served=False), Events(), Sessions()
    rec = Reconciler(kube, events, clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False,
                     sessions=source)  # fmt: skip
    kube.add(render.deployment(t, 2))
    kube.add(running_pod("w-a"))
    kube.add(running_pod("w-b"))
    source.answers = {"w-a": 0, "w-b": 2}
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 2  # held once
    source.answers = {"w-a": 0, "w-b": 3}  # a price moves again
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 1
    assert kube.objects[("Pod", "team-a", "w-b")]["metadata"]["annotations"] == {
        "controller.kubernetes.io/pod-deletion-cost": "3"
    }


def builtin_pool(kube: FakeKube, source: Sessions, replicas: int, pods: dict[str, bool]) -> Reconciler:
    """A builtin tenant whose Deployment runs `replicas`, with `pods` (name → terminating)."""
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    kube.add(render.deployment(t, replicas))
    for pod_name, terminating in pods.items():
        pod = running_pod(pod_name)
        if terminating:
            pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        kube.add(pod)
    return Reconciler(kube, Events(), clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False,
                      sessions=source)  # fmt: skip


def test_a_draining_pod_that_answers_does_not_hide_a_silent_running_one() -> None:
    t = tenant({"pool": {"scaleDownDelaySeconds": 0}})
    kube, source = cluster_with(t, keda_served=False), Sessions()
    rec = builtin_pool(kube, source, 2, {"w-old": True, "w-a": False, "w-b": False})
    source.answers = {"w-old": 1, "w-a": 0}  # as many answers as running pods, but w-b is silent
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 2
    assert limited(kube)["reason"] == "WorkersNotReporting"
    assert "annotate Pod/w-old" not in kube.writes  # leaving anyway: its price does not matter


def test_no_answer_at_all_is_no_count_not_zero() -> None:
    t = tenant({"pool": {"scaleDownDelaySeconds": 0}})
    kube, source = cluster_with(t, keda_served=False), Sessions()
    rec = builtin_pool(kube, source, 3, {"w-a": False, "w-b": False, "w-c": False})
    source.answers = {"w-a": 2, "w-b": 1, "w-c": 1}
    rec.reconcile("team-a", "acme")
    assert kube.objects[(contract.KIND, "team-a", "acme")]["status"]["activeSessions"] == 4
    source.answers = {}  # the source is down (Prometheus) or cut off (a NetworkPolicy)
    rec.reconcile("team-a", "acme")
    status = kube.objects[(contract.KIND, "team-a", "acme")]["status"]
    assert status["activeSessions"] == 4  # the last count, not 0
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3
    cond = limited(kube)
    assert (cond["status"], cond["reason"]) == ("True", "WorkersNotReporting")
    assert cond["message"].startswith("3 of 3 ready workers did not report")


def test_switching_to_keda_or_none_keeps_the_running_size() -> None:
    t = tenant({"pool": {"maxReplicas": 8}})
    kube, source = cluster_with(t, keda_served=True), Sessions()
    rec = builtin_pool(kube, source, 5, {})
    kube.objects[(contract.KIND, "team-a", "acme")]["spec"]["pool"]["autoscaler"] = "keda"
    rec.reconcile("team-a", "acme")
    assert "scale acme=5" in kube.writes  # KEDA starts from the running size, not from 0 → min
    assert kube.objects[(contract.KIND, "team-a", "acme")]["spec"]["replicas"] == 5
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 5
    writes = len(kube.writes)
    rec.reconcile("team-a", "acme")
    assert not [w for w in kube.writes[writes:] if w.startswith("scale")]  # seeded once


def test_a_new_keda_tenant_is_not_seeded_before_its_pool_exists() -> None:
    kube, events = cluster_with(keda_tenant(), keda_served=True), Events()
    reconciler(kube, events).reconcile("team-a", "acme")
    assert not [w for w in kube.writes if w.startswith("scale")]
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 2  # minReplicas


def test_a_keda_tenant_keeps_its_scaled_object_when_the_operator_loses_its_address() -> None:
    kube, events = cluster_with(keda_tenant(), keda_served=True), Events()
    reconciler(kube, events).reconcile("team-a", "acme")
    assert ("ScaledObject", "team-a", "acme-worker") in kube.objects
    restarted = reconciler(kube, events, url=None)
    restarted.reconcile("team-a", "acme", force_apply=True)
    assert ("ScaledObject", "team-a", "acme-worker") in kube.objects
    assert limited(kube)["reason"] == "KedaNotConfigured"


def test_a_pod_not_ready_yet_is_not_silent() -> None:
    t = tenant({"pool": {"scaleDownDelaySeconds": 0}})
    kube, source = cluster_with(t, keda_served=False), Sessions()
    rec = builtin_pool(kube, source, 2, {"w-a": False})
    kube.add(running_pod("w-new", ready=False))  # starting: its worker does not listen yet
    source.answers = {"w-a": 0}
    rec.reconcile("team-a", "acme")  # prices w-a, holds the scale-in once for the ReplicaSet to see it
    rec.reconcile("team-a", "acme")
    assert limited(kube)["reason"] != "WorkersNotReporting"
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 1


@pytest.mark.parametrize("autoscaler", ["none", "keda"])
def test_keda_and_none_never_shrink_on_a_partial_count_either(autoscaler: str) -> None:
    t = tenant({"pool": {"autoscaler": autoscaler}, "replicas": 1})
    kube, source = cluster_with(t, keda_served=True), Sessions()
    rec = builtin_pool(kube, source, 3, {"w-a": False, "w-b": False, "w-c": False})
    kube.objects[("Deployment", "team-a", "acme-worker")]["metadata"]["annotations"] = {
        contract.AUTOSCALER_ANNOTATION: autoscaler
    }
    source.answers = {"w-a": 0, "w-b": 0}  # w-c may be busy: it has no price
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3
    assert limited(kube)["reason"] == "WorkersNotReporting"


def switch(kube: FakeKube, autoscaler: str) -> None:
    kube.objects[(contract.KIND, "team-a", "acme")]["spec"]["pool"]["autoscaler"] = autoscaler


def test_every_switch_from_builtin_reseeds_a_stale_spec_replicas() -> None:
    t = tenant({"pool": {"maxReplicas": 8}})
    kube, source = cluster_with(t, keda_served=False), Sessions()
    rec = builtin_pool(kube, source, 5, {})
    switch(kube, "none")
    rec.reconcile("team-a", "acme")
    assert kube.objects[(contract.KIND, "team-a", "acme")]["spec"]["replicas"] == 5
    switch(kube, "builtin")
    rec.reconcile("team-a", "acme")
    kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] = 7  # the policy grew it
    switch(kube, "none")
    rec.reconcile("team-a", "acme")
    assert kube.objects[(contract.KIND, "team-a", "acme")]["spec"]["replicas"] == 7  # not the stale 5
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 7
    kube.objects[(contract.KIND, "team-a", "acme")]["spec"]["replicas"] = 3  # the user's kubectl scale
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3  # no reseed


def test_a_seed_that_cannot_be_written_does_not_block_the_reconcile() -> None:
    t = tenant({"pool": {"maxReplicas": 8}})
    kube, source = cluster_with(t, keda_served=False), Sessions()
    rec = builtin_pool(kube, source, 5, {})
    switch(kube, "none")
    kube.fail_kind = "scale"  # an older chart's RBAC without storytellerdeployments/scale
    rec.reconcile("team-a", "acme")
    assert "replicas" not in kube.objects[(contract.KIND, "team-a", "acme")]["spec"]
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 5
    assert kube.objects[(contract.KIND, "team-a", "acme")]["status"]["observedGeneration"] == 1


def test_a_fresh_operator_prunes_the_scaled_object_of_a_tenant_that_left_keda() -> None:
    kube, events = cluster_with(keda_tenant(), keda_served=True), Events()
    reconciler(kube, events).reconcile("team-a", "acme")
    assert ("ScaledObject", "team-a", "acme-worker") in kube.objects
    switch(kube, "none")
    reconciler(kube, events).reconcile("team-a", "acme", force_apply=False)  # knows nothing it applied
    assert ("ScaledObject", "team-a", "acme-worker") not in kube.objects

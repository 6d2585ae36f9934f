"""The reconciler and status logic against an in-memory fake API server (no cluster)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes.client import ApiException

from storyteller_api import contract
from storyteller_operator import plan as planner
from storyteller_operator import render, tenancy
from storyteller_operator import status as st
from storyteller_operator.reconcile import Reconciler
from tests.unit.test_operator_render import tenant


class FakeKube:
    """Stores objects; an apply bumps resourceVersion only when the content changes (like the API server)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.writes: list[str] = []
        self.fail_kind: str | None = None
        self.apis: set[tuple[str, str]] = set()  # optional APIs served (KEDA's, the Prometheus Operator's)
        self.forbidden: set[str] = set()  # kinds the operator may not read (RBAC)

    def _key(self, kind: str, namespace: str, name: str) -> tuple[str, str, str]:
        return (kind, namespace, name)

    def add(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        m = obj["metadata"]
        self.objects[self._key(obj["kind"], m["namespace"], m["name"])] = obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        obj = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(obj["metadata"]) if obj else None

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == self.fail_kind:
            raise ApiException(status=422, reason="Unprocessable Entity")
        m = manifest["metadata"]
        key = self._key(manifest["kind"], m["namespace"], m["name"])
        old = self.objects.get(key)
        new = copy.deepcopy(dict(manifest))
        if old is not None:
            for extra in ("status",):
                if extra in old:
                    new[extra] = old[extra]
            comparable = {k: v for k, v in old.items() if k != "status"}
            comparable["metadata"] = {
                k: v for k, v in old["metadata"].items() if k not in ("resourceVersion", "generation")
            }
            if comparable == {k: v for k, v in new.items() if k != "status"}:
                return copy.deepcopy(old)
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        else:
            new["metadata"]["generation"] = 1
        self.writes.append(f"{manifest['kind']}/{m['name']}")
        self.add(new)
        return copy.deepcopy(new)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        obj = self.objects[self._key(contract.KIND, namespace, name)]
        obj["status"] = {**obj.get("status", {}), **copy.deepcopy(dict(status))}
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(f"status/{name}")
        return copy.deepcopy(obj)

    def has_api(self, group_version: str, kind: str) -> bool:
        return (group_version, kind) in self.apis

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        want = dict(term.split("=", 1) for term in selector.split(","))
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind and ns == namespace and want.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def annotate(
        self, api_version: str, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        self.writes.append(f"annotate {kind}/{name}")
        meta = self.objects[self._key(kind, namespace, name)]["metadata"]
        meta.setdefault("annotations", {}).update(annotations)

    def scale(self, namespace: str, name: str, replicas: int, *, resource_version: str) -> None:
        if self.fail_kind == "scale":
            raise ApiException(status=403, reason="Forbidden")
        obj = self.objects[self._key(contract.KIND, namespace, name)]
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise ApiException(status=409, reason="Conflict")
        self.writes.append(f"scale {name}={replicas}")
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.writes.append(f"scale Deployment/{name}={replicas}")
        obj = self.objects[self._key("Deployment", namespace, name)]
        obj["spec"]["replicas"] = replicas
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.writes.append(f"delete {kind}/{name}")
        self.objects.pop(self._key(kind, namespace, name), None)

    # what the Deployment controller + kwok would do
    def roll_out(self, namespace: str, name: str) -> None:
        dep = self.objects[("Deployment", namespace, render.worker_name(name))]
        n = dep["spec"]["replicas"]
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": n,
            "readyReplicas": n,
            "updatedReplicas": n,
            "availableReplicas": n,
        }


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def __call__(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        self.posted.append((type, reason, message))


def secret(name: str, namespace: str = "team-a", *, allowed: str | None = "true") -> dict[str, Any]:
    """A Secret; `allowed`: its tenancy.SECRET_LABEL (which tenants may name it), None for none."""
    labels = {tenancy.SECRET_LABEL: allowed} if allowed is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    }


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    t = tenant({"providerSecrets": ["acme-openai"]})
    k.add(t)
    k.add(secret("lk-creds"))
    k.add(secret("acme-openai"))
    return k


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def rec(kube: FakeKube, events: Events) -> Reconciler:
    return Reconciler(kube, events, clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False)


def stored_status(kube: FakeKube) -> dict[str, Any]:
    status: dict[str, Any] = kube.objects[(contract.KIND, "team-a", "acme")].get("status", {})
    return status


def test_first_reconcile_creates_children_and_status(rec: Reconciler, kube: FakeKube, events: Events) -> None:
    out = rec.reconcile("team-a", "acme")
    assert out is not None and len(out.changed) == 6 and out.status_written
    s = stored_status(kube)
    assert s["observedGeneration"] == 1
    assert s["phase"] == "Pending"  # the Deployment controller has not looked yet
    assert s["desiredReplicas"] == 1
    assert s["selector"] == render.selector_string("acme")
    assert events.posted[0][1] == "Applied"


def test_ready_after_rollout_and_then_no_writes(rec: Reconciler, kube: FakeKube, events: Events) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    out = rec.reconcile("team-a", "acme")
    assert out is not None and out.changed == [] and out.status_written
    s = stored_status(kube)
    assert s["phase"] == "Ready" and s["readyReplicas"] == 1 and s["capacity"] == 4
    assert (st.condition(s, "Ready") or {}).get("status") == "True"
    assert ("Normal", "PoolReady", "1 of 1 workers ready") in events.posted

    kube.writes.clear()
    posted = len(events.posted)
    for force in (True, False):
        out = rec.reconcile("team-a", "acme", force_apply=force)
        assert out is not None and not out.wrote
    assert kube.writes == []
    assert len(events.posted) == posted


def test_fresh_process_detects_no_change(kube: FakeKube) -> None:
    """After an operator restart the cache is empty: it must still tell "unchanged" exactly."""
    Reconciler(kube, Events(), detect_pod_monitor=False).reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    Reconciler(kube, Events(), detect_pod_monitor=False).reconcile("team-a", "acme")
    kube.writes.clear()
    events = Events()
    out = Reconciler(kube, events, detect_pod_monitor=False).reconcile("team-a", "acme")
    assert out is not None and not out.wrote and kube.writes == [] and events.posted == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (403, {"message": "forbidden: unable to create new content in namespace team-a because it is being "
                          "terminated"}),
        # Already gone, while the tenant is still in a watch's memory: the API server's NotFound names the
        # namespace, not the child.
        (404, {"message": 'namespaces "team-a" not found',
               "details": {"name": "team-a", "kind": "namespaces"}}),
    ],
)  # fmt: skip
def test_a_tenant_in_a_terminating_namespace_stops_writing(
    rec: Reconciler, kube: FakeKube, status: int, body: dict[str, Any]
) -> None:
    """The namespace controller deletes children before the tenant: the first refused re-apply says the
    namespace is going, and the tenant's later rechecks send nothing that would be refused (nor count as
    failed reconciles)."""
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    refused = 0

    def refuse(manifest: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal refused
        refused += 1
        err = ApiException(status=status, reason="Refused")
        err.body = json.dumps(body)
        raise err

    kube.apply = refuse  # type: ignore[method-assign]
    kube.writes.clear()
    for _ in range(3):
        assert rec.reconcile("team-a", "acme") is None
    assert refused == 1 and kube.writes == []


def test_spec_change_rolls_and_says_so(rec: Reconciler, kube: FakeKube, events: Events) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    old_hash = stored_status(kube)["configHash"]
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["intro"]["instructions"] = "Be brief."
    t["metadata"]["generation"] = 2
    out = rec.reconcile("team-a", "acme", force_apply=False)
    assert out is not None
    s = stored_status(kube)
    new_config = f"ConfigMap/{render.config_map_name('acme', s['configHash'])}"
    assert sorted(out.changed) == [new_config, "Deployment/acme-worker"]
    assert s["configHash"] != old_hash and s["observedGeneration"] == 2 and s["phase"] == "Progressing"
    dep = kube.objects[("Deployment", "team-a", "acme-worker")]
    assert (
        dep["spec"]["template"]["metadata"]["annotations"][contract.CONFIG_HASH_ANNOTATION] == s["configHash"]
    )
    assert any("rolling the pool" in m for _, _, m in events.posted)


def test_missing_secret_degrades_then_recovers(rec: Reconciler, kube: FakeKube, events: Events) -> None:
    del kube.objects[("Secret", "team-a", "acme-openai")]
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    s = stored_status(kube)
    assert s["phase"] == "Degraded"
    deg = st.condition(s, "Degraded")
    assert deg is not None and deg["status"] == "True" and deg["reason"] == "SecretNotFound"
    assert "acme-openai" in deg["message"] and "spec.providerSecrets[0]" in deg["message"]
    assert (st.condition(s, "Ready") or {}).get("status") == "False"
    assert ("Warning", "SecretNotFound") in [(t, r) for t, r, _ in events.posted]

    kube.add(secret("acme-openai"))
    rec.reconcile("team-a", "acme", force_apply=False)
    # Its arrival rolls the pods (they could not start without it), then the pool is Ready.
    assert stored_status(kube)["phase"] == "Progressing"
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme", force_apply=False)
    s = stored_status(kube)
    assert s["phase"] == "Ready"
    assert (st.condition(s, "Degraded") or {}).get("status") == "False"
    assert "Recovered" in [r for _, r, _ in events.posted]


def test_suspend_scales_to_zero(rec: Reconciler, kube: FakeKube, events: Events) -> None:
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["suspend"] = True
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 0
    s = stored_status(kube)
    assert s["phase"] == "Suspended" and s["desiredReplicas"] == 0
    ready = st.condition(s, "Ready")
    assert ready is not None and ready["reason"] == "Suspended"
    assert "Suspended" in [r for _, r, _ in events.posted]


def test_apply_error_degrades_and_the_tenant_is_not_backed_off(
    rec: Reconciler, kube: FakeKube, events: Events
) -> None:
    kube.fail_kind = "Deployment"
    outcome = rec.reconcile("team-a", "acme")
    assert outcome is not None and outcome.phase == "Degraded"
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["reason"] == "ApplyFailed" and "Deployment acme-worker" in deg["message"]
    # The children that do not depend on it are applied all the same.
    assert {"PodDisruptionBudget/acme-worker", "NetworkPolicy/acme-worker"} <= set(kube.writes)
    # Its reconciles go on (sizing with them): the next recheck visits it, the failed child waits its turn.
    rec.trigger("team-a", "acme", force_apply=True)
    assert rec.due(resync_seconds=3600) == [(("team-a", "acme"), False)]


def test_a_failed_child_is_retried_after_its_backoff_or_at_once_when_it_changes(
    rec: Reconciler, kube: FakeKube
) -> None:
    clock = [100.0]
    rec.applier.clock = lambda: clock[0]
    kube.fail_kind = "PodDisruptionBudget"
    rec.reconcile("team-a", "acme")
    kube.writes.clear()
    rec.reconcile("team-a", "acme")
    assert not [w for w in kube.writes if w.startswith("PodDisruptionBudget")]  # backing off
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and "PodDisruptionBudget acme-worker" in deg["message"]  # still reported
    kube.fail_kind = None
    clock[0] += rec.applier.backoff.cap
    rec.reconcile("team-a", "acme")
    assert "PodDisruptionBudget/acme-worker" in kube.writes
    assert (st.condition(stored_status(kube), "Degraded") or {}).get("status") == "False"


def test_pods_are_not_rolled_while_their_config_cannot_be_applied_but_the_pool_is_resized(
    rec: Reconciler, kube: FakeKube
) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    dep = kube.objects[("Deployment", "team-a", "acme-worker")]
    template = copy.deepcopy(dep["spec"]["template"])
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["persona"] = "Your name is Whale."  # a new config: a new ConfigMap
    t["spec"]["pool"]["minReplicas"] = 3
    t["metadata"]["resourceVersion"] = "999"
    t["metadata"]["generation"] = 2
    kube.fail_kind = "ConfigMap"
    outcome = rec.reconcile("team-a", "acme")
    assert outcome is not None and outcome.phase == "Degraded"
    dep = kube.objects[("Deployment", "team-a", "acme-worker")]
    assert dep["spec"]["replicas"] == 3  # sized through the scale subresource
    assert dep["spec"]["template"] == template  # and not rolled onto a config that is not there
    assert "scale Deployment/acme-worker=3" in kube.writes


def test_a_planning_error_degrades_and_the_pool_is_still_sized(
    rec: Reconciler, kube: FakeKube, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["pool"]["minReplicas"] = 4
    t["metadata"]["resourceVersion"] = "999"

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("revision 7")

    monkeypatch.setattr(planner, "plan", broken)
    outcome = rec.reconcile("team-a", "acme")
    assert outcome is not None and outcome.phase == "Degraded"
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["reason"] == "PlanFailed" and "revision 7" in deg["message"]
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 4
    assert ("Warning", "PlanFailed") in [(t, r) for t, r, _ in events.posted]


def test_gone_tenant_is_forgotten(rec: Reconciler, kube: FakeKube) -> None:
    rec.touch("team-a", "acme")
    del kube.objects[(contract.KIND, "team-a", "acme")]
    rec.trigger("team-a", "acme", force_apply=True)
    assert rec.known() == []


def test_trigger_tracks_phase_for_recheck(rec: Reconciler, kube: FakeKube) -> None:
    rec.trigger("team-a", "acme", force_apply=True)
    # Not Ready yet (Pending): the recheck visits it, without forcing a full apply.
    assert rec.due(resync_seconds=3600) == [(("team-a", "acme"), False)]
    kube.roll_out("team-a", "acme")
    rec.trigger("team-a", "acme", force_apply=False)
    assert rec.due(resync_seconds=3600) == []
    assert rec.due(resync_seconds=0) == [(("team-a", "acme"), True)]


def test_no_secret_value_ever_rendered(kube: FakeKube, rec: Reconciler) -> None:
    kube.objects[("Secret", "team-a", "lk-creds")]["data"] = {"LIVEKIT_API_SECRET": "c3VwZXJzZWNyZXQ="}
    rec.reconcile("team-a", "acme")
    dump = json.dumps([o for k, o in kube.objects.items() if k[0] != "Secret"])
    assert "c3VwZXJzZWNyZXQ=" not in dump and "supersecret" not in dump


# ------------------------------------------------------------------------------------------------ status


def obs(**kw: Any) -> st.Observation:
    base: dict[str, Any] = {
        "generation": 1,
        "suspended": False,
        "sessions_per_worker": 4,
        "name": "acme",
        "desired_replicas": 2,
        "config_hash": "h",
    }
    return st.Observation(**{**base, **kw})


def dep(
    ready: int, replicas: int = 2, updated: int | None = None, generation: int = 1, seen: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": seen,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
        },
    }


def test_status_phases() -> None:
    assert st.compute(obs(), None, "t")["phase"] == "Pending"
    assert st.compute(obs(deployment=dep(1)), None, "t")["phase"] == "Progressing"
    assert st.compute(obs(deployment=dep(2, seen=1, generation=2)), None, "t")["phase"] == "Progressing"
    assert st.compute(obs(deployment=dep(2, updated=1)), None, "t")["phase"] == "Progressing"
    ready = st.compute(obs(deployment=dep(2)), None, "t")
    assert ready["phase"] == "Ready" and ready["capacity"] == 8
    assert st.compute(obs(deployment=dep(2), missing_secrets=[("s", "f")]), None, "t")["phase"] == "Degraded"


def test_status_keeps_transition_time_when_unchanged() -> None:
    first = st.compute(obs(deployment=dep(2)), None, "t1")
    again = st.compute(obs(deployment=dep(2)), first, "t2")
    assert again == first and not st.differs(again, first)
    degraded = st.compute(obs(deployment=dep(2), missing_secrets=[("s", "f")]), first, "t3")
    times = {c["type"]: c["lastTransitionTime"] for c in degraded["conditions"]}
    assert times == {"Ready": "t3", "Progressing": "t1", "Degraded": "t3"}


def test_status_reports_deployment_failure() -> None:
    d = dep(0)
    d["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "message": "quota exceeded"}]
    s = st.compute(obs(deployment=d), None, "t")
    deg = st.condition(s, "Degraded")
    assert deg is not None and deg["reason"] == "ReplicaFailure" and deg["message"] == "quota exceeded"


def test_status_keeps_active_sessions_from_elsewhere() -> None:
    s = st.compute(obs(deployment=dep(2)), {"activeSessions": 5}, "t")
    assert s["activeSessions"] == 5


def test_a_tenant_being_deleted_is_forgotten_with_its_apply_cache(rec: Reconciler, kube: FakeKube) -> None:
    rec.reconcile("team-a", "acme")
    uid = kube.objects[(contract.KIND, "team-a", "acme")]["metadata"]["uid"]
    assert rec.applier.remembers(uid, "Deployment", "acme-worker")
    kube.objects[(contract.KIND, "team-a", "acme")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert rec.reconcile("team-a", "acme") is None
    assert not rec.applier.remembers(uid, "Deployment", "acme-worker")


# ------------------------------------------------------------------ what rolls the pool, config revisions


def template(kube: FakeKube) -> dict[str, Any]:
    tpl: dict[str, Any] = kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["template"]
    return copy.deepcopy(tpl)


def config_maps(kube: FakeKube) -> set[str]:
    return {name for (kind, _, name) in kube.objects if kind == "ConfigMap"}


def pod_of(config_map: str, name: str) -> dict[str, Any]:
    """A worker pod of the revision that mounts `config_map`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "labels": render.selector_labels("acme")},
        "spec": {"volumes": [{"name": "config", "configMap": {"name": config_map}}]},
    }


@pytest.mark.parametrize(
    "pool",
    [{"minReplicas": 3}, {"maxReplicas": 40}, {"spareSessions": 6}, {"scaleDownDelaySeconds": 60},
     {"autoscaler": "none"}],
    ids=lambda p: next(iter(p)),
)  # fmt: skip
def test_resizing_the_pool_never_rolls_it(rec: Reconciler, kube: FakeKube, pool: dict[str, Any]) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    before, configs = template(kube), config_maps(kube)
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["pool"].update(pool)
    t["metadata"]["generation"] = 2
    rec.reconcile("team-a", "acme", force_apply=False)
    assert template(kube) == before
    assert config_maps(kube) == configs


def test_config_revisions_are_immutable_and_collected_once_no_pod_mounts_them(
    rec: Reconciler, kube: FakeKube
) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    (first,) = config_maps(kube)
    assert kube.objects[("ConfigMap", "team-a", first)]["immutable"] is True
    kube.add(pod_of(first, "old-pod"))  # still serving a session on the first revision
    # A ConfigMap that looks like a revision but that the tenant does not own is never touched.
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "acme-config-foreign",
            "namespace": "team-a",
            "labels": render.common_labels("acme"),
        },
    }
    kube.add(foreign)

    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["intro"]["instructions"] = "Be brief."
    t["metadata"]["generation"] = 2
    rec.reconcile("team-a", "acme", force_apply=False)
    second = render.config_map_name("acme", stored_status(kube)["configHash"])
    assert config_maps(kube) == {first, second, "acme-config-foreign"}  # the old pod still reads the first
    volumes = template(kube)["spec"]["volumes"]
    assert volumes[0]["configMap"]["name"] == second

    del kube.objects[("Pod", "team-a", "old-pod")]  # drained
    kube.add(pod_of(second, "new-pod"))
    rec.reconcile("team-a", "acme", force_apply=False)
    # Unmounted, but revision 1 is still in status.revisions: spec.rollout.pinnedRevision may go back to it.
    assert config_maps(kube) == {first, second, "acme-config-foreign"}
    t["spec"]["revisionHistoryLimit"] = 1
    t["metadata"]["generation"] = 3
    kube.add(t)  # a new resourceVersion, as the API server gives an edit
    rec.reconcile("team-a", "acme", force_apply=False)  # the history keeps revision 2 only
    assert config_maps(kube) == {second, "acme-config-foreign"}
    assert f"delete ConfigMap/{first}" in kube.writes

    kube.writes.clear()
    rec.reconcile("team-a", "acme", force_apply=False)
    assert kube.writes == []


def test_a_rotated_secret_rolls_the_pool(rec: Reconciler, kube: FakeKube, events: Events) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    assert stored_status(kube)["phase"] == "Ready"
    before = template(kube)["metadata"]["annotations"][contract.SECRETS_HASH_ANNOTATION]
    configs = config_maps(kube)
    kube.add(secret("acme-openai"))  # a new key: the API server gives the Secret a new resourceVersion
    rec.reconcile("team-a", "acme", force_apply=False)
    after = template(kube)["metadata"]["annotations"][contract.SECRETS_HASH_ANNOTATION]
    assert after != before
    assert config_maps(kube) == configs  # the config did not change, only the key
    assert stored_status(kube)["phase"] == "Progressing"
    assert any("rolling the pool" in m for _, _, m in events.posted)


def test_a_missing_secret_is_reported_from_the_pods_where_secrets_may_not_be_read(
    kube: FakeKube, events: Events
) -> None:
    """Without the right to read Secrets in a namespace (and tenants trusted with every Secret there), the
    kubelet's refusal to start a worker names a missing one."""
    rec = Reconciler(
        kube,
        events,
        clock=lambda: "2026-01-01T00:00:00Z",
        detect_pod_monitor=False,
        rules=tenancy.TenancyRules(secrets="any"),
    )
    kube.forbidden.add("Secret")
    del kube.objects[("Secret", "team-a", "acme-openai")]
    rec.reconcile("team-a", "acme")
    assert (st.condition(stored_status(kube), "Degraded") or {}).get("status") == "False"
    pod = pod_of("unused", "acme-worker-1")
    pod["status"] = {
        "containerStatuses": [
            {
                "name": "worker",
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "acme-openai" not found',
                    }
                },
            }
        ]
    }
    kube.add(pod)
    rec.reconcile("team-a", "acme")
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["status"] == "True" and deg["reason"] == "SecretNotFound"
    assert '"acme-openai" (spec.providerSecrets[0])' in deg["message"]


def test_a_stored_spec_the_models_refuse_is_reported_and_the_pool_left_alone(
    rec: Reconciler, kube: FakeKube, events: Events
) -> None:
    """An older CRD let drainTimeoutSeconds: 0 through; after the upgrade the tenant says what to fix."""
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    before = template(kube)
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["pool"]["drainTimeoutSeconds"] = 0
    t["metadata"]["generation"] = 2
    kube.writes.clear()
    out = rec.reconcile("team-a", "acme")
    assert out is not None and out.phase == "Degraded"
    s = stored_status(kube)
    deg = st.condition(s, "Degraded")
    assert deg is not None and deg["status"] == "True" and deg["reason"] == "InvalidSpec"
    assert deg["message"].startswith("spec.pool.drainTimeoutSeconds: ")
    assert s["observedGeneration"] == 2 and s["readyReplicas"] == 1  # the pool's figures stay
    assert kube.writes == ["status/acme"] and template(kube) == before  # nothing but the status written
    assert ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in events.posted]
    kube.writes.clear()
    rec.reconcile("team-a", "acme")
    assert kube.writes == []  # reported once


# ------------------------------------------------------------------------------- what tenants may use


def test_a_secret_without_the_opt_in_label_holds_the_pods_and_names_it(
    rec: Reconciler, kube: FakeKube, events: Events
) -> None:
    kube.objects[("Secret", "team-a", "acme-openai")]["metadata"]["labels"] = {}
    outcome = rec.reconcile("team-a", "acme")
    assert outcome is not None and outcome.phase == "Degraded"
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["reason"] == "SecretNotAllowed"
    assert '"acme-openai" (spec.providerSecrets[0])' in deg["message"]
    assert tenancy.SECRET_LABEL in deg["message"]
    assert ("Deployment", "team-a", "acme-worker") not in kube.objects  # no pod ever reads it
    assert ("ConfigMap" in [k[0] for k in kube.objects]) and (
        "ServiceAccount",
        "team-a",
        "acme-worker",
    ) in kube.objects
    # Labelled for this tenant by name: allowed, and the pods roll.
    kube.objects[("Secret", "team-a", "acme-openai")]["metadata"]["labels"] = {tenancy.SECRET_LABEL: "acme"}
    rec.reconcile("team-a", "acme")
    assert ("Deployment", "team-a", "acme-worker") in kube.objects
    assert (st.condition(stored_status(kube), "Degraded") or {}).get("status") == "False"


def test_a_secret_labelled_for_another_tenant_is_refused(rec: Reconciler, kube: FakeKube) -> None:
    kube.objects[("Secret", "team-a", "lk-creds")]["metadata"]["labels"] = {tenancy.SECRET_LABEL: "billing"}
    rec.reconcile("team-a", "acme")
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["reason"] == "SecretNotAllowed"
    assert '"lk-creds" (spec.livekit.credentialsSecret)' in deg["message"]


def test_an_unreadable_secret_is_refused_under_the_default_rules(rec: Reconciler, kube: FakeKube) -> None:
    kube.forbidden.add("Secret")
    rec.reconcile("team-a", "acme")
    deg = st.condition(stored_status(kube), "Degraded")
    assert (
        deg is not None and deg["reason"] == "SecretNotAllowed" and "rbac.secretNamespaces" in deg["message"]
    )
    assert ("Deployment", "team-a", "acme-worker") not in kube.objects


def test_a_label_removed_later_stops_rolling_but_keeps_sizing(rec: Reconciler, kube: FakeKube) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    template = copy.deepcopy(kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["template"])
    kube.objects[("Secret", "team-a", "acme-openai")]["metadata"]["labels"] = {}
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["persona"] = "Your name is Whale."
    t["spec"]["pool"]["minReplicas"] = 2
    t["metadata"]["resourceVersion"] = "999"
    rec.reconcile("team-a", "acme")
    dep = kube.objects[("Deployment", "team-a", "acme-worker")]
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["template"] == template
    assert (st.condition(stored_status(kube), "Degraded") or {}).get("reason") == "SecretNotAllowed"


def test_pods_over_a_platform_limit_are_not_rolled_and_the_limit_is_named(
    rec: Reconciler, kube: FakeKube
) -> None:
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["worker"]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    rec.reconcile("team-a", "acme")
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["reason"] == "PlatformLimit"
    assert "spec.worker.resources.limits.nvidia.com/gpu" in deg["message"]
    assert "tenants.allowedResources" in deg["message"]
    assert ("Deployment", "team-a", "acme-worker") not in kube.objects


def test_a_pool_above_the_platform_maximum_is_held_there(kube: FakeKube, events: Events) -> None:
    rec = Reconciler(
        kube,
        events,
        clock=lambda: "2026-01-01T00:00:00Z",
        detect_pod_monitor=False,
        rules=tenancy.TenancyRules(max_pods=3),
    )
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["pool"].update(minReplicas=5, maxReplicas=20)
    rec.reconcile("team-a", "acme")
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3
    deg = st.condition(stored_status(kube), "Degraded")
    assert deg is not None and deg["reason"] == "PlatformLimit" and "tenants.maxPods" in deg["message"]

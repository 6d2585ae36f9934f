"""The operator's watch-backed caches, without a server: the store's ordering rules, and a reconciler whose
reads come from caches that a test fills as the watches would. A steady-state reconcile makes no read and
no write; a hand edit or a deletion seen by the watch brings back exactly that child.

The informers' own list and watch against a real API server are tested in tests/cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client import ApiClient

from storyteller_api import contract
from storyteller_operator import render
from storyteller_operator.cached import REFUSED_RETRY_S, Caches
from storyteller_operator.informer import TOMBSTONE_S, Store, parse_selector, slim
from storyteller_operator.kube import request_labels
from storyteller_operator.reconcile import Reconciler
from storyteller_operator.status import condition
from tests.unit.test_operator_reconcile import Events, FakeKube, secret
from tests.unit.test_operator_render import tenant

pytestmark = pytest.mark.unit


def obj(name: str, version: int, labels: dict[str, str] | None = None, ns: str = "team-a") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": str(version), "labels": labels or {}}
    }


# ------------------------------------------------------------------------------------------- the store


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = Store()
    assert store.upsert(obj("a", 5))
    assert not store.upsert(obj("a", 4))  # a late watch event after this process's own write
    assert store.get("team-a", "a")["metadata"]["resourceVersion"] == "5"  # type: ignore[index]
    assert store.upsert(obj("a", 5))  # the watch event of that same write


def test_a_deleted_object_is_not_brought_back_by_an_older_answer() -> None:
    store = Store()
    store.upsert(obj("a", 5))
    store.delete(obj("a", 7))
    assert not store.upsert(obj("a", 6))  # a write's answer read after the deletion
    assert store.get("team-a", "a") is None
    assert store.upsert(obj("a", 8))  # created again


def test_tombstones_are_forgotten_once_no_answer_can_bring_them_back() -> None:
    now = [0.0]
    store = Store(clock=lambda: now[0])
    for i in range(50):  # pods that come and go
        store.upsert(obj(f"pod-{i}", 10 + i))
        store.delete(obj(f"pod-{i}", 100 + i))
    assert store.tombstones() == 50
    now[0] += TOMBSTONE_S
    store.delete(obj("last", 500))
    assert store.tombstones() == 1  # the older 50 expired, not the one just made
    assert not store.upsert(obj("last", 499))


def test_select_uses_the_index_and_checks_every_label() -> None:
    store = Store(index_label="app.kubernetes.io/instance")
    store.upsert(obj("p1", 1, {"app.kubernetes.io/instance": "acme", "x": "1"}))
    store.upsert(obj("p2", 2, {"app.kubernetes.io/instance": "acme", "x": "2"}))
    store.upsert(obj("p3", 3, {"app.kubernetes.io/instance": "other"}))
    store.upsert(obj("p4", 4, {"app.kubernetes.io/instance": "acme"}, ns="team-b"))
    names = lambda objs: sorted(o["metadata"]["name"] for o in objs)  # noqa: E731
    assert names(store.select("team-a", {"app.kubernetes.io/instance": "acme"})) == ["p1", "p2"]
    assert names(store.select("team-a", {"app.kubernetes.io/instance": "acme", "x": "2"})) == ["p2"]
    assert names(store.select("team-a", {"x": "1"})) == ["p1"]  # no index label: the namespace scanned
    # A label change moves the object between index buckets.
    store.upsert(obj("p2", 5, {"app.kubernetes.io/instance": "other"}))
    assert names(store.select("team-a", {"app.kubernetes.io/instance": "other"})) == ["p2", "p3"]
    store.delete(obj("p1", 6))
    assert store.select("team-a", {"app.kubernetes.io/instance": "acme"}) == []


def test_metadata_kept_of_a_secret_has_no_annotation_and_no_field_list() -> None:
    """`kubectl apply -f secret.yaml` puts the whole Secret, keys included, in an annotation."""
    applied = '{"apiVersion":"v1","kind":"Secret","stringData":{"OPENAI_API_KEY":"sk-live-123"}}'
    meta = {
        "name": "openai",
        "namespace": "team-a",
        "resourceVersion": "7",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {"f:OPENAI_API_KEY": {}}}}],
    }
    kept = slim({"metadata": copy.deepcopy(meta)}, metadata_only=True)
    assert "sk-live" not in repr(kept) and "OPENAI_API_KEY" not in repr(kept)
    assert kept["metadata"]["resourceVersion"] == "7"
    assert "annotations" in slim({"metadata": copy.deepcopy(meta)})["metadata"]  # whole objects keep them


def test_selectors_are_equality_terms_only() -> None:
    assert parse_selector("a=1,b==2") == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="equality"):
        parse_selector("a!=1")
    with pytest.raises(ValueError, match="equality"):
        parse_selector("a in (1)")


@pytest.mark.parametrize(
    ("method", "path", "watch", "labels"),
    [
        ("GET", "/api/v1/namespaces/a/pods", False, ("LIST", "pods")),
        ("GET", "/api/v1/pods", True, ("WATCH", "pods")),
        ("GET", "/api/v1/namespaces/a/secrets/s", False, ("GET", "secrets")),
        ("PATCH", "/apis/storyteller.dev/v1alpha1/namespaces/a/storytellerdeployments/t/status", False,
         ("PATCH", "storytellerdeployments/status")),
        ("GET", "/apis/monitoring.coreos.com/v1", False, ("GET", "discovery")),
        ("POST", "/api/v1/namespaces/a/events", False, ("POST", "events")),
    ],
)  # fmt: skip
def test_requests_are_counted_as_the_api_server_names_them(
    method: str, path: str, watch: bool, labels: tuple[str, str]
) -> None:
    assert request_labels(method, path, watch=watch) == labels


# ------------------------------------------------------------------------------ reconciles from memory


class CountingKube(FakeKube):
    """FakeKube that records every read the reconciler sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"get {kind}/{name}")
        return super().get(api_version, kind, namespace, name)

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"metadata {kind}/{name}")
        return super().metadata(api_version, kind, namespace, name)

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.reads.append(f"list {kind}")
        return super().list(api_version, kind, namespace, selector)


def synced_caches() -> Caches:
    caches = Caches(ApiClient())  # never started: the test delivers what the watches would
    for informer in caches.informers.values():
        informer.synced.set()
    return caches


def deliver(kube: FakeKube, caches: Caches) -> None:
    """What the watches bring: every object the API server holds now, and the deletions."""
    present = set()
    for (kind, ns, name), stored in kube.objects.items():
        informer = caches.informers.get((stored["apiVersion"], kind, ""))
        if informer is None:
            continue
        present.add((kind, ns, name))
        copied = copy.deepcopy(stored)
        if informer.metadata_only:
            copied = {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": copied["metadata"],
            }
        informer.store.upsert(copied)
    for (_, kind, _), informer in caches.informers.items():
        for key in list(informer.store._objects):
            if (kind, *key) not in present:
                informer.store.delete(informer.store._objects[key])


@pytest.fixture
def kube() -> CountingKube:
    k = CountingKube()
    k.add(tenant({"providerSecrets": ["acme-openai"]}))
    k.add(secret("lk-creds"))
    k.add(secret("acme-openai"))
    return k


def reconciled_and_ready(kube: CountingKube) -> tuple[Reconciler, Caches]:
    caches = synced_caches()
    deliver(kube, caches)
    rec = Reconciler(kube, Events(), detect_pod_monitor=False, caches=caches)
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    deliver(kube, caches)
    rec.reconcile("team-a", "acme")
    deliver(kube, caches)
    kube.reads.clear()
    kube.writes.clear()
    return rec, caches


def test_a_steady_reconcile_reads_nothing_and_writes_nothing(kube: CountingKube) -> None:
    rec, _ = reconciled_and_ready(kube)
    for force in (False, True, False, True):  # forced: the periodic full resync
        out = rec.reconcile("team-a", "acme", force_apply=force)
        assert out is not None and out.phase == "Ready" and not out.wrote
    assert kube.reads == []
    assert kube.writes == []


def test_a_hand_edit_the_watch_saw_is_undone_without_waiting_for_a_resync(kube: CountingKube) -> None:
    rec, caches = reconciled_and_ready(kube)
    service = kube.objects[("Service", "team-a", render.metrics_service_name("acme"))]
    service["spec"]["ports"][0]["port"] = 1234
    kube.version += 1
    service["metadata"]["resourceVersion"] = str(kube.version)
    deliver(kube, caches)
    out = rec.reconcile("team-a", "acme", force_apply=False)
    assert out is not None and out.changed == [f"Service/{render.metrics_service_name('acme')}"]
    assert kube.writes == [f"Service/{render.metrics_service_name('acme')}"]
    assert kube.reads == []


def test_a_deleted_child_is_applied_again(kube: CountingKube) -> None:
    rec, caches = reconciled_and_ready(kube)
    pdb = render.worker_name("acme")
    del kube.objects[("PodDisruptionBudget", "team-a", pdb)]
    deliver(kube, caches)
    out = rec.reconcile("team-a", "acme", force_apply=False)
    assert out is not None and out.changed == [f"PodDisruptionBudget/{pdb}"]


def test_a_tenant_event_newer_than_the_cache_is_what_the_reconcile_reads(kube: CountingKube) -> None:
    """kopf's watch and the tenant informer's are two streams: the event that triggers a reconcile is put
    into the cache first, so the reconcile never acts on the spec before the change."""
    rec, _ = reconciled_and_ready(kube)
    stored = kube.objects[(contract.KIND, "team-a", "acme")]
    stored["spec"]["pool"] = {**stored["spec"].get("pool", {}), "minReplicas": 2}
    stored["metadata"]["generation"] += 1
    kube.version += 1
    stored["metadata"]["resourceVersion"] = str(kube.version)
    rec.seen(copy.deepcopy(stored))  # the informer has not had the event yet
    out = rec.reconcile("team-a", "acme", force_apply=False)
    assert out is not None and f"Deployment/{render.worker_name('acme')}" in out.changed
    assert kube.objects[(contract.KIND, "team-a", "acme")]["status"]["observedGeneration"] == 2
    assert kube.reads == []


def test_secrets_that_may_not_be_listed_are_read_by_name_and_a_refusal_is_remembered(
    kube: CountingKube,
) -> None:
    rec, caches = reconciled_and_ready(kube)
    caches.informers[("v1", "Secret", "")].forbidden = True  # no list/watch in all namespaces
    started: list[str] = []
    caches._informer = lambda v, k, ns: _refused(started, ns)  # type: ignore[method-assign]
    # Nor in the tenant's namespace: `get` is what remains, and it is granted.
    rec.reconcile("team-a", "acme")
    assert started == ["team-a"]  # the namespace's own watch was tried, once
    assert sorted(kube.reads) == ["metadata Secret/acme-openai", "metadata Secret/lk-creds"]
    # Where `get` is refused too, it is asked once, not on every reconcile (the pods say what is missing).
    kube.forbidden = {"Secret"}
    kube.reads.clear()
    rec.reconcile("team-a", "acme")
    rec.reconcile("team-a", "acme")
    assert kube.reads == ["metadata Secret/lk-creds"]
    assert started == ["team-a"]


def test_a_refused_secret_read_is_asked_again_soon_after(kube: CountingKube) -> None:
    """Tenants' Secrets may not be read: SecretNotAllowed. A grant (a RoleBinding applied with the tenant)
    counts at the first reconcile REFUSED_RETRY_S later, not a minute later."""
    rec, caches = reconciled_and_ready(kube)
    now = [1000.0]
    caches.clock = lambda: now[0]
    caches.informers[("v1", "Secret", "")].forbidden = True
    caches._informer = lambda v, k, ns: _refused([], ns)  # type: ignore[method-assign]
    kube.forbidden = {"Secret"}
    rec.reconcile("team-a", "acme")
    status = kube.objects[(contract.KIND, "team-a", "acme")]["status"]
    assert (condition(status, "Degraded") or {}).get("reason") == "SecretNotAllowed"
    kube.forbidden = set()  # granted
    rec.reconcile("team-a", "acme")  # the refusal is remembered for a moment
    assert (condition(kube.objects[(contract.KIND, "team-a", "acme")]["status"], "Degraded") or {}).get(
        "reason"
    ) == "SecretNotAllowed"
    now[0] += REFUSED_RETRY_S
    rec.reconcile("team-a", "acme")
    status = kube.objects[(contract.KIND, "team-a", "acme")]["status"]
    assert (condition(status, "Degraded") or {}).get("status") == "False"


def test_a_namespaces_own_informers_stop_with_its_last_tenant(kube: CountingKube) -> None:
    rec, caches = reconciled_and_ready(kube)
    caches.informers[("v1", "Secret", "")].forbidden = True
    started: list[str] = []
    caches._informer = lambda v, k, ns: _refused(started, ns)  # type: ignore[method-assign]
    rec.trigger("team-a", "acme", force_apply=True)
    assert caches.on_demand() == [("v1", "Secret", "team-a")]
    del kube.objects[(contract.KIND, "team-a", "acme")]
    deliver(kube, caches)
    rec.trigger("team-a", "acme", force_apply=True)  # finds it gone
    assert caches.on_demand() == []


class _Refused:
    forbidden = True
    namespace = "team-a"
    metadata_only = True

    def start(self) -> _Refused:
        return self

    def stop(self) -> None:
        pass


def _refused(started: list[str], namespace: str) -> Any:
    started.append(namespace)
    return _Refused()

"""The Kube client with its reads served from watch-backed caches (informer.py); writes pass through.

A steady-state reconcile reads only memory: the tenant, its children, its pods and the referenced Secrets'
metadata all come from informers. A read falls through to the API server while an informer has not
finished its first list, for kinds nobody watches (the optional PodMonitor and ScaledObject), and for good
where listing is forbidden (an account granted `get` on Secrets but not `list`/`watch`).

The operator's own children and pods are watched by label (`app.kubernetes.io/managed-by`), so the
caches hold the operator's objects only; Secrets are watched as metadata, in every watched namespace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes.client import ApiClient, ApiException

from storyteller_api import contract
from storyteller_operator.informer import Informer, parse_selector, slim
from storyteller_operator.kube import KINDS, KubeClient

FORBIDDEN_RETRY_S = 60.0  # a namespace where listing was refused is asked again after this (a grant may come)
# A refused read by name is asked again after this: a tenant whose Secrets may not be read is refused
# (SecretNotAllowed) until one is, and a RoleBinding applied with the tenant must count within seconds.
REFUSED_RETRY_S = 10.0
MANAGED = f"{contract.LABEL_MANAGED_BY}={contract.MANAGER}"

# (apiVersion, kind) → (label selector, label indexed for lists, metadata only).
WATCHED: dict[tuple[str, str], tuple[str, str, bool]] = {
    (contract.API_VERSION, contract.KIND): ("", "", False),
    ("v1", "Secret"): ("", "", True),
    ("v1", "Pod"): (MANAGED, contract.LABEL_INSTANCE, False),
    # Metadata only: a tenant's history keeps up to revisionHistoryLimit configs of up to ~130 KB each. The
    # one config a reconcile reads (a canary's stable, a pin) is asked for once per ConfigMap (observe.py).
    ("v1", "ConfigMap"): (MANAGED, contract.TENANT_LABEL, True),
    ("v1", "ServiceAccount"): (MANAGED, "", False),
    ("v1", "Service"): (MANAGED, "", False),
    ("apps/v1", "Deployment"): (MANAGED, "", False),
    ("policy/v1", "PodDisruptionBudget"): (MANAGED, "", False),
    ("networking.k8s.io/v1", "NetworkPolicy"): (MANAGED, "", False),
}


class Caches:
    """The informers of every watched kind, per watched namespace ("" for all of them).

    Where a kind may not be listed in all namespaces but may be in some (Secrets: the chart grants them per
    namespace, rbac.secretNamespaces, or a namespace's owner does), a namespace's own informer is started
    the first time a read asks for it; one that is forbidden there too is tried again after
    FORBIDDEN_RETRY_S; meanwhile objects are read by name (`get` may be granted where `list` is not).
    """

    def __init__(
        self, api: ApiClient, namespaces: Iterable[str] = (), *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api = api
        self.clock = clock
        self.namespaces = sorted(set(namespaces)) or [""]
        self.informers: dict[tuple[str, str, str], Informer] = {
            (api_version, kind, ns): self._informer(api_version, kind, ns)
            for api_version, kind in WATCHED
            for ns in self.namespaces
        }
        # Per-namespace informers started on demand, with when they were started.
        self._namespaced: dict[tuple[str, str, str], tuple[Informer, float]] = {}
        self._guard = threading.Lock()

    def _informer(self, api_version: str, kind: str, namespace: str) -> Informer:
        prefix, plural = KINDS[(api_version, kind)]
        selector, index, metadata_only = WATCHED[(api_version, kind)]
        return Informer(
            self.api,
            prefix,
            plural,
            namespace=namespace,
            label_selector=selector,
            metadata_only=metadata_only,
            index_label=index,
        )

    def start(self) -> Caches:
        for informer in self.informers.values():
            informer.start()
        return self

    def stop(self) -> None:
        with self._guard:
            namespaced = [i for i, _ in self._namespaced.values()]
        for informer in [*self.informers.values(), *namespaced]:
            informer.stop()

    def release(self, namespace: str) -> int:
        """Stop the informers started on demand for `namespace` (its last tenant is gone: nothing there is
        read any more); how many were stopped."""
        with self._guard:
            keys = [k for k in self._namespaced if k[2] == namespace]
            stopped = [self._namespaced.pop(k)[0] for k in keys]
        for informer in stopped:
            informer.stop()
        return len(stopped)

    def on_demand(self) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, namespace) of the informers started on demand and running."""
        with self._guard:
            return sorted(self._namespaced)

    def remember(self, obj: Mapping[str, Any]) -> None:
        """Keep `obj` (a write's answer, a watch event seen elsewhere) unless a newer version is kept."""
        meta = obj.get("metadata") or {}
        informer = self.serving(str(obj.get("apiVersion")), str(obj.get("kind")), str(meta.get("namespace")))
        if informer is not None and not informer.metadata_only:
            # A copy: the caller keeps its object whole.
            informer.store.upsert(slim({**obj, "metadata": dict(obj.get("metadata") or {})}))

    def covers(self, api_version: str, kind: str, namespace: str) -> bool:
        """Whether whole objects of `kind` in `namespace` are read from memory now."""
        informer = self.serving(api_version, kind, namespace)
        return informer is not None and not informer.metadata_only

    def _scoped(self, api_version: str, kind: str, namespace: str) -> Informer | None:
        informer = self.informers.get((api_version, kind, namespace if namespace in self.namespaces else ""))
        if informer is None or not informer.forbidden or informer.namespace or not namespace:
            return informer
        key = (api_version, kind, namespace)
        with self._guard:
            found = self._namespaced.get(key)
            if found is None or (found[0].forbidden and self.clock() - found[1] >= FORBIDDEN_RETRY_S):
                found = (self._informer(api_version, kind, namespace).start(), self.clock())
                self._namespaced[key] = found
        return found[0]

    def serving(self, api_version: str, kind: str, namespace: str) -> Informer | None:
        """The informer that answers for `kind` in `namespace`, if it has its first list in."""
        informer = self._scoped(api_version, kind, namespace)
        if informer is None or informer.forbidden or not informer.synced.is_set():
            return None
        return informer


class CachedKube:
    """`Kube` whose reads come from `caches` where they can (see the module doc)."""

    def __init__(self, kube: KubeClient, caches: Caches) -> None:
        self.kube = kube
        self.caches = caches
        # (apiVersion, kind, namespace) → when a read there was refused (403): where `list` is not granted
        # `get` may be, but where neither is, asking on every reconcile would only cost requests.
        self._refused: dict[tuple[str, str, str], float] = {}
        self._guard = threading.Lock()

    # What no cache answers: the client's own.

    def has_api(self, group_version: str, kind: str) -> bool:
        return self.kube.has_api(group_version, kind)

    def annotate(
        self, api_version: str, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        self.kube.annotate(api_version, kind, namespace, name, annotations)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.kube.delete(api_version, kind, namespace, name)

    def scale(self, namespace: str, name: str, replicas: int, *, resource_version: str) -> None:
        self.kube.scale(namespace, name, replicas, resource_version=resource_version)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.kube.scale_deployment(namespace, name, replicas)

    # ----------------------------------------------------------------------------------------- reads

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self.caches.serving(api_version, kind, namespace)
        if informer is None or informer.metadata_only:
            return self.kube.get(api_version, kind, namespace, name)
        found = informer.store.get(namespace, name)
        if found is None and (api_version, kind) == (contract.API_VERSION, contract.KIND):
            # A tenant a trigger names but the cache lacks: its watch may lag kopf's. Ask once.
            return self.kube.get(api_version, kind, namespace, name)
        return found

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self.caches.serving(api_version, kind, namespace)
        if informer is None:
            where = (api_version, kind, namespace)
            with self._guard:
                refused = self._refused.get(where)
            if refused is not None and self.caches.clock() - refused < REFUSED_RETRY_S:
                # Refused a moment ago: so it would be again, and each refusal is a request.
                raise ApiException(status=403, reason=f"{kind} in {namespace}: forbidden (remembered)")
            try:
                return self.kube.metadata(api_version, kind, namespace, name)
            except ApiException as err:
                if err.status == 403:
                    with self._guard:
                        self._refused[where] = self.caches.clock()
                raise
        obj = informer.store.get(namespace, name)
        return None if obj is None else dict(obj.get("metadata") or {})

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        informer = self.caches.serving(api_version, kind, namespace)
        if informer is None or informer.metadata_only:
            return self.kube.list(api_version, kind, namespace, selector)
        return informer.store.select(namespace, parse_selector(selector))

    # ---------------------------------------------------------------------------------------- writes

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        applied = self.kube.apply(manifest)
        self.caches.remember(applied)
        return applied

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        patched = self.kube.patch_status(namespace, name, status)
        self.caches.remember(patched)
        return patched

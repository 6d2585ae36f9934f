"""Apply: carry out a plan against the API server (writes only, in a safe order).

Seed spec.replicas first (the size the plan used), price the pods, prune a ScaledObject the tenant no
longer wants, then server-side apply the children in order, each on its own (one refused child does not
stop the others, and the pool is resized even when its Deployment cannot be rolled), delete the config
revisions no pod uses any more, then (reconcile.py) the status. A child whose rendered manifest is
unchanged since this process last applied it is skipped unless the apply is forced; "changed" means the
fields the operator owns changed, as read back from the API server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from kubernetes.client import ApiException

from storyteller_api import contract
from storyteller_operator import render
from storyteller_operator.backoff import Backoff
from storyteller_operator.informer import version_of
from storyteller_operator.kube import KubeClient, error_text
from storyteller_operator.observe import owned_by
from storyteller_operator.plan import Applied, Plan
from storyteller_operator.status import APPLY_FAILED, NAME_CONFLICT
from storyteller_operator.tenant import Tenant

log = logging.getLogger("storyteller.operator.apply")


ChildKey = tuple[str, str, str]  # (tenant uid, kind, name)
Watched = Callable[[str, str, str], bool]  # (apiVersion, kind, namespace) → served from a watch


class NamespaceTerminating(Exception):
    """The tenant's namespace is being deleted, the tenant with it: nothing to converge to."""


def foreign(live: Mapping[str, Any] | None, tenant: Tenant) -> str | None:
    """Why the operator must leave `live` alone on `tenant`'s behalf (None: absent, or the tenant's own).

    A server-side apply with force would take over any object of the child's name, and the garbage
    collector would delete it with the tenant: a tenant named `payments` must not capture the
    ServiceAccount `payments-worker` someone else made (its cloud identity with it)."""
    if live is None or owned_by(live, tenant.uid):
        return None
    meta = live.get("metadata") or {}
    owners = [f"{o.get('kind')} {o.get('name')}" for o in meta.get("ownerReferences") or []]
    whose = f"owned by {', '.join(owners)}" if owners else "not created by this tenant"
    return (
        f"{live.get('kind')} {meta.get('name')} already exists in namespace {meta.get('namespace')} and is "
        f"{whose}: the operator leaves it alone; rename or delete it, or give the tenant another name"
    )


def _namespace_ends(err: ApiException) -> bool:
    """The write was refused because the tenant's namespace is being deleted, or is gone already (the
    tenant, still in a watch's memory, goes with it)."""
    if err.status == 403:
        return "being terminated" in str(err.body)
    if err.status != 404:
        return False
    try:
        details = json.loads(err.body or "{}").get("details") or {}
    except (ValueError, AttributeError):
        return False
    return details.get("kind") == "namespaces"


def _nothing_watched(api_version: str, kind: str, namespace: str) -> bool:
    return False


# What the worker pods use: while one of these could not be applied, their Deployments are not rolled.
NEEDED_BY_PODS = frozenset({"ServiceAccount", "ConfigMap", "NetworkPolicy"})


@dataclasses.dataclass(frozen=True)
class Failure:
    """A child that could not be applied, and when to try it again."""

    digest: str  # the manifest that failed: a changed one is tried at once
    reason: str  # the Degraded reason (APPLY_FAILED, NAME_CONFLICT)
    error: str
    failures: int  # consecutive failures of this manifest
    retry_at: float  # the clock time before which it is not tried again
    kind: str = ""

    @property
    def needed_by_pods(self) -> bool:
        return self.kind in NEEDED_BY_PODS


@dataclasses.dataclass(frozen=True)
class AppliedChild:
    """What this process last applied of a child, and the child as the API server answered."""

    digest: str  # hash of the manifest applied
    owned: str  # hash of the fields the manifest owns, as they stood after the apply
    version: int  # resourceVersion at which `owned` was last found unchanged


class Applier:
    def __init__(
        self,
        kube: KubeClient,
        watched: Watched | None = None,
        *,
        direct: KubeClient | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.kube = kube
        # A child that failed is tried again after this (the runner's backoff for the whole tenant before):
        # the tenant's other children and its sizing do not wait on it.
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.rand = rand
        self._failed: dict[ChildKey, Failure] = {}
        # Kinds whose reads `kube` serves from a watch (cached.py): a child of such a kind is compared with
        # its live copy instead of applied again, so a forced resync writes only what differs.
        self.watched = watched or _nothing_watched
        # Reads past the watches: they see only objects labelled as ours, and the object whose name a child
        # would take is exactly one that may not be.
        self.direct = direct or kube
        self._applied: dict[ChildKey, AppliedChild] = {}
        # tenant uid → the config revisions kept when nothing else was left: nothing to collect.
        self._configs_collected: dict[str, frozenset[str]] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------------------------- the cache

    def remembers(self, uid: str, kind: str, name: str) -> bool:
        with self._guard:
            return (uid, kind, name) in self._applied

    def forget_child(self, uid: str, kind: str, name: str) -> None:
        """A child was deleted behind our back (or pruned): the next apply must not skip it."""
        with self._guard:
            self._applied.pop((uid, kind, name), None)
            self._failed.pop((uid, kind, name), None)

    def forget_tenant(self, uid: str) -> None:
        with self._guard:
            for key in [k for k in self._applied if k[0] == uid]:
                del self._applied[key]
            for key in [k for k in self._failed if k[0] == uid]:
                del self._failed[key]
            self._configs_collected.pop(uid, None)

    # ------------------------------------------------------------------------------------ the writes

    def seed_replicas(self, tenant: Tenant, replicas: int) -> None:
        """spec.replicas through the scale subresource, only if the tenant is unchanged since it was read
        (a kubectl scale that came first wins). A failed write leaves spec.replicas alone; the plan sized
        the pool from the running size this time, and the next reconcile tries again."""
        extra = {"tenant": tenant.name, "namespace": tenant.namespace, "replicas": replicas}
        try:
            self.kube.scale(tenant.namespace, tenant.name, replicas, resource_version=tenant.resource_version)
        except ApiException as err:
            if err.status == 409:  # the tenant changed since it was read: the next reconcile decides
                log.info("spec.replicas changed meanwhile", extra=extra)
            else:
                log.warning("cannot seed spec.replicas", extra={**extra, "error": error_text(err)})
        else:
            log.info("seeded spec.replicas", extra=extra)

    def price_pods(self, namespace: str, prices: Mapping[str, str]) -> None:
        for pod, price in prices.items():
            self.kube.annotate("v1", "Pod", namespace, pod, {contract.POD_DELETION_COST: price})

    def _delete_own(self, tenant: Tenant, api_version: str, kind: str, name: str) -> None:
        """Delete the tenant's child `name`: only when the tenant owns it (an object of that name that is
        someone else's stays)."""
        live = self.kube.get(api_version, kind, tenant.namespace, name)
        if live is None:
            return
        if foreign(live, tenant):
            log.warning(
                "not deleting an object the tenant does not own",
                extra={"tenant": tenant.name, "namespace": tenant.namespace, "kind": kind, "object": name},
            )
            return
        self.kube.delete(api_version, kind, tenant.namespace, name)

    def prune_scaled_object(self, tenant: Tenant) -> None:
        self._delete_own(tenant, *render.KEDA_API, render.worker_name(tenant.name))

    def prune_canary(self, tenant: Tenant) -> None:
        """Delete the canary Deployment: its pods drain their calls like any scale-in (preStop and the
        termination grace), the garbage collector removes its ReplicaSets."""
        name = render.canary_name(tenant.name)
        self._delete_own(tenant, "apps/v1", "Deployment", name)
        self.forget_child(tenant.uid, "Deployment", name)

    def collect_config_revisions(self, tenant: Tenant, keep: Collection[str]) -> list[str]:
        """Delete the tenant's config revisions that no pod mounts and `keep` does not name (the spec's and
        those of status.revisions, which a pin may go back to); return their names.

        A pod of an older revision (draining its sessions, or a rollout's old ReplicaSet) keeps reading its
        own config until it is gone, so its ConfigMap stays until then. Only ConfigMaps the tenant owns are
        touched. Once nothing else is left for these `keep`, later calls read nothing.
        """
        kept = frozenset(keep)
        with self._guard:
            if self._configs_collected.get(tenant.uid) == kept:
                return []
        ns, name = tenant.namespace, tenant.name
        selector = f"{contract.TENANT_LABEL}={name},{contract.LABEL_MANAGED_BY}={contract.MANAGER}"
        old = [
            cm["metadata"]["name"]
            for cm in self.kube.list("v1", "ConfigMap", ns, selector)
            if render.is_config_map_of(name, cm["metadata"]["name"])
            and cm["metadata"]["name"] not in kept
            and owned_by(cm, tenant.uid)
        ]
        in_use = set()
        if old:
            for pod in self.kube.list("v1", "Pod", ns, render.selector_string(name)):
                for volume in (pod.get("spec") or {}).get("volumes") or []:
                    if "configMap" in volume:
                        in_use.add(volume["configMap"].get("name"))
        deleted = []
        for cm in old:
            if cm in in_use:
                continue
            self.kube.delete("v1", "ConfigMap", ns, cm)
            self.forget_child(tenant.uid, "ConfigMap", cm)
            deleted.append(cm)
        if deleted:
            log.info(
                "deleted unused config revisions", extra={"tenant": name, "namespace": ns, "deleted": deleted}
            )
        if len(deleted) == len(old):
            with self._guard:
                self._configs_collected[tenant.uid] = kept
        return deleted

    def _drift(
        self, key: ChildKey, cached: AppliedChild, manifest: Mapping[str, Any], live: Mapping[str, Any] | None
    ) -> str | None:
        """None while the watched child (`live`) still has every field `manifest` owns as this process
        applied it; else the hash of those fields as they stand (a hand edit; "" for a deletion). Hashed once
        per new version of the child."""
        if live is None:
            return ""
        version = version_of(live)
        if version == cached.version:
            return None
        owned = render.owned_hash(manifest, live)
        if owned != cached.owned:
            return owned
        with self._guard:
            if self._applied.get(key) == cached:
                self._applied[key] = dataclasses.replace(cached, version=version)
        return None

    def resize(self, tenant: Tenant, name: str, replicas: int, live: Mapping[str, Any] | None) -> bool:
        """Set an owned Deployment's spec.replicas through its scale subresource, leaving its template alone
        (its pods are not rolled); True when it changed. For when the Deployment itself cannot be applied.
        Raises ApiException when the API server refuses."""
        if live is None or not owned_by(live, tenant.uid):
            return False
        if int((live.get("spec") or {}).get("replicas") or 0) == replicas:
            return False
        try:
            self.kube.scale_deployment(tenant.namespace, name, replicas)
        except ApiException as err:
            if _namespace_ends(err):
                raise NamespaceTerminating(tenant.namespace) from None
            raise
        log.info(
            "resized without rolling",
            extra={
                "tenant": tenant.name,
                "namespace": tenant.namespace,
                "deployment": name,
                "replicas": replicas,
            },
        )
        return True

    def _backing_off(self, key: ChildKey, digest: str) -> Failure | None:
        """The child's last failure, while it is not to be tried again yet (the same manifest failed)."""
        with self._guard:
            failed = self._failed.get(key)
        if failed is None or failed.digest != digest or self.clock() >= failed.retry_at:
            return None
        return failed

    def _failure(self, key: ChildKey, digest: str, reason: str, error: str) -> Failure:
        with self._guard:
            before = self._failed.get(key)
            count = before.failures + 1 if before is not None and before.digest == digest else 1
            retry_at = self.clock() + self.backoff.delay(count, self.rand)
            failed = Failure(digest, reason, error, count, retry_at, kind=key[1])
            self._failed[key] = failed
        return failed

    def apply_children(
        self, plan: Plan, *, force: bool, current: Mapping[str, Any] | None, hold_pods: bool = False
    ) -> Applied:
        """Apply the plan's children in order, each on its own: one that fails does not stop the others.

        The pods need their ServiceAccount, config and NetworkPolicy: while one of those failed (or
        `hold_pods`: the pods must not roll), the Deployments are not applied, only resized through
        their scale subresource, so the pool keeps following load on its last template. A child that failed
        is tried again after a backoff of its own (at once when its manifest changes); the tenant's
        reconciles, and its sizing, go on meanwhile.

        A child is read before this process first applies it (from a watch's memory where there is one):
        one that exists and is not the tenant's is left alone (NameConflict), so the pods never run with
        someone else's ServiceAccount or config.
        """
        t = plan.tenant
        changed: list[str] = []
        failures: list[Failure] = []
        deployment = current
        canary: Mapping[str, Any] | None = None
        digests = plan.digests or tuple(render.manifest_hash(m) for m in plan.children)
        for manifest, digest in zip(plan.children, digests, strict=True):
            kind, child = manifest["kind"], manifest["metadata"]["name"]
            worker = kind == "Deployment" and child == render.worker_name(t.name)
            if kind == "Deployment" and (hold_pods or any(f.needed_by_pods for f in failures)):
                live = current if worker else self.kube.get("apps/v1", "Deployment", t.namespace, child)
                replicas = (manifest.get("spec") or {}).get("replicas")
                try:
                    if isinstance(replicas, int) and self.resize(t, child, replicas, live):
                        changed.append(f"{kind}/{child}/scale")
                except ApiException as err:
                    message = f"resizing {kind} {child}: {error_text(err)}"
                    failures.append(Failure(digest, APPLY_FAILED, message, 1, 0.0, kind=kind))
                continue
            result = self._apply_one(t, manifest, digest, force=force)
            if isinstance(result, Failure):
                failures.append(result)
            elif result is not None:
                applied, was_changed = result
                if was_changed:
                    changed.append(f"{kind}/{child}")
                if worker:
                    deployment = applied
                elif kind == "Deployment":
                    canary = applied
        first = failures[0] if failures else None
        return Applied(
            changed=changed,
            error="; ".join(f.error for f in failures) or None,
            deployment=deployment,
            canary_deployment=canary,
            error_reason=first.reason if first else APPLY_FAILED,
        )

    def _apply_one(
        self, t: Tenant, manifest: render.Manifest, digest: str, *, force: bool
    ) -> Failure | tuple[Mapping[str, Any], bool] | None:
        """Apply one child: its failure, or (the child as applied, whether its owned fields changed), or None
        when it was skipped (unchanged since this process applied it)."""
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        key = (t.uid, kind, child)
        failed = self._backing_off(key, digest)
        if failed is not None:
            return failed
        with self._guard:
            cached = self._applied.get(key)
        if cached is not None and cached.digest == digest and manifest.get("immutable"):
            # Immutable and named after its content (a config revision): while it is there and the
            # tenant's, it holds what was applied. Its metadata comes from a watch: no request.
            meta = self.kube.metadata(manifest["apiVersion"], kind, t.namespace, child)
            if meta is not None:
                live_meta = {"kind": kind, "metadata": meta}
                conflict = foreign(live_meta, t)
                return self._failure(key, digest, NAME_CONFLICT, conflict) if conflict else None
        before = cached.owned if cached else ""
        watched = self.watched(manifest["apiVersion"], kind, t.namespace)
        live: Mapping[str, Any] | None = None
        if cached is None or watched:
            # First sight since this process started (also so "changed" is exact after a restart), or
            # free from the watch's memory: whose is it? Absent from a watch's memory, it may still exist
            # unlabelled: asked by name then (without a watch, the first read already was).
            live = self.kube.get(manifest["apiVersion"], kind, t.namespace, child)
            if live is None and cached is None and watched:
                live = self.direct.get(manifest["apiVersion"], kind, t.namespace, child)
            conflict = foreign(live, t)
            if conflict:
                return self._failure(key, digest, NAME_CONFLICT, conflict)
        if cached is not None and cached.digest == digest:
            if watched:
                drift = self._drift(key, cached, manifest, live)
                if drift is None:
                    return None  # forced or not: the live child has what was applied (read from memory)
                before = drift
            elif not force:
                return None
        if cached is None:
            before = render.owned_hash(manifest, live)
        try:
            applied = self.kube.apply(manifest)
        except ApiException as err:
            if _namespace_ends(err):
                raise NamespaceTerminating(t.namespace) from None
            return self._failure(key, digest, APPLY_FAILED, f"applying {kind} {child}: {error_text(err)}")
        after = render.owned_hash(manifest, applied)
        with self._guard:
            self._failed.pop(key, None)
            self._applied[key] = AppliedChild(digest, after, version_of(applied))
        return applied, after != before

"""kopf wiring: which events trigger a reconcile. Thin on purpose; the logic lives in reconcile.py.

No kopf state is stored on tenants (no finalizer, no last-handled annotation): a tenant is reconciled when
first seen (startup or creation) and whenever metadata.generation moves past status.observedGeneration,
so a spec change is noticed from the object itself and an unchanged tenant costs no writes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import kopf

from storyteller_api import contract
from storyteller_operator.leadership import Reconciles
from storyteller_operator.runner import Key

log = logging.getLogger("storyteller.operator.handlers")


@dataclasses.dataclass
class Options:
    recheck_seconds: float = 5.0  # how often tenants are looked at again (sessions; not-Ready ones)
    resync_seconds: float = 300.0  # how often every tenant is fully re-applied (undoes hand edits)
    workers: int = 8  # threads running reconciles


def _owner(body: Any) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == contract.KIND and ref.get("apiVersion", "").startswith(contract.GROUP + "/"):
            return str(ref["name"])
    return None


class Rechecked(Protocol):
    """What the recheck loop needs of the reconciler."""

    def due(self, resync_seconds: float) -> list[tuple[Key, bool]]: ...

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None: ...


def recheck_loop(reconciler: Rechecked, options: Options, stop: threading.Event) -> None:
    """Every `recheck_seconds` until `stop`, trigger the tenants that are due, on a small thread pool.

    A pass never waits for its triggers: one slow tenant (pods answering late, a hesitant API server)
    would hold back the next pass and with it every tenant's session counts and builtin autoscaling. A
    tenant whose last trigger from here is still queued or running sits the pass out instead: submitting
    it again would queue a second job behind the others, and `Runner.trigger` would then run the slow
    tenant back to back. Its turn comes at the first pass after it finishes.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, options.workers // 2), thread_name_prefix="recheck")
    unfinished: dict[Key, Future[None]] = {}

    def report(key: Key, future: Future[None]) -> None:
        # Runner.trigger logs a failed reconcile itself; this catches anything that escapes it.
        if not future.cancelled() and (err := future.exception()) is not None:
            log.error("recheck failed", extra={"namespace": key[0], "tenant": key[1]}, exc_info=err)

    try:
        while not stop.wait(options.recheck_seconds):
            try:
                due = reconciler.due(options.resync_seconds)
            except Exception:  # the loop must outlive one bad pass, or autoscaling stops for everyone
                log.exception("recheck pass failed")
                continue
            unfinished = {key: f for key, f in unfinished.items() if not f.done()}
            for key, force in due:
                if key in unfinished:
                    log.debug("recheck: still busy", extra={"namespace": key[0], "tenant": key[1]})
                    continue
                future = pool.submit(reconciler.trigger, *key, force_apply=force)
                future.add_done_callback(functools.partial(report, key))
                unfinished[key] = future
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def build_registry(reconciler: Reconciles, options: Options) -> kopf.OperatorRegistry:
    """The handlers, on `reconciler`: the operator passes a LeaderGate, so only the leader reconciles."""
    registry = kopf.OperatorRegistry()
    stop = threading.Event()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry gets none of kopf's default login handlers: use the same credentials
        # (in-cluster account or kubeconfig) as the reconciler's client.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are posted by the reconciler itself
        settings.scanning.disabled = True  # no CRD/namespace watching: less RBAC, the CRD is installed first
        # No kopf peering: it freezes replicas of equal priority. One leader is chosen by a Lease
        # (leadership.py) instead, and every replica watches, so a new leader knows every tenant.
        settings.peering.standalone = True
        settings.execution.max_workers = options.workers
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        threading.Thread(target=_recheck_loop, name="recheck", daemon=True).start()

    @kopf.on.cleanup(registry=registry)
    def shutdown(**_: Any) -> None:
        stop.set()

    def _recheck_loop() -> None:
        recheck_loop(reconciler, options, stop)

    @kopf.on.event(contract.GROUP, contract.VERSION, contract.PLURAL, registry=registry)
    def tenant_event(
        event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str | None, **_: Any
    ) -> None:
        assert namespace  # the CRD is namespaced
        deleted = event["type"] == "DELETED"
        # Tenants that start or stop sharing this one's agent name and LiveKit server say so in their status.
        for other in reconciler.note_tenant(namespace, name, None if deleted else body):
            reconciler.submit(*other, force_apply=False)
        if deleted:
            reconciler.forget(namespace, name, body.metadata.uid)
            return
        reconciler.seen(event["object"])
        if body.metadata.get("deletionTimestamp"):
            return
        observed = (body.get("status") or {}).get("observedGeneration")
        # type None: the initial listing (operator start) — re-apply everything in case it changed meanwhile.
        # A spec change re-applies only the children whose rendering changed: KEDA writing spec.replicas
        # every few seconds must not re-apply every child each time.
        # Submitted, not run here: kopf keeps every later event of this tenant until the handler returns.
        if event["type"] is None:
            reconciler.submit(namespace, name, force_apply=True)
        elif observed != body.metadata.get("generation"):
            reconciler.submit(namespace, name, force_apply=False)
        else:
            reconciler.touch(namespace, name)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={"app.kubernetes.io/managed-by": contract.MANAGER},
        registry=registry,
    )
    def deployment_event(
        event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str | None, **_: Any
    ) -> None:
        assert namespace
        owner = _owner(body)
        if owner is None:
            return
        deleted = event["type"] == "DELETED"
        if deleted:
            for ref in body.metadata.get("ownerReferences") or []:
                reconciler.forget_child(ref.get("uid", ""), "Deployment", name)
        else:
            reconciler.seen(event["object"])
        reconciler.submit(namespace, owner, force_apply=deleted)

    @kopf.on.probe(id="tenants", registry=registry)
    def tenants_probe(**_: Any) -> int:
        return len(reconciler.known())

    return registry

"""One level-based reconcile of a tenant: observe → plan → apply → report.

`observe.py` reads the tenant and its world (from watch-backed caches, cached.py) into a snapshot;
`plan.py` decides, purely, what the tenant should have; `apply.py` writes it; the status and Events come
from the plan and what applying it returned. Level-based: it converges from any state, including a half-
applied one left by a killed operator. `runner.py` decides when reconciles run; this module is the glue,
and the operator's metrics and log line per reconcile.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes.client import ApiException

from storyteller_operator import events as events_mod
from storyteller_operator import metrics, render, revisions, rollout
from storyteller_operator import plan as planner
from storyteller_operator import status as status_mod
from storyteller_operator.agent_names import AgentNames, claim_of, identity_of
from storyteller_operator.apply import Applier, NamespaceTerminating
from storyteller_operator.cached import CachedKube, Caches
from storyteller_operator.discovery import ApiDiscovery
from storyteller_operator.kube import KubeClient, error_text
from storyteller_operator.observe import Observer, Snapshot
from storyteller_operator.revision_figures import FigureSource, PrometheusFigures
from storyteller_operator.runner import Key, Runner
from storyteller_operator.sessions import SessionSource
from storyteller_operator.tenancy import TenancyRules
from storyteller_operator.tenant import InvalidSpec, Tenant

log = logging.getLogger("storyteller.operator.reconcile")


class EventSink(Protocol):
    """Posts a Kubernetes Event about `obj` (the Kube client's post_event; a list in tests)."""

    def __call__(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclasses.dataclass
class Outcome:
    changed: list[str]
    status_written: bool
    phase: str

    @property
    def wrote(self) -> bool:
        return bool(self.changed) or self.status_written


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        events: EventSink,
        *,
        clock: Callable[[], str] = utc_now,
        detect_pod_monitor: bool = True,
        sessions: SessionSource | None = None,
        prometheus_url: str | None = None,
        caches: Caches | None = None,
        figures: FigureSource | None = None,
        rules: TenancyRules | None = None,
    ) -> None:
        """`prometheus_url`: KEDA's trigger and canary analysis read there. `figures`: where canaries'
        figures come from (default: that Prometheus; none without it). `rules`: what the platform lets
        tenants use (tenancy.py; the safe defaults when None)."""
        self.rules = rules or TenancyRules()
        self.caches = caches
        # With caches, reads come from the informers' memory (cached.py) and writes go to `kube`.
        direct = kube
        self.kube: KubeClient = kube if caches is None else CachedKube(kube, caches)
        kube = self.kube
        self.events = events
        self.clock = clock
        self.sessions = sessions
        self.prometheus_url = prometheus_url
        self.discovery = ApiDiscovery(kube.has_api)
        self.agent_names = AgentNames()
        self.observer = Observer(
            kube,
            self.discovery,
            sessions=sessions,
            detect_pod_monitor=detect_pod_monitor,
            keda_configured=bool(prometheus_url),
            agent_names=self.agent_names,
            figures=figures or (PrometheusFigures(prometheus_url) if prometheus_url else None),
        )
        self.applier = Applier(kube, caches.covers if caches else None, direct=direct)
        self.runner = Runner(self._reconcile_phase)
        self._memory: dict[Key, planner.Memory] = {}
        self._rendered = planner.Rendered()
        self._parsed: dict[str, Tenant] = {}  # tenant uid → its last version, parsed
        # Tenants whose namespace is being deleted: every write would be refused until they are gone.
        self._terminating: set[str] = set()
        self._guard = threading.Lock()

    # ------------------------------------------------------------------------------ the runner's face

    def touch(self, namespace: str, name: str) -> None:
        self.runner.touch(namespace, name)

    def known(self) -> list[Key]:
        return self.runner.known()

    def due(self, resync_seconds: float) -> list[tuple[Key, bool]]:
        # With a session source every tenant is visited, to read its sessions.
        return self.runner.due(resync_seconds, poll_all=self.sessions is not None)

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        self.runner.trigger(namespace, name, force_apply=force_apply)

    def submit(self, namespace: str, name: str, *, force_apply: bool) -> None:
        self.runner.submit(namespace, name, force_apply=force_apply)

    def note_tenant(self, namespace: str, name: str, obj: Mapping[str, Any] | None) -> list[Key]:
        """Record the agent name and LiveKit server a tenant (None: deleted) registers under; return the
        other tenants that now start or stop sharing them, to be reconciled so their status says so."""
        key = (namespace, name)
        if obj is None:
            affected = self.agent_names.update(key, None)
        else:
            affected = self.agent_names.update(key, identity_of(obj), claim_of(obj))
        return sorted(affected)

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        """A tenant is gone: drop its cache entries, state, memory and metric series."""
        if uid:
            self.applier.forget_tenant(uid)
            self._rendered.forget(uid)
            self.observer.forget(uid)
            with self._guard:
                self._parsed.pop(uid, None)
                self._terminating.discard(uid)
        self.runner.drop(namespace, name)
        with self._guard:
            self._memory.pop((namespace, name), None)
        metrics.forget_tenant(name, namespace)
        others = [n for ns, n in self.runner.known() if ns == namespace and n != name]
        if self.caches is not None and not others:
            self.caches.release(namespace)  # the namespace's own Secret informer, if one was started

    def seen(self, obj: Mapping[str, Any]) -> None:
        """An object as a watch event brought it to kopf: into the cache before the reconcile it triggers,
        which must not read an older version from an informer that has not had the event yet."""
        if self.caches is not None:
            self.caches.remember(obj)

    def forget_child(self, uid: str, kind: str, name: str) -> None:
        """A child was deleted behind our back: the next reconcile must apply it again."""
        self.applier.forget_child(uid, kind, name)

    # -------------------------------------------------------------------------------------- reconcile

    def _reconcile_phase(self, namespace: str, name: str, force_apply: bool) -> str | None:
        outcome = self.reconcile(namespace, name, force_apply=force_apply)
        return outcome.phase if outcome else None

    def reconcile(self, namespace: str, name: str, *, force_apply: bool = True) -> Outcome | None:
        """Bring one tenant's children and status in line with its spec. None when the tenant is gone.

        force_apply=False skips children whose rendered manifest is unchanged since this process last
        applied it (cheap status refreshes); force_apply=True re-applies everything, which also undoes
        hand edits of the children (the API server turns an unchanged apply into a no-op).
        """
        started = time.perf_counter()
        try:
            outcome = self._reconcile(namespace, name, force_apply)
        except Exception:
            metrics.RECONCILE_TOTAL.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if outcome is not None:
            metrics.RECONCILE_TOTAL.labels(result="changed" if outcome.wrote else "unchanged").inc()
        return outcome

    def _report_invalid(self, obj: Mapping[str, Any], error: str) -> Outcome:
        """A stored spec the models refuse (one the CRD of an older release let through): say so and leave
        the children as they are, so the pool goes on serving with its last good config."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        stored = obj.get("status") or {}
        new_status = status_mod.invalid(
            int(meta.get("generation") or 0), f"spec.{error}", stored, self.clock()
        )
        written = status_mod.differs(new_status, stored)
        if written:
            self.kube.patch_status(namespace, name, new_status)
            for event in events_mod.transitions(stored, new_status, []):
                self.events(obj, type=event.type, reason=event.reason, message=event.message)
        # Once when it is found (the status changes), not on every recheck of a tenant that stays invalid.
        log.log(
            logging.WARNING if written else logging.DEBUG,
            "invalid spec",
            extra={"tenant": name, "namespace": namespace, "error": error},
        )
        return Outcome(changed=[], status_written=written, phase=new_status["phase"])

    def _parse(self, obj: Mapping[str, Any]) -> Tenant:
        """The tenant's typed spec, parsed once per version of the tenant (validation is a third of a
        steady reconcile's CPU)."""
        meta = obj["metadata"]
        uid, version = str(meta.get("uid", "")), str(meta.get("resourceVersion", ""))
        with self._guard:
            found = self._parsed.get(uid)
        if version and found is not None and found.resource_version == version:
            return found
        parsed = Tenant.from_object(obj)
        if version:
            with self._guard:
                self._parsed[uid] = parsed
        return parsed

    def _namespace_ending(self, tenant: Tenant) -> None:
        """The tenant's namespace is being deleted: no more requests for it (each would be refused)."""
        log.info("namespace terminating", extra={"tenant": tenant.name, "namespace": tenant.namespace})
        with self._guard:
            self._terminating.add(tenant.uid)

    def _plan_failed(self, snap: Snapshot, memory: planner.Memory, err: Exception) -> Outcome | None:
        """The plan could not be made: resize the pool on its last template, and say so (Degraded,
        PlanFailed) until a later spec or state lets the planner through."""
        tenant = snap.tenant
        namespace, name = tenant.namespace, tenant.name
        sizing, memory = planner.size_only(snap, memory, time.monotonic(), self.rules)
        with self._guard:
            self._memory[(namespace, name)] = memory
        worker = render.worker_name(name)
        try:
            resized = self.applier.resize(tenant, worker, sizing.desired, snap.deployment)
        except NamespaceTerminating:
            self._namespace_ending(tenant)
            return None
        except ApiException as refused:  # in the log; the status says why the plan failed
            log.warning(
                "cannot resize", extra={"tenant": name, "namespace": namespace, "error": error_text(refused)}
            )
            resized = False
        changed = [f"Deployment/{worker}/scale"] if resized else []
        observation = status_mod.Observation(
            generation=tenant.generation,
            suspended=tenant.spec.suspend,
            sessions_per_worker=tenant.spec.pool.sessions_per_worker,
            name=name,
            desired_replicas=sizing.desired,
            config_hash=str(snap.status.get("configHash") or ""),
            apply_error=(
                f"the operator could not plan this tenant ({type(err).__name__}: {str(err)[:300]}); its pool "
                "keeps its last config and is still sized; every reconcile plans it again"
            ),
            apply_error_reason=status_mod.PLAN_FAILED,
            deployment=snap.deployment,
            active_sessions=sizing.active,
        )
        new_status = status_mod.compute(observation, snap.status, self.clock())
        written = status_mod.differs(new_status, snap.status)
        # With its cause once when it is new, not on every recheck of a tenant that stays unplannable.
        log.log(
            logging.ERROR if written else logging.DEBUG,
            "planning failed",
            exc_info=err if written else None,
            extra={"tenant": name, "namespace": namespace, "desired": sizing.desired},
        )
        if written:
            self.kube.patch_status(namespace, name, new_status)
            for event in events_mod.transitions(snap.status, new_status, changed):
                self.events(tenant.obj, type=event.type, reason=event.reason, message=event.message)
        metrics.POOL_DESIRED_REPLICAS.labels(tenant=name, namespace=namespace).set(sizing.desired)
        return Outcome(changed=changed, status_written=written, phase=new_status["phase"])

    def _reconcile(self, namespace: str, name: str, force_apply: bool) -> Outcome | None:
        obj = self.observer.tenant_object(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            # Owner references make the garbage collector delete the children; nothing to do here.
            self.forget(namespace, name, (obj or {}).get("metadata", {}).get("uid"))
            return None

        with self._guard:
            terminating = obj["metadata"].get("uid") in self._terminating
        if terminating:
            return None  # its namespace is going, and it with it: no request that would be refused
        try:
            parsed = self._parse(obj)
        except InvalidSpec as err:
            return self._report_invalid(obj, str(err))

        def may_own_scaled_object(tenant: Tenant, sized_by: str) -> bool:
            # A tenant that left keda: KEDA would keep an HPA writing spec.replicas.
            child = render.worker_name(tenant.name)
            return (
                force_apply or sized_by == "keda" or self.applier.remembers(tenant.uid, "ScaledObject", child)
            )

        snap = self.observer.observe(parsed, check_scaled_object=may_own_scaled_object)
        key = (namespace, name)
        with self._guard:
            memory = self._memory.get(key, planner.Memory())
        try:
            plan = planner.plan(
                snap,
                memory,
                prometheus_url=self.prometheus_url,
                now=time.monotonic(),
                rendered=self._rendered,
                rules=self.rules,
            )
        except Exception as err:  # whatever the cause, the pool must go on following its load
            return self._plan_failed(snap, memory, err)
        with self._guard:
            self._memory[key] = plan.memory

        tenant = plan.tenant
        if plan.seed_replicas is not None:
            self.applier.seed_replicas(snap.tenant, plan.seed_replicas)
        self.applier.price_pods(namespace, plan.prices)
        if snap.scaled_object_checked:
            self.applier.forget_child(tenant.uid, "ScaledObject", render.worker_name(name))
        if plan.prune_scaled_object:
            self.applier.prune_scaled_object(tenant)
        if plan.prune_canary:
            self.applier.prune_canary(tenant)
        try:
            applied = self.applier.apply_children(
                plan,
                force=force_apply,
                current=snap.deployment,
                hold_pods=plan.hold_pods is not None,
            )
        except NamespaceTerminating:
            self._namespace_ending(tenant)
            return None
        if applied.error is None:
            hashes = {plan.spec_config_hash, *(str(e.get(revisions.CONFIG_HASH)) for e in plan.revisions)}
            self.applier.collect_config_revisions(tenant, {render.config_map_name(name, h) for h in hashes})
        if plan.sizing.active is not None:
            metrics.POOL_ACTIVE_SESSIONS.labels(tenant=name, namespace=namespace).set(plan.sizing.active)

        new_status, events = planner.report(plan, snap, applied, self.clock())
        status_written = False
        if status_mod.differs(new_status, snap.status):
            try:
                self.kube.patch_status(namespace, name, new_status)
                status_written = True
            except ApiException as err:
                if err.status != 404:  # deleted meanwhile: nothing left to report on
                    raise
        metrics.POOL_DESIRED_REPLICAS.labels(tenant=name, namespace=namespace).set(plan.sizing.desired)
        metrics.POOL_MAX_REPLICAS.labels(tenant=name, namespace=namespace).set(tenant.spec.pool.max_replicas)
        problem = plan.rollout.problem
        failed = problem is not None and problem[0] == rollout.CANARY_FAILED
        metrics.CANARY_FAILED.labels(tenant=name, namespace=namespace).set(1 if failed else 0)
        for event in events:
            self.events(tenant.obj, type=event.type, reason=event.reason, message=event.message)
        # Most reconciles (every recheck of every tenant) change nothing: info only for news.
        news = bool(applied.changed) or status_written or new_status["phase"] != snap.status.get("phase")
        log.log(
            logging.INFO if news else logging.DEBUG,
            "reconciled",
            extra={
                "tenant": name,
                "namespace": namespace,
                "generation": tenant.generation,
                "phase": new_status["phase"],
                "changed": list(applied.changed),
                "status_written": status_written,
            },
        )
        # A child that failed is retried after its own backoff (apply.py); the tenant's reconciles go on, so
        # its pool keeps being sized.
        return Outcome(
            changed=list(applied.changed), status_written=status_written, phase=new_status["phase"]
        )

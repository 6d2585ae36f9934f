"""One level-based reconcile of a tenant: read it, render its children, apply them, write the status.

Every trigger (a tenant's spec change or first sight, a child Deployment's event, the periodic recheck)
calls `Reconciler.trigger(namespace, name)`, which runs at most one reconcile per tenant at a time and
coalesces triggers arriving meanwhile. A reconcile always reads the tenant fresh, so it never acts on a
stale copy, and it is level-based: it converges from any state, including a half-applied one left by a
killed operator.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes.client import ApiException

from storyteller_operator import metrics, policy, render, scaling
from storyteller_operator import status as status_mod
from storyteller_operator.kube import KubeClient
from storyteller_operator.sessions import SessionSource

log = logging.getLogger("storyteller.operator.reconcile")

API_RECHECK_SECONDS = 300.0  # how stale "is this optional API served?" may be once it is
API_ABSENT_RECHECK_SECONDS = 30.0  # sooner while it is not: a user installing KEDA waits this long at most
KEDA_API = ("keda.sh/v1alpha1", "ScaledObject")
PODMONITOR_API = ("monitoring.coreos.com/v1", "PodMonitor")
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


class EventSink(Protocol):
    """Posts a Kubernetes Event about `obj` (kopf.event in production, a list in tests)."""

    def __call__(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclasses.dataclass
class TenantState:
    """What the operator remembers about one tenant between triggers (in memory only)."""

    running: bool = False
    pending: bool = False
    force: bool = False
    failed: bool = False
    phase: str = ""
    last_forced: float = -1e12
    history: policy.History | None = None  # the builtin autoscaler's recent recommendations
    deferred_scale_in: bool = False  # the last reconcile held a scale-in back for fresh pod prices


@dataclasses.dataclass(frozen=True)
class Sizing:
    """How many workers to run now, and why (for the status)."""

    desired: int
    active: int | None  # sessions counted; None: not observed this time (status keeps the last value)
    limited: str | None  # policy.AT_MAX / AT_MIN
    demand: int | None  # what the demand asked for before clamping; None: nothing to report
    demand_words: str  # who asked, for the ScalingLimited message
    problem: tuple[str, str] | None  # (reason, message) when the pool cannot be sized as it should


class ReconcileError(Exception):
    """The tenant could not be fully applied; the status already says why. Retry later."""


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


def _error_text(err: ApiException) -> str:
    """The API server's message (names the field), without the response headers."""
    try:
        message = json.loads(err.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{err.status} {err.reason}: {message or err.body}"


def _owned_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether `obj` exists and names the tenant with `uid` among its owners."""
    owners = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)


def _ready_for(pod: Mapping[str, Any], now: datetime.datetime) -> float:
    """Seconds since the pod became Ready (-1 when it is not Ready)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") != "True":
                return -1.0
            since = cond.get("lastTransitionTime")
            if not since:
                return 0.0
            try:
                at = datetime.datetime.fromisoformat(str(since).replace("Z", "+00:00"))
            except ValueError:
                return 0.0
            return max((now - at).total_seconds(), 0.0)
    return -1.0


def _demand_words(active: int, decision: policy.Decision, spec: Mapping[str, Any]) -> str:
    """What the builtin policy counted, for the ScalingLimited message ("... ask for N workers")."""
    spare = scaling.pool_limits(spec).spare_sessions
    words = f"{_count(active, 'active session')}, {_count(spare, 'spare slot')}"
    if decision.lead_sessions:
        words += (
            f" and {_count(decision.lead_sessions, 'slot')} for sessions expected within a pod's start-up"
        )
    return words


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
    ) -> None:
        self.kube = kube
        self.events = events
        self.clock = clock
        self.sessions = sessions
        self.prometheus_url = prometheus_url
        self.detect_pod_monitor = detect_pod_monitor
        # (group/version, kind) → (served, monotonic time of the check)
        self._apis: dict[tuple[str, str], tuple[bool, float]] = {}
        # (tenant uid, kind, name) → (hash of the manifest last applied, hash of the owned fields after it).
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._states: dict[tuple[str, str], TenantState] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------------------------ bookkeeping

    def _state(self, namespace: str, name: str) -> TenantState:
        with self._guard:
            return self._states.setdefault((namespace, name), TenantState())

    def touch(self, namespace: str, name: str) -> None:
        """Remember a tenant seen in a watch event that needs no reconcile (for the periodic recheck)."""
        self._state(namespace, name)

    def known(self) -> list[tuple[str, str]]:
        with self._guard:
            return list(self._states)

    def due(self, resync_seconds: float) -> list[tuple[tuple[str, str], bool]]:
        """Tenants the periodic recheck should visit, each with whether to force a full apply.

        Ready tenants hear about their pods through Deployment events, so between full resyncs only the
        ones that are not Ready (a missing Secret, a rollout, a failed apply) are polled; with a session
        source every tenant is, cheaply (nothing is applied unless it changed), to read its sessions.
        """
        now = time.monotonic()
        out = []
        with self._guard:
            for key, st in self._states.items():
                force = st.failed or now - st.last_forced >= resync_seconds
                if force or st.phase != "Ready" or self.sessions is not None:
                    out.append((key, force))
        return out

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        """A tenant is gone: drop its cache entries, state and metric series."""
        if uid:
            for key in [k for k in self._applied if k[0] == uid]:
                self._applied.pop(key, None)
        with self._guard:
            st = self._states.get((namespace, name))
            if st is not None and not st.running:
                del self._states[(namespace, name)]
        metrics.forget_tenant(name, namespace)

    def forget_child(self, uid: str, kind: str, name: str) -> None:
        """A child was deleted behind our back: the next reconcile must apply it again."""
        self._applied.pop((uid, kind, name), None)

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        """Reconcile now, or, if a reconcile of this tenant is running, once more right after it.

        Triggers that arrive while one runs coalesce into a single follow-up, so a burst of Deployment
        events costs one extra reconcile and no thread ever waits on another's lock.
        """
        st = self._state(namespace, name)
        with self._guard:
            st.pending = True
            st.force = st.force or force_apply
            if st.running:
                return
            st.running = True
        try:
            while True:
                with self._guard:
                    if not st.pending:
                        return
                    force, st.pending, st.force = st.force, False, False
                try:
                    outcome = self.reconcile(namespace, name, force_apply=force)
                except Exception as err:  # retried by the periodic recheck; logged with the tenant
                    st.failed = True
                    log.warning(
                        "reconcile failed",
                        extra={"tenant": name, "namespace": namespace, "error": str(err)[:500]},
                    )
                    continue
                st.failed = False
                if force:
                    st.last_forced = time.monotonic()
                if outcome is None:
                    with self._guard:
                        st.running = False
                        self._states.pop((namespace, name), None)
                    return
                st.phase = outcome.phase
        finally:
            with self._guard:
                st.running = False

    def api_served(self, api: tuple[str, str]) -> bool:
        """Whether the API server serves an optional kind (the Prometheus Operator's, KEDA's), re-checked
        every few minutes, or every few seconds while it is absent."""
        served, checked = self._apis.get(api, (False, -1e12))
        now = time.monotonic()
        if now - checked >= (API_RECHECK_SECONDS if served else API_ABSENT_RECHECK_SECONDS):
            try:
                served = self.kube.has_api(*api)
            except ApiException as err:
                log.warning("cannot discover an API", extra={"api": "/".join(api), "error": _error_text(err)})
            self._apis[api] = (served, now)
        return served

    def pod_monitor_enabled(self) -> bool:
        return self.detect_pod_monitor and self.api_served(PODMONITOR_API)

    def _keda_problem(self, spec: Mapping[str, Any], replicas: int) -> tuple[str, str] | None:
        """Why a keda tenant gets no ScaledObject (reason, message), or None when it can have one."""
        if scaling.autoscaler(spec) != "keda":
            return None
        held = f"the pool stays at {replicas} workers (spec.replicas)"
        if not self.prometheus_url:
            return (
                "KedaNotConfigured",
                "autoscaler keda needs the Prometheus address KEDA queries: set the chart value "
                f"prometheus.url (operator flag --prometheus-url); {held}",
            )
        if not self.api_served(KEDA_API):
            return (
                "KedaNotInstalled",
                f"autoscaler keda needs KEDA: this cluster does not serve {'/'.join(KEDA_API)}; {held}",
            )
        return None

    def _prune_scaled_object(self, tenant: Mapping[str, Any], force_apply: bool) -> bool:
        """Delete the ScaledObject this tenant no longer wants (autoscaler changed from keda): else KEDA
        would keep an HPA writing spec.replicas. True when one was deleted."""
        meta = tenant["metadata"]
        child = render.worker_name(meta["name"])
        key = (meta["uid"], KEDA_API[1], child)
        if not (force_apply or key in self._applied) or not self.api_served(KEDA_API):
            return False
        self._applied.pop(key, None)
        current = self.kube.get(KEDA_API[0], KEDA_API[1], meta["namespace"], child)
        if not _owned_by(current, meta["uid"]):
            return False  # absent, or somebody else's: never delete what this tenant does not own
        self.kube.delete(KEDA_API[0], KEDA_API[1], meta["namespace"], child)
        return True

    # -------------------------------------------------------------------------------------- reconcile

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

    def _reconcile(self, namespace: str, name: str, force_apply: bool) -> Outcome | None:
        tenant = self.kube.get(render.API_VERSION, render.KIND, namespace, name)
        if tenant is None or tenant["metadata"].get("deletionTimestamp"):
            # Owner references make the garbage collector delete the children; nothing to do here.
            self.forget(namespace, name, (tenant or {}).get("metadata", {}).get("uid"))
            return None
        meta, spec = tenant["metadata"], tenant.get("spec") or {}
        uid = meta["uid"]
        old_status = tenant.get("status") or {}
        config = render.worker_config(name, namespace, spec)
        # Read once: it seeds the autoscaler, holds a partial count, and is the status when unchanged.
        current = self.kube.get("apps/v1", "Deployment", namespace, render.worker_name(name))
        if not _owned_by(current, uid):
            current = None  # absent, or left by an earlier tenant of the same name: nothing to go by
        current_replicas = int((current["spec"] or {}).get("replicas") or 0) if current else None
        # The autoscaler the Deployment was last sized by ("" when unknown).
        sized_by = str(
            ((current or {}).get("metadata") or {})
            .get("annotations", {})
            .get(render.AUTOSCALER_ANNOTATION, "")
        )
        spec = self._seed_spec_replicas(tenant, spec, current_replicas, sized_by)
        size = self._size_pool(namespace, name, spec, current_replicas)
        desired = size.desired
        keda_problem = self._keda_problem(spec, desired)

        missing = [
            (secret, field)
            for secret, field in render.referenced_secrets(spec)
            if not self.kube.exists("v1", "Secret", namespace, secret)
        ]

        changed: list[str] = []
        apply_error: str | None = None
        dep: dict[str, Any] | None = current
        never_reconciled = "observedGeneration" not in old_status
        children = render.children(
            tenant,
            pod_monitor_enabled=self.pod_monitor_enabled(),
            replicas=desired,
            keda_prometheus_url=None if keda_problem else self.prometheus_url,
        )
        # A keda tenant keeps its ScaledObject even while the operator cannot render one (no Prometheus
        # address after a restart): KEDA goes on with the last one.
        if scaling.autoscaler(spec) != "keda" and self._prune_scaled_object(
            tenant, force_apply or sized_by == "keda"
        ):
            self.events(
                tenant,
                type="Normal",
                reason="Deleted",
                message=f"deleted ScaledObject/{render.worker_name(name)}: pool.autoscaler is not keda",
            )
        for manifest in children:
            kind, child = manifest["kind"], manifest["metadata"]["name"]
            key = (uid, kind, child)
            digest = render.manifest_hash(manifest)
            cached = self._applied.get(key)
            if not force_apply and cached and cached[0] == digest:
                continue
            before = cached[1] if cached else ""
            if cached is None and not never_reconciled:
                # First sight since this process started: read it so "changed" is exact after a restart.
                before = render.owned_hash(
                    manifest, self.kube.get(manifest["apiVersion"], kind, namespace, child)
                )
            try:
                applied = self.kube.apply(manifest)
            except ApiException as err:
                if err.status == 403 and "being terminated" in str(err.body):
                    # The namespace is being deleted, the tenant with it: nothing to converge to.
                    log.info("namespace terminating", extra={"tenant": name, "namespace": namespace})
                    return None
                apply_error = f"applying {kind} {child}: {_error_text(err)}"
                break
            after = render.owned_hash(manifest, applied)
            if after != before:
                changed.append(f"{kind}/{child}")
            self._applied[key] = (digest, after)
            if kind == "Deployment":
                dep = applied

        obs = status_mod.Observation(
            generation=int(meta.get("generation") or 0),
            spec=spec,
            name=name,
            desired_replicas=desired,
            config_hash=render.config_hash(config),
            missing_secrets=missing,
            apply_error=apply_error,
            deployment=dep,
            active_sessions=size.active,
            scaling_limited=size.limited,
            demand_replicas=size.demand,
            demand_source=size.demand_words,
            scaling_problem=size.problem or keda_problem,
        )
        new_status = status_mod.compute(obs, old_status, self.clock())
        status_written = False
        if status_mod.differs(new_status, old_status):
            try:
                self.kube.patch_status(namespace, name, new_status)
                status_written = True
            except ApiException as err:
                if err.status != 404:  # deleted meanwhile: nothing left to report on
                    raise
        metrics.POOL_DESIRED_REPLICAS.labels(tenant=name, namespace=namespace).set(desired)

        self._post_events(tenant, old_status, new_status, changed)
        log.info(
            "reconciled",
            extra={
                "tenant": name,
                "namespace": namespace,
                "generation": obs.generation,
                "phase": new_status["phase"],
                "changed": changed,
                "status_written": status_written,
            },
        )
        if apply_error:
            raise ReconcileError(apply_error)
        return Outcome(changed=changed, status_written=status_written, phase=new_status["phase"])

    def _seed_spec_replicas(
        self, tenant: Mapping[str, Any], spec: dict[str, Any], current_replicas: int | None, sized_by: str
    ) -> dict[str, Any]:
        """A none/keda tenant gets its running size written to spec.replicas (scale subresource) when it
        has none, or when it comes from builtin (which ignores, and so may have left, a stale one).

        Switching from builtin must not drop a busy pool to another size, and KEDA reads the size it starts
        from in spec.replicas (absent reads as 0, which it would "scale from zero" to its minimum). The
        patch carries the tenant's resourceVersion: a kubectl scale that came first wins. A failed write
        leaves spec.replicas alone and sizes the pool from the running size this time; the next reconcile
        tries again.
        """
        if (
            scaling.autoscaler(spec) not in scaling.MANUAL_AUTOSCALERS
            or spec.get("suspend")
            or current_replicas is None
            or (spec.get("replicas") is not None and sized_by != "builtin")
        ):
            return spec
        meta = tenant["metadata"]
        seeded = policy.clamp(current_replicas, scaling.pool_limits(spec))
        extra = {"tenant": meta["name"], "namespace": meta["namespace"], "replicas": seeded}
        try:
            self.kube.scale(meta["namespace"], meta["name"], seeded, resource_version=meta["resourceVersion"])
        except ApiException as err:
            if err.status == 409:  # the tenant changed since it was read: the next reconcile decides
                log.info("spec.replicas changed meanwhile", extra=extra)
            else:
                log.warning("cannot seed spec.replicas", extra={**extra, "error": _error_text(err)})
        else:
            log.info("seeded spec.replicas", extra=extra)
        return {**spec, "replicas": seeded}

    def _size_pool(
        self, namespace: str, name: str, spec: Mapping[str, Any], current_replicas: int | None
    ) -> Sizing:
        pods, per_pod, answering = self._observe_sessions(namespace, name)
        silent = answering - set(per_pod or {})
        # Nobody answered while workers should (the source is down, or a NetworkPolicy): no count at all.
        active = sum(per_pod.values()) if per_pod is not None and (per_pod or not answering) else None
        if active is not None:
            metrics.POOL_ACTIVE_SESSIONS.labels(tenant=name, namespace=namespace).set(active)
        decision = self._autoscale(namespace, name, spec, active, current_replicas)
        static = scaling.static_size(spec)
        desired = decision.replicas if decision else static.replicas
        problem: tuple[str, str] | None = None
        if per_pod is not None and silent and not spec.get("suspend"):
            # Some workers did not say how busy they are: never shrink on a partial count, whoever asks
            # (a silent pod has no price, so the ReplicaSet could pick it though it is busy). The
            # Deployment's own size, not the pods counted: a rollout's surge pods must not ratchet it up.
            held = max(desired, current_replicas or 0)
            # Said when it holds the pool back, or when the builtin policy has nothing to decide on.
            if held > desired or (active is None and scaling.autoscaler(spec) == "builtin"):
                where = self.sessions.where if self.sessions else ""
                problem = (
                    "WorkersNotReporting",
                    f"{len(silent)} of {len(answering)} ready workers did not report their sessions "
                    f"({where}); the pool is held at {held} workers until they do",
                )
            desired = held
        if per_pod:
            # Whoever chose the size (the policy, KEDA, kubectl scale), the operator lowers the Deployment.
            desired = self._protect_busy_pods(namespace, name, pods, per_pod, desired, current_replicas)
        if decision and active is not None:  # the policy decides only on a count
            return Sizing(desired, active, decision.limited, decision.unclamped,
                          _demand_words(active, decision, spec), problem)  # fmt: skip
        return Sizing(desired, active, static.limited, static.requested, "spec.replicas", problem)

    def _observe_sessions(
        self, namespace: str, name: str
    ) -> tuple[list[dict[str, Any]], dict[str, int] | None, set[str]]:
        """The tenant's pods, pod → sessions as its workers report them (None: no session source), and
        the names of the pods that must have answered: ready (the kubelet's probe reached the worker's
        HTTP server, which also serves /worker; a worker takes no job before it listens) for at least the
        source's settling time (a Prometheus scrape), and not terminating."""
        if self.sessions is None:
            return [], None, set()
        pods = self.kube.list("v1", "Pod", namespace, render.selector_string(name))
        now = datetime.datetime.now(datetime.UTC)
        answering = {
            p["metadata"]["name"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and _ready_for(p, now) >= self.sessions.settle_seconds
        }
        return pods, self.sessions.active_sessions(pods), answering

    def _autoscale(
        self,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        active: int | None,
        current_replicas: int | None,
    ) -> policy.Decision | None:
        """The builtin policy's decision, or None where the pool's size is static (none, keda, suspended)."""
        if spec.get("suspend") or scaling.autoscaler(spec) != "builtin" or active is None:
            return None
        limits = scaling.pool_limits(spec)
        st = self._state(namespace, name)
        now = time.monotonic()
        if st.history is None:
            # First sight (or an operator restart): never shrink a pool before a whole delay has passed.
            st.history = policy.seed_history(current_replicas or limits.min_replicas, now)
        decision = policy.decide(active, limits, st.history, now)
        st.history = decision.history
        return decision

    def _protect_busy_pods(
        self,
        namespace: str,
        name: str,
        pods: list[dict[str, Any]],
        per_pod: Mapping[str, int],
        desired: int,
        current_replicas: int | None,
    ) -> int:
        """Keep each pod priced by its sessions, and return the replicas to apply now.

        The ReplicaSet removes the cheapest pods first (controller.kubernetes.io/pod-deletion-cost), so
        idle pods go and calls are never cut; the ones that must go anyway drain (the worker finishes its
        sessions on SIGTERM). Prices are patched only when they change. The ReplicaSet reads pods from its
        own cache, so a scale-in right after a price change could still pick by the old price: it waits
        one reconcile then (once, so a busy pool whose prices always move still shrinks).
        """
        repriced = False
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if pod_name not in per_pod or pod["metadata"].get("deletionTimestamp"):
                continue  # unknown, or already leaving: its price no longer matters
            price = str(per_pod[pod_name])
            if (pod["metadata"].get("annotations") or {}).get(POD_DELETION_COST) != price:
                self.kube.annotate("v1", "Pod", namespace, pod_name, {POD_DELETION_COST: price})
                repriced = True
        st = self._state(namespace, name)
        shrinking = current_replicas is not None and desired < current_replicas
        if shrinking and repriced and not st.deferred_scale_in:
            st.deferred_scale_in = True
            return current_replicas or 0
        st.deferred_scale_in = False
        return desired

    # ----------------------------------------------------------------------------------------- events

    def _post_events(
        self, tenant: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], changed: list[str]
    ) -> None:
        """Events for what the operator did and for transitions, never for an unchanged reconcile."""
        if changed:
            message = "applied " + ", ".join(changed)
            if old.get("configHash") and old.get("configHash") != new["configHash"]:
                message += (
                    f"; worker config changed ({old['configHash']} → {new['configHash']}), rolling the pool"
                )
            self.events(tenant, type="Normal", reason="Applied", message=message)
        old_deg = status_mod.condition(old, status_mod.DEGRADED) or {}
        new_deg = status_mod.condition(new, status_mod.DEGRADED) or {}
        if new_deg.get("status") == "True" and (
            old_deg.get("status") != "True" or old_deg.get("message") != new_deg.get("message")
        ):
            self.events(
                tenant, type="Warning", reason=str(new_deg["reason"]), message=str(new_deg["message"])
            )
        elif old_deg.get("status") == "True" and new_deg.get("status") != "True":
            self.events(
                tenant, type="Normal", reason="Recovered", message=f"no longer {old_deg.get('reason')}"
            )
        old_ready = status_mod.condition(old, status_mod.READY) or {}
        new_ready = status_mod.condition(new, status_mod.READY) or {}
        if new_ready.get("status") == "True" and old_ready.get("status") != "True":
            self.events(tenant, type="Normal", reason="PoolReady", message=str(new_ready.get("message")))
        # ScalingLimited at a bound is routine; a KEDA tenant without KEDA needs somebody to act.
        old_lim = status_mod.condition(old, status_mod.SCALING_LIMITED) or {}
        new_lim = status_mod.condition(new, status_mod.SCALING_LIMITED) or {}
        if str(new_lim.get("reason", "")).startswith("Keda") and new_lim.get("reason") != old_lim.get(
            "reason"
        ):
            self.events(
                tenant, type="Warning", reason=str(new_lim["reason"]), message=str(new_lim["message"])
            )
        if new.get("phase") == "Suspended" and old.get("phase") != "Suspended":
            self.events(
                tenant, type="Normal", reason="Suspended", message="pool scaled to zero (spec.suspend)"
            )

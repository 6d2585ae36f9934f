"""Plan: from a snapshot (and what the operator remembers) to what one reconcile does. Pure, no I/O.

`plan()` decides the pool's size (builtin policy, KEDA/kubectl's spec.replicas, suspend, a partial count
held), the pods' deletion prices, a spec.replicas seed, the children to apply and the ScaledObject to
prune. `report()` turns the plan and what applying it returned into the status and the Events.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from storyteller_api import contract
from storyteller_api.spec import MANUAL_AUTOSCALERS, TenantSpec
from storyteller_operator import events, policy, render, revisions, rollout, scaling, tenancy
from storyteller_operator import status as status_mod
from storyteller_operator.observe import Snapshot, owned_by
from storyteller_operator.tenant import Tenant


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the planner remembers about one tenant between reconciles (in memory only)."""

    history: policy.History | None = None  # the builtin autoscaler's recent recommendations
    deferred_scale_in: bool = False  # the last plan held a scale-in back for fresh pod prices


@dataclasses.dataclass(frozen=True)
class Sizing:
    """How many workers to run now, and why (for the status)."""

    desired: int
    active: int | None  # sessions counted; None: not observed this time (status keeps the last value)
    limited: str | None  # policy.AT_MAX / AT_MIN
    demand: int | None  # what the demand asked for before clamping; None: nothing to report
    demand_words: str  # who asked, for the ScalingLimited message
    problem: tuple[str, str] | None  # (reason, message) when the pool cannot be sized as it should


@dataclasses.dataclass(frozen=True)
class Plan:
    tenant: Tenant  # with the seeded spec.replicas, when one is seeded
    seed_replicas: int | None  # write spec.replicas (scale subresource) first
    sizing: Sizing
    prices: dict[str, str]  # pod → its new deletion cost, only where it changes
    children: list[render.Manifest]  # in apply order
    prune_scaled_object: bool  # delete the ScaledObject this tenant owns and no longer wants
    scaling_problem: tuple[str, str] | None  # the sizing's or KEDA's (reason, message)
    config_hash: str
    memory: Memory
    revision: int  # what the worker Deployment's pods are to run (status.revision)
    revisions: list[dict[str, Any]]  # status.revisions with it, newest first
    rollout: rollout.Decided  # the stable and canary revisions, and what the canary's analysis decided
    spec_config_hash: str  # the spec's own config (config_hash is the stable revision's: what the pool runs)
    prune_canary: bool  # delete the canary Deployment this tenant owns and no longer wants
    digests: tuple[str, ...] = ()  # render.manifest_hash of each child, in order
    # Why the pods must not roll (the Deployments are only resized), as (reason, message); None: they may.
    hold_pods: tuple[str, str] | None = None
    platform_problem: tuple[str, str] | None = None  # what the platform refuses the tenant (tenancy.py)


class Rendered:
    """The last rendering of each tenant, keyed by everything it depends on: a recheck of a tenant that
    changed nothing renders nothing (rendering and hashing are most of a steady reconcile's CPU). A
    tenant's resourceVersion stands for its whole stored object; without one, nothing is kept."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Hashable, tuple[list[render.Manifest], str, tuple[str, ...]]]] = {}
        self._identities: dict[str, tuple[Hashable, revisions.Identity]] = {}
        self._guard = threading.Lock()

    def identity(self, tenant: Tenant, secret_versions: Mapping[str, str]) -> revisions.Identity:
        """What the tenant's pods would run (its revision's identity), computed once per version of it."""
        key = (tenant.resource_version, tuple(sorted(secret_versions.items())))
        with self._guard:
            found = self._identities.get(tenant.uid)
        if tenant.resource_version and found is not None and found[0] == key:
            return found[1]
        config = render.tenant_config(tenant)
        made = revisions.identity(
            config,
            render.config_hash(config),
            tenant.spec.worker.image,
            secret_versions,
            render.secrets_hash(secret_versions),
        )
        if tenant.resource_version:
            with self._guard:
                self._identities[tenant.uid] = (key, made)
        return made

    def get(
        self, tenant: Tenant, key: Hashable, make: Callable[[], list[render.Manifest]]
    ) -> tuple[list[render.Manifest], str, tuple[str, ...]]:
        with self._guard:
            found = self._last.get(tenant.uid)
        if tenant.resource_version and found is not None and found[0] == key:
            return found[1]
        children = make()
        made = (
            children,
            render.config_hash(render.tenant_config(tenant)),
            tuple(render.manifest_hash(m) for m in children),
        )
        if tenant.resource_version:
            with self._guard:
                self._last[tenant.uid] = (key, made)
        return made

    def forget(self, uid: str) -> None:
        with self._guard:
            self._last.pop(uid, None)
            self._identities.pop(uid, None)


@dataclasses.dataclass(frozen=True)
class Applied:
    """What applying a plan returned (see apply.py)."""

    changed: Sequence[str]  # "Kind/name" of the children whose owned fields changed
    error: str | None  # the first apply that failed, with the API server's message
    deployment: Mapping[str, Any] | None  # the worker Deployment as applied (else as observed)
    canary_deployment: Mapping[str, Any] | None = None  # the canary Deployment as applied, when it was
    error_reason: str = status_mod.APPLY_FAILED  # the Degraded reason `error` is reported under


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _demand_words(active: int, decision: policy.Decision, spec: TenantSpec) -> str:
    """What the builtin policy counted, for the ScalingLimited message ("... ask for N workers")."""
    words = f"{_count(active, 'active session')}, {_count(spec.pool.spare_sessions, 'spare slot')}"
    if decision.lead_sessions:
        words += (
            f" and {_count(decision.lead_sessions, 'slot')} for sessions expected within a pod's start-up"
        )
    return words


def ready_for(pod: Mapping[str, Any], now: datetime.datetime) -> float:
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


def seed_replicas(snap: Snapshot) -> int | None:
    """The spec.replicas a none/keda tenant gets written when it has none, or when it comes from builtin
    (which ignores, and so may have left, a stale one).

    Switching from builtin must not drop a busy pool to another size, and KEDA reads the size it starts
    from in spec.replicas (absent reads as 0, which it would "scale from zero" to its minimum).
    """
    spec, current = snap.tenant.spec, snap.current_replicas
    if (
        spec.pool.autoscaler not in MANUAL_AUTOSCALERS
        or spec.suspend
        or current is None
        or (spec.replicas is not None and snap.sized_by != "builtin")
    ):
        return None
    return policy.clamp(current, scaling.pool_limits(spec))


def _autoscale(
    spec: TenantSpec, active: int | None, current: int | None, memory: Memory, now: float
) -> tuple[policy.Decision | None, Memory]:
    """The builtin policy's decision, or None where the pool's size is static (none, keda, suspended)."""
    if spec.suspend or spec.pool.autoscaler != "builtin" or active is None:
        return None, memory
    limits = scaling.pool_limits(spec)
    # First sight (or an operator restart): never shrink a pool before a whole delay has passed.
    history = memory.history or policy.seed_history(current or limits.min_replicas, now)
    decision = policy.decide(active, limits, history, now)
    return decision, dataclasses.replace(memory, history=decision.history)


def _prices(snap: Snapshot, per_pod: Mapping[str, int]) -> dict[str, str]:
    """Each pod priced by its sessions (controller.kubernetes.io/pod-deletion-cost), where it changes: the
    ReplicaSet removes the cheapest first, so idle pods go and calls are never cut."""
    out = {}
    for pod in snap.pods:
        name = pod["metadata"]["name"]
        if name not in per_pod or pod["metadata"].get("deletionTimestamp"):
            continue  # unknown, or already leaving: its price no longer matters
        price = str(per_pod[name])
        if (pod["metadata"].get("annotations") or {}).get(contract.POD_DELETION_COST) != price:
            out[name] = price
    return out


def _size(
    snap: Snapshot, spec: TenantSpec, memory: Memory, now: float
) -> tuple[Sizing, dict[str, str], Memory]:
    current = snap.current_replicas
    per_pod = snap.sessions.per_pod if snap.sessions is not None else None
    answering: set[str] = set()
    if snap.sessions is not None:
        # Ready (the kubelet's probe reached the worker, which serves /worker too) for the source's settling
        # time (a Prometheus scrape), and not terminating: these pods must have answered.
        answering = {
            p["metadata"]["name"]
            for p in snap.pods
            if not p["metadata"].get("deletionTimestamp")
            and ready_for(p, snap.observed_at) >= snap.sessions.settle_seconds
        }
    silent = answering - set(per_pod or {})
    # Nobody answered while workers should (the source is down, or a NetworkPolicy): no count at all.
    active = sum(per_pod.values()) if per_pod is not None and (per_pod or not answering) else None
    decision, memory = _autoscale(spec, active, current, memory, now)
    static = scaling.static_size(spec)
    desired = decision.replicas if decision else static.replicas
    problem: tuple[str, str] | None = None
    if per_pod is not None and silent and not spec.suspend:
        # Some workers did not say how busy they are: never shrink on a partial count, whoever asks (a
        # silent pod has no price, so the ReplicaSet could pick it though it is busy). The Deployment's own
        # size, not the pods counted: a rollout's surge pods must not ratchet it up.
        held = max(desired, current or 0)
        # Said when it holds the pool back, or when the builtin policy has nothing to decide on.
        if held > desired or (active is None and spec.pool.autoscaler == "builtin"):
            where = snap.sessions.where if snap.sessions else ""
            problem = (
                "WorkersNotReporting",
                f"{len(silent)} of {len(answering)} ready workers did not report their sessions "
                f"({where}); the pool is held at {held} workers until they do",
            )
        desired = held
    prices: dict[str, str] = {}
    if per_pod:
        # Whoever chose the size (the policy, KEDA, kubectl scale), the operator lowers the Deployment. The
        # ReplicaSet reads pods from its own cache, so a scale-in right after a price change could still pick
        # by the old price: it waits one reconcile then (once, so a busy pool whose prices always move still
        # shrinks).
        prices = _prices(snap, per_pod)
        shrinking = current is not None and desired < current
        if shrinking and prices and not memory.deferred_scale_in:
            desired = current or 0
            memory = dataclasses.replace(memory, deferred_scale_in=True)
        else:
            memory = dataclasses.replace(memory, deferred_scale_in=False)
    if decision and active is not None:  # the policy decides only on a count
        words = _demand_words(active, decision, spec)
        return Sizing(desired, active, decision.limited, decision.unclamped, words, problem), prices, memory
    return Sizing(desired, active, static.limited, static.requested, "spec.replicas", problem), prices, memory


def size_only(
    snap: Snapshot, memory: Memory, now: float, rules: tenancy.TenancyRules
) -> tuple[Sizing, Memory]:
    """The pool's size alone, for when the rest of the plan cannot be made (a planning error): the pool
    keeps following load on its last template. A tenant held for its agent name stays at zero."""
    tenant = snap.tenant.held() if snap.agent_name_held else snap.tenant
    sizing, _, memory = _size(snap, tenant.spec, memory, now)
    return _capped(sizing, rules)[0], memory


def _capped(sizing: Sizing, rules: tenancy.TenancyRules) -> tuple[Sizing, tuple[str, str] | None]:
    """The sizing held at the platform's most pods per tenant, and the problem when it is."""
    desired, problem = tenancy.pods_cap(rules, sizing.desired)
    return dataclasses.replace(sizing, desired=desired), problem


def pods_refused(snap: Snapshot, rules: tenancy.TenancyRules) -> tuple[str, str] | None:
    """Why the tenant's pods may not roll: a Secret it may not use, or a platform limit they would break."""
    spec = snap.tenant.spec
    return tenancy.refused_secrets(
        rules, snap.tenant.name, render.referenced_secrets(spec), snap.secret_labels
    ) or tenancy.over_limits(rules, spec)


def keda_problem(snap: Snapshot, prometheus_url: str | None, replicas: int) -> tuple[str, str] | None:
    """Why a keda tenant gets no ScaledObject (reason, message), or None when it can have one."""
    if snap.tenant.spec.pool.autoscaler != "keda":
        return None
    held = f"the pool stays at {replicas} workers (spec.replicas)"
    if not prometheus_url:
        return (
            "KedaNotConfigured",
            "autoscaler keda needs the Prometheus address KEDA queries: set the chart value "
            f"prometheus.url (operator flag --prometheus-url); {held}",
        )
    if not snap.keda_served:
        api = "/".join(render.KEDA_API)
        return ("KedaNotInstalled", f"autoscaler keda needs KEDA: this cluster does not serve {api}; {held}")
    return None


def plan(
    snap: Snapshot,
    memory: Memory,
    *,
    prometheus_url: str | None,
    now: float,
    rendered: Rendered | None = None,
    rules: tenancy.TenancyRules | None = None,
) -> Plan:
    """What to do for `snap`. `now`: a monotonic clock, for the autoscaler's history. `rendered`: the
    renderings of earlier plans, reused while nothing they depend on changed. `rules`: what the platform
    lets tenants use (the defaults when None)."""
    rules = rules or tenancy.TenancyRules()
    seed = seed_replicas(snap)
    tenant = snap.tenant.with_replicas(seed) if seed is not None else snap.tenant
    if snap.agent_name_held:
        tenant = tenant.held()  # planned as if suspended: no worker registers under the taken name
    sizing, prices, memory = _size(snap, tenant.spec, memory, now)
    sizing, capped = _capped(sizing, rules)
    refused = pods_refused(snap, rules)
    keda = keda_problem(snap, prometheus_url, sizing.desired)
    keda_url = None if keda else prometheus_url
    rendered = rendered or Rendered()
    serving = snap.status.get("revision")
    assigned = revisions.assign(
        revisions.entries(snap.status),
        rendered.identity(tenant, snap.secret_versions),
        serving=serving if isinstance(serving, int) else None,
        now=snap.observed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        limit=tenant.spec.revision_history_limit,
        keep=[r for r in (tenant.spec.rollout.pinned_revision,) if r is not None],
    )
    decided = rollout.decide(
        spec_revision=assigned.number,
        history=assigned.history,
        status=snap.status,
        rollout=tenant.spec.rollout,
        suspended=tenant.spec.suspend,
        runnable=set(snap.revision_configs),
        figures=snap.figures,
        figures_source=snap.figures_source,
        now=snap.observed_at,
        figures_window_s=snap.figures_window_s,
    )
    stable: Tenant | None = None
    if decided.stable != assigned.number:
        image = revisions.entry(decided.history, decided.stable).get(revisions.IMAGE)
        config = snap.revision_configs[decided.stable]
        stable = render.revision_tenant(tenant, config, str(image or ""))
    canary_replicas = (
        rollout.canary_replicas(sizing.desired, tenant.spec.rollout.canary_weight) if decided.canary else 0
    )
    stable_hash = render.config_hash(render.tenant_config(stable)) if stable else None

    def make() -> list[render.Manifest]:
        return render.children(
            tenant,
            pod_monitor_enabled=snap.pod_monitor_served,
            replicas=sizing.desired,
            keda_prometheus_url=keda_url,
            # While a Secret is missing the pods cannot start anyway; its arrival then rolls them once.
            secret_versions=snap.secret_versions,
            revision=decided.stable,
            stable=stable,
            canary_revision=decided.canary,
            canary_replicas=canary_replicas,
        )

    key = (
        tenant.resource_version,
        seed,
        sizing.desired,
        snap.pod_monitor_served,
        keda_url,
        tuple(sorted(snap.secret_versions.items())),
        decided.stable,
        decided.canary,
        canary_replicas,
        stable_hash,
    )
    children, config_hash, digests = rendered.get(tenant, key, make)
    spec_config_hash = config_hash
    config_hash = stable_hash or config_hash  # what the pool runs
    return Plan(
        tenant=tenant,
        seed_replicas=seed,
        sizing=sizing,
        prices=prices,
        children=children,
        # A keda tenant keeps its ScaledObject even while the operator cannot render one (no Prometheus
        # address after a restart): KEDA goes on with the last one.
        prune_scaled_object=snap.scaled_object_checked and owned_by(snap.scaled_object, tenant.uid),
        scaling_problem=sizing.problem or keda,
        config_hash=config_hash,
        memory=memory,
        revision=decided.stable,
        revisions=decided.history,
        rollout=decided,
        spec_config_hash=spec_config_hash,
        prune_canary=decided.canary is None and snap.canary_deployment is not None,
        digests=digests,
        hold_pods=refused,
        platform_problem=refused or capped,
    )


def agent_name_conflict(snap: Snapshot) -> str | None:
    """The Degraded message of a tenant held because another claimed its agent name and LiveKit server
    first. It names neither that tenant nor its namespace: they may be another team's."""
    if not snap.agent_name_held:
        return None
    spec = snap.tenant.spec
    agent = spec.agent_name or snap.tenant.name
    return (
        f'agent name "{agent}" on {spec.livekit.url} is registered by another tenant that claimed it '
        "first: this tenant runs no worker (LiveKit would give its calls to either tenant's workers); "
        "give it another spec.agentName"
    )


def report(p: Plan, snap: Snapshot, applied: Applied, now: str) -> tuple[dict[str, Any], list[events.Event]]:
    """The status to store and the Events to post, once the plan is applied. `now`: RFC 3339."""
    obs = status_mod.Observation(
        generation=p.tenant.generation,
        suspended=snap.tenant.spec.suspend,  # the user's word: a held tenant says why it is not Ready
        sessions_per_worker=p.tenant.spec.pool.sessions_per_worker,
        name=p.tenant.name,
        desired_replicas=p.sizing.desired,
        config_hash=p.config_hash,
        platform_problem=p.platform_problem,
        missing_secrets=snap.missing_secrets,
        agent_name_conflict=agent_name_conflict(snap),
        apply_error=applied.error,
        apply_error_reason=applied.error_reason,
        deployment=applied.deployment,
        active_sessions=p.sizing.active,
        scaling_limited=p.sizing.limited,
        demand_replicas=p.sizing.demand,
        demand_source=p.sizing.demand_words,
        scaling_problem=p.scaling_problem,
        revision=p.revision,
        revisions=p.revisions,
        canary=p.rollout.canary_status,
        canary_deployment=applied.canary_deployment or snap.canary_deployment,
        rollout_problem=p.rollout.problem,
    )
    new_status = status_mod.compute(obs, snap.status, now)
    posted = []
    if p.prune_scaled_object:
        name = render.worker_name(p.tenant.name)
        posted.append(
            events.Event("Normal", "Deleted", f"deleted ScaledObject/{name}: pool.autoscaler is not keda")
        )
    if p.prune_canary:
        name = render.canary_name(p.tenant.name)
        posted.append(events.Event("Normal", "Deleted", f"deleted Deployment/{name}: no canary runs"))
    rolled = events.transitions(
        snap.status, new_status, applied.changed, secrets_changed=_secrets_changed(p, snap)
    )
    return new_status, posted + _rollout_events(p, snap) + rolled


def _rollout_events(p: Plan, snap: Snapshot) -> list[events.Event]:
    """A canary that starts, is promoted or is rolled back (with what its analysis found)."""
    decided, before = p.rollout, snap.status.get("canary") or {}
    verdict, judged = decided.verdict, decided.judged
    if verdict is not None and verdict.decision == "promote":
        return [
            events.Event(
                "Normal",
                rollout.PROMOTED,
                f"revision {judged} promoted ({verdict.reason}: {verdict.message}); the pool rolls to it",
            )
        ]
    if verdict is not None and verdict.decision == "rollback":
        return [
            events.Event(
                "Warning",
                rollout.ROLLED_BACK,
                f"revision {judged} rolled back ({verdict.reason}: {verdict.message}); revision "
                f"{decided.stable} keeps serving",
            )
        ]
    now = decided.canary_status
    if now is not None and now.get("revision") != before.get("revision"):
        entry = revisions.entry(decided.history, decided.canary)
        return [
            events.Event(
                "Normal",
                "CanaryStarted",
                f"revision {decided.canary} ({entry.get(revisions.CHANGE, '')}) runs as a canary for about "
                f"{now['weight']}% of new sessions beside revision {decided.stable}",
            )
        ]
    return []


def _secrets_changed(p: Plan, snap: Snapshot) -> bool:
    """Whether the pool's pods are replaced because a referenced Secret changed (not on first sight)."""

    def secrets_hash(deployment: Mapping[str, Any] | None) -> str | None:
        template = ((deployment or {}).get("spec") or {}).get("template") or {}
        return ((template.get("metadata") or {}).get("annotations") or {}).get(
            contract.SECRETS_HASH_ANNOTATION
        )

    before = secrets_hash(snap.deployment)
    after = secrets_hash(next((m for m in p.children if m["kind"] == "Deployment"), None))
    return before is not None and before != after

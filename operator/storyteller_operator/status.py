"""Pure status computation: what the operator observed → the tenant's status block.

The result is compared with the stored status and written only when it differs, so a condition keeps
its lastTransitionTime until its status really changes (otherwise every reconcile would be a write).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from storyteller_operator import render

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_LIMITED = "ScalingLimited"
# Degraded reasons of a failed apply (apply.py): the API server refused a child, or its name is taken by an
# object the tenant does not own.
APPLY_FAILED = "ApplyFailed"
NAME_CONFLICT = "NameConflict"
# The plan could not be made (plan.py raised): the pool is only resized, on its last template.
PLAN_FAILED = "PlanFailed"


@dataclasses.dataclass(frozen=True)
class Observation:
    """Everything the status depends on: the plan and what applying it returned."""

    generation: int
    suspended: bool  # spec.suspend
    sessions_per_worker: int  # spec.pool.sessionsPerWorker, for the capacity
    name: str
    desired_replicas: int
    config_hash: str
    # (reason, message): the tenant asks for what the platform does not allow (tenancy.py).
    platform_problem: tuple[str, str] | None = None
    # (Secret name, spec field) for each referenced Secret that does not exist.
    missing_secrets: Sequence[tuple[str, str]] = ()
    # Other tenants registering the same agent name on the same LiveKit server, as a sentence; None: none.
    agent_name_conflict: str | None = None
    apply_error: str | None = None
    apply_error_reason: str = APPLY_FAILED
    deployment: Mapping[str, Any] | None = None  # the worker Deployment as read or applied
    active_sessions: int | None = None  # summed over the pods that answered; None: not observed
    scaling_limited: str | None = None  # the autoscaler wanted more/fewer pods than max/min allow
    demand_replicas: int | None = None  # what the sessions (or spec.replicas) asked for, before clamping
    # Who asked, as a sentence's subject: what the builtin policy counted, or "spec.replicas" (none, keda).
    demand_source: str = "sessions"
    scaling_problem: tuple[str, str] | None = None  # (reason, message): the autoscaler cannot work at all
    revision: int | None = None  # the revision the pods are to run; None: keep the stored one
    revisions: Sequence[Mapping[str, Any]] | None = None  # status.revisions, newest first
    canary: Mapping[str, Any] | None = None  # status.canary: the running canary; None: none
    canary_deployment: Mapping[str, Any] | None = None  # the canary Deployment as read or applied
    rollout_problem: tuple[str, str] | None = None  # (reason, message): the spec's revision is not served


def _deployment_counts(dep: Mapping[str, Any] | None) -> dict[str, int]:
    st = (dep or {}).get("status") or {}
    return {
        k: int(st.get(k) or 0) for k in ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas")
    }


def _rolled_out(dep: Mapping[str, Any] | None, desired: int) -> bool:
    """The Deployment controller has seen the latest template and every pod is updated and ready."""
    if dep is None:
        return False
    st = dep.get("status") or {}
    if int(st.get("observedGeneration") or 0) < int(dep["metadata"].get("generation") or 0):
        return False
    c = _deployment_counts(dep)
    return c["replicas"] == desired and c["updatedReplicas"] == desired and c["readyReplicas"] == desired


def _deployment_failure(dep: Mapping[str, Any] | None) -> tuple[str, str] | None:
    for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return "ReplicaFailure", cond.get("message") or "the Deployment cannot create pods"
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", cond.get("message") or "the rollout stalled"
    return None


def _condition(
    ctype: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == ctype), None)
    since = (
        old["lastTransitionTime"]
        if old and old.get("status") == status and old.get("lastTransitionTime")
        else now
    )
    return {
        "type": ctype,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def compute(obs: Observation, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The full status for `obs`; `previous` is the stored status (for lastTransitionTime), `now` RFC 3339."""
    previous = previous or {}
    prev_conditions = previous.get("conditions") or []
    suspended = obs.suspended
    desired = obs.desired_replicas
    counts = _deployment_counts(obs.deployment)
    rolled_out = _rolled_out(obs.deployment, desired)
    sessions_per_worker = obs.sessions_per_worker

    # Degraded: something needs a human (or will fix itself once it appears, like a Secret).
    degraded: tuple[str, str] | None = None
    if obs.platform_problem:
        degraded = obs.platform_problem
    elif obs.missing_secrets:
        names = ", ".join(f'"{s}" ({field})' for s, field in obs.missing_secrets)
        degraded = ("SecretNotFound", f"Secret {names} not found in this namespace")
    elif obs.agent_name_conflict:
        degraded = ("AgentNameConflict", obs.agent_name_conflict)
    elif obs.apply_error:
        degraded = (obs.apply_error_reason, obs.apply_error)
    elif obs.rollout_problem:
        degraded = obs.rollout_problem
    else:
        degraded = _deployment_failure(obs.deployment)

    ready_msg = f"{counts['readyReplicas']} of {desired} workers ready"
    canary = dict(obs.canary) if obs.canary else None
    if canary:
        canary_counts = _deployment_counts(obs.canary_deployment)
        canary["replicas"], canary["readyReplicas"] = (
            canary_counts["replicas"],
            canary_counts["readyReplicas"],
        )
        progressing = _condition(
            PROGRESSING,
            True,
            "CanaryAnalysis",
            f"revision {canary['revision']} runs as a canary ({canary['readyReplicas']} ready pods) beside "
            f"revision {canary['stableRevision']}: {canary['message']}",
            obs.generation,
            prev_conditions,
            now,
        )
    elif rolled_out:
        progressing = _condition(
            PROGRESSING,
            False,
            "Suspended" if suspended else "RolledOut",
            "the pool is scaled to zero (spec.suspend)" if suspended else f"all {desired} workers updated",
            obs.generation,
            prev_conditions,
            now,
        )
    else:
        progressing = _condition(
            PROGRESSING, True, "RollingOut", ready_msg, obs.generation, prev_conditions, now
        )

    if suspended:
        ready = (False, "Suspended", "spec.suspend is true: the pool is scaled to zero")
    elif degraded:
        ready = (False, degraded[0], degraded[1])
    elif rolled_out:
        ready = (True, "PoolReady", ready_msg)
    else:
        ready = (False, "RollingOut" if obs.deployment else "Pending", ready_msg)

    conditions = [
        _condition(READY, ready[0], ready[1], ready[2], obs.generation, prev_conditions, now),
        progressing,
        _condition(
            DEGRADED,
            degraded is not None,
            degraded[0] if degraded else "AsExpected",
            degraded[1] if degraded else "nothing is wrong",
            obs.generation,
            prev_conditions,
            now,
        ),
    ]

    if suspended:
        phase = "Suspended"
    elif degraded:
        phase = "Degraded"
    elif obs.deployment is None or not (obs.deployment.get("status") or {}).get("observedGeneration"):
        phase = "Pending"
    elif not rolled_out or canary:
        phase = "Progressing"
    else:
        phase = "Ready"

    if obs.scaling_problem:
        reason, message = obs.scaling_problem
        conditions.append(
            _condition(SCALING_LIMITED, True, reason, message, obs.generation, prev_conditions, now)
        )
    elif obs.demand_replicas is not None:
        limited = obs.scaling_limited
        verb = "asks" if obs.demand_source == "spec.replicas" else "ask"
        asked = f"{obs.demand_source} {verb} for {obs.demand_replicas} workers"
        conditions.append(
            _condition(
                SCALING_LIMITED,
                limited is not None,
                limited or "WithinBounds",
                f"{asked}; the pool is held at {desired} (pool.minReplicas/maxReplicas)"
                if limited
                else f"{asked}, within the pool's bounds",
                obs.generation,
                prev_conditions,
                now,
            )
        )

    out: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "phase": phase,
        "conditions": conditions,
        "replicas": counts["replicas"],
        "readyReplicas": counts["readyReplicas"],
        "desiredReplicas": desired,
        "capacity": counts["readyReplicas"] * sessions_per_worker,
        "configHash": obs.config_hash,
        "selector": render.selector_string(obs.name),
    }
    last_scale = previous.get("lastScaleTime")
    if previous.get("desiredReplicas") is not None and previous.get("desiredReplicas") != desired:
        last_scale = now
    if last_scale:
        out["lastScaleTime"] = last_scale
    if obs.revision is not None:
        out["revision"] = obs.revision
        out["revisions"] = [dict(e) for e in obs.revisions or ()]
        if canary:
            out["canary"] = canary
        elif "canary" in previous:
            out["canary"] = None  # a merge patch deletes it
    else:
        out.update({k: previous[k] for k in ("revision", "revisions", "canary") if k in previous})
    if obs.active_sessions is not None:
        out["activeSessions"] = obs.active_sessions
    elif "activeSessions" in previous:  # not observed this time (e.g. a status-only refresh): keep it
        out["activeSessions"] = previous["activeSessions"]
    return out


def invalid(generation: int, error: str, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The status of a tenant whose stored spec cannot be read: Degraded, naming the field; the pool's own
    figures are left as they were (its children are not touched)."""
    previous = previous or {}
    prev_conditions = previous.get("conditions") or []
    message = f"{error}; the pool keeps running with its last applied config until the spec is fixed"
    conditions = [
        _condition(READY, False, "InvalidSpec", message, generation, prev_conditions, now),
        _condition(DEGRADED, True, "InvalidSpec", message, generation, prev_conditions, now),
    ]
    kept = [c for c in prev_conditions if c.get("type") not in (READY, DEGRADED)]
    return {
        **previous,
        "observedGeneration": generation,
        "phase": "Degraded",
        "conditions": conditions + kept,
    }


def differs(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether writing `new` would change anything in the stored status."""
    old = old or {}
    return any(old.get(k) != v for k, v in new.items())


def condition(status: Mapping[str, Any] | None, ctype: str) -> Mapping[str, Any] | None:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == ctype), None)

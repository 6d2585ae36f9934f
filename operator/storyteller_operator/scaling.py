"""The pool's size when the operator does not compute it from sessions: pure, no I/O.

- suspended: 0;
- `autoscaler: none` or `keda`: `spec.replicas`, written by `kubectl scale sd/NAME` or by KEDA through the
  scale subresource, held within [minReplicas, maxReplicas]; minReplicas while it is absent;
- `autoscaler: builtin`: minReplicas until the policy (policy.py) has sessions to decide on.

The builtin autoscaler ignores `spec.replicas`: two writers of one size would fight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storyteller_operator import policy

MANUAL_AUTOSCALERS = ("none", "keda")


@dataclass(frozen=True)
class StaticSize:
    replicas: int
    requested: int | None  # spec.replicas when it is what sized the pool (none/keda), else None
    limited: str | None  # policy.AT_MAX / AT_MIN when spec.replicas was outside the pool's bounds


def autoscaler(spec: Mapping[str, Any]) -> str:
    return str((spec.get("pool") or {}).get("autoscaler", "builtin"))


def pool_limits(spec: Mapping[str, Any]) -> policy.PoolLimits:
    """The pool block's sizing fields, with the CRD's defaults (the one place that reads them)."""
    pool = spec.get("pool") or {}
    return policy.PoolLimits(
        min_replicas=int(pool.get("minReplicas", 1)),
        max_replicas=int(pool.get("maxReplicas", 10)),
        sessions_per_worker=int(pool.get("sessionsPerWorker", 4)),
        spare_sessions=int(pool.get("spareSessions", 2)),
        scale_down_delay_s=float(pool.get("scaleDownDelaySeconds", 300)),
    )


def static_size(spec: Mapping[str, Any]) -> StaticSize:
    if spec.get("suspend"):
        return StaticSize(0, None, None)
    limits = pool_limits(spec)
    if autoscaler(spec) not in MANUAL_AUTOSCALERS or spec.get("replicas") is None:
        return StaticSize(limits.min_replicas, None, None)
    requested = int(spec["replicas"])
    limited = (
        policy.AT_MAX
        if requested > limits.max_replicas
        else policy.AT_MIN
        if requested < limits.min_replicas
        else None
    )
    return StaticSize(policy.clamp(requested, limits), requested, limited)


def desired_replicas(spec: Mapping[str, Any]) -> int:
    return static_size(spec).replicas

"""The pool's size when the operator does not compute it from sessions: pure, no I/O.

- suspended: 0;
- `autoscaler: none` or `keda`: `spec.replicas`, written by `kubectl scale sd/NAME` or by KEDA through the
  scale subresource, held within [minReplicas, maxReplicas]; minReplicas while it is absent;
- `autoscaler: builtin`: minReplicas until the policy (policy.py) has sessions to decide on.

The builtin autoscaler ignores `spec.replicas`: two writers of one size would fight.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyteller_api.spec import TenantSpec
from storyteller_operator import policy


@dataclass(frozen=True)
class StaticSize:
    replicas: int
    requested: int | None  # spec.replicas when it is what sized the pool (none/keda), else None
    limited: str | None  # policy.AT_MAX / AT_MIN when spec.replicas was outside the pool's bounds


def pool_limits(spec: TenantSpec) -> policy.PoolLimits:
    """The pool block's sizing fields, as the policy takes them."""
    pool = spec.pool
    return policy.PoolLimits(
        min_replicas=pool.min_replicas,
        max_replicas=pool.max_replicas,
        sessions_per_worker=pool.sessions_per_worker,
        spare_sessions=pool.spare_sessions,
        scale_down_delay_s=float(pool.scale_down_delay_seconds),
    )


def static_size(spec: TenantSpec) -> StaticSize:
    if spec.suspend:
        return StaticSize(0, None, None)
    limits = pool_limits(spec)
    if not spec.sized_by_replicas or spec.replicas is None:
        return StaticSize(limits.min_replicas, None, None)
    requested = spec.replicas
    limited = (
        policy.AT_MAX
        if requested > limits.max_replicas
        else policy.AT_MIN
        if requested < limits.min_replicas
        else None
    )
    return StaticSize(policy.clamp(requested, limits), requested, limited)


def desired_replicas(spec: TenantSpec) -> int:
    return static_size(spec).replicas

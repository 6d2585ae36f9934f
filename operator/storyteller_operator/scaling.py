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


def static_size(spec: Mapping[str, Any]) -> StaticSize:
    if spec.get("suspend"):
        return StaticSize(0, None, None)
    pool = spec.get("pool") or {}
    low, high = int(pool.get("minReplicas", 1)), int(pool.get("maxReplicas", 10))
    if autoscaler(spec) not in MANUAL_AUTOSCALERS or spec.get("replicas") is None:
        return StaticSize(low, None, None)
    requested = int(spec["replicas"])
    limited = policy.AT_MAX if requested > high else policy.AT_MIN if requested < low else None
    return StaticSize(min(max(requested, low), high), requested, limited)


def desired_replicas(spec: Mapping[str, Any]) -> int:
    return static_size(spec).replicas

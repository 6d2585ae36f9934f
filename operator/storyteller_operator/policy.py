"""The builtin autoscaling policy: replicas from sessions, not CPU. Pure: no clock, no I/O.

    target = ceil((active sessions + spareSessions) / sessionsPerWorker), clamped to [min, max]

Scale-up is immediate; scale-down waits until demand has stayed lower for `scaleDownDelaySeconds`.
Like the HPA's stabilization window, the decision is the highest target recommended within the
window (now included): a new high wins at once, and replicas only fall once every recommendation of
the last `scaleDownDelaySeconds` is lower, so a pool never flaps inside the delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

AT_MAX = "AtMaxReplicas"
AT_MIN = "AtMinReplicas"


@dataclass(frozen=True)
class PoolLimits:
    min_replicas: int
    max_replicas: int
    sessions_per_worker: int
    spare_sessions: int
    scale_down_delay_s: float


@dataclass(frozen=True)
class History:
    """Recommendations (time, replicas) inside the scale-down window, oldest first."""

    recommendations: tuple[tuple[float, int], ...] = field(default_factory=tuple)

    def pruned(self, now: float, window_s: float) -> History:
        return History(tuple(r for r in self.recommendations if now - r[0] < window_s))


@dataclass(frozen=True)
class Decision:
    replicas: int
    target: int  # what the demand alone asks for now (clamped)
    history: History
    limited: str | None  # AT_MAX when demand wants more than maxReplicas, AT_MIN at the floor
    unclamped: int  # the demand's replicas before clamping


def demand_replicas(active_sessions: int, limits: PoolLimits) -> int:
    """Pods needed for the active sessions plus the spare slots, before clamping."""
    slots = max(active_sessions, 0) + limits.spare_sessions
    return math.ceil(slots / limits.sessions_per_worker)


def clamp(replicas: int, limits: PoolLimits) -> int:
    return min(max(replicas, limits.min_replicas), limits.max_replicas)


def decide(active_sessions: int, limits: PoolLimits, history: History, now: float) -> Decision:
    """Replicas for now, and the history to pass to the next decision."""
    unclamped = demand_replicas(active_sessions, limits)
    target = clamp(unclamped, limits)
    window = history.pruned(now, limits.scale_down_delay_s)
    recs = (*window.recommendations, (now, target))
    # The floor and ceiling can change under the history (a spec edit): keep it inside them.
    replicas = clamp(max(r for _, r in recs), limits)
    limited = None
    if unclamped > limits.max_replicas:
        limited = AT_MAX
    elif unclamped < limits.min_replicas:
        limited = AT_MIN
    return Decision(
        replicas=replicas, target=target, history=History(recs), limited=limited, unclamped=unclamped
    )


def seed_history(current_replicas: int, now: float) -> History:
    """What a restarted operator assumes: the current size was just recommended, so it does not
    shrink a pool it knows nothing about before a whole delay has passed."""
    return History(((now, current_replicas),))

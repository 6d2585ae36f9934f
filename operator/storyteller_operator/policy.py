"""The builtin autoscaling policy: replicas from sessions, not CPU. Pure: no clock, no I/O.

    target = ceil((active + spareSessions + lead sessions) / sessionsPerWorker), clamped to [min, max]

The lead sessions cover the start-up lead: a pod asked for now takes sessions only `lead_time_s` later,
and base arrivals in between would otherwise eat the spare slots meant for a burst. They are the recent
growth of active sessions, projected over the lead and never negative:

    lead sessions = ceil(max(0, rise over the last trend_window_s) * lead_time_s / trend_window_s)

where each sample's rise counts at most spareSessions: a bigger jump is a burst, which the spare exists
for, not a trend (it would otherwise buy a burst's worth of pods again and hold them for the delay).
Falls count in full. `lead_time_s = 0` (or spareSessions 0) turns the term off.

Scale-up is immediate; scale-down waits until demand has stayed lower for `scaleDownDelaySeconds`.
Like the HPA's stabilization window, the decision is the highest target recommended within the
window (now included): a new high wins at once, and replicas only fall once every recommendation of
the last `scaleDownDelaySeconds` is lower, so a pool never flaps inside the delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

AT_MAX = "AtMaxReplicas"
AT_MIN = "AtMinReplicas"

# Defaults of the lead term, tuned with bench/autoscale_sim.py (5 s decisions, pods ready 20 s after
# the ask): the fewest bursts <= spareSessions without a warm slot within +15 % pod-minutes of an oracle.
LEAD_TIME_S = 18.0
TREND_WINDOW_S = 45.0


@dataclass(frozen=True)
class PoolLimits:
    min_replicas: int
    max_replicas: int
    sessions_per_worker: int
    spare_sessions: int
    scale_down_delay_s: float
    lead_time_s: float = LEAD_TIME_S  # sessions expected within this are kept warm too; 0: off
    trend_window_s: float = TREND_WINDOW_S  # the recent growth is measured over this


@dataclass(frozen=True)
class History:
    """What the next decision needs: recommendations (time, replicas) inside the scale-down window and
    samples (time, active sessions) inside the trend window, oldest first."""

    recommendations: tuple[tuple[float, int], ...] = field(default_factory=tuple)
    samples: tuple[tuple[float, int], ...] = field(default_factory=tuple)

    def pruned(self, now: float, window_s: float) -> History:
        return History(tuple(r for r in self.recommendations if now - r[0] < window_s), self.samples)


@dataclass(frozen=True)
class Decision:
    replicas: int
    target: int  # what the demand alone asks for now (clamped)
    history: History
    limited: str | None  # AT_MAX when demand wants more than maxReplicas, AT_MIN at the floor
    unclamped: int  # the demand's replicas before clamping
    lead_sessions: int = 0  # of the demand, the slots kept for sessions expected within the lead time


def demand_replicas(active_sessions: int, limits: PoolLimits, lead_sessions: int = 0) -> int:
    """Pods needed for the active sessions plus the spare and lead slots, before clamping."""
    slots = max(active_sessions, 0) + limits.spare_sessions + max(lead_sessions, 0)
    return math.ceil(slots / limits.sessions_per_worker)


def clamp(replicas: int, limits: PoolLimits) -> int:
    return min(max(replicas, limits.min_replicas), limits.max_replicas)


def recent_samples(
    samples: tuple[tuple[float, int], ...], now: float, window_s: float
) -> tuple[tuple[float, int], ...]:
    """The samples of the last `window_s` seconds, both ends included (none from the future)."""
    return tuple(s for s in samples if 0 <= now - s[0] <= window_s)


def lead_sessions(samples: tuple[tuple[float, int], ...], limits: PoolLimits) -> int:
    """Sessions expected to arrive within the lead time, from the growth over the samples (oldest first,
    the newest being now): each step's rise capped at spareSessions, projected, never negative."""
    if limits.lead_time_s <= 0 or limits.trend_window_s <= 0 or len(samples) < 2:
        return 0
    span = samples[-1][0] - samples[0][0]
    if span <= 0:
        return 0
    cap = max(limits.spare_sessions, 0)
    rise = sum(min(b - a, cap) for (_, a), (_, b) in pairwise(samples))
    if rise <= 0:
        return 0
    # Over the window, not the span: a young history (a restart, a new tenant) does not extrapolate
    # from a few seconds. The epsilon keeps an exact integer from rounding up to the next.
    return math.ceil(rise * limits.lead_time_s / max(span, limits.trend_window_s) - 1e-9)


def decide(active_sessions: int, limits: PoolLimits, history: History, now: float) -> Decision:
    """Replicas for now, and the history to pass to the next decision."""
    active = max(active_sessions, 0)
    samples = (*recent_samples(history.samples, now, limits.trend_window_s), (now, active))
    lead = lead_sessions(samples, limits)
    unclamped = demand_replicas(active, limits, lead)
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
        replicas=replicas,
        target=target,
        history=History(recs, samples),
        limited=limited,
        unclamped=unclamped,
        lead_sessions=lead,
    )


def seed_history(current_replicas: int, now: float) -> History:
    """What a restarted operator assumes: the current size was just recommended, so it does not
    shrink a pool it knows nothing about before a whole delay has passed. No samples: the lead term
    starts from no growth."""
    return History(((now, current_replicas),))

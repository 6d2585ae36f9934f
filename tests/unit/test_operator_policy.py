"""The builtin autoscaling policy (pure): table tests, then properties over random limits and loads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyteller_operator.policy import (
    AT_MAX,
    AT_MIN,
    LEAD_TIME_S,
    TREND_WINDOW_S,
    Decision,
    History,
    PoolLimits,
    clamp,
    decide,
    demand_replicas,
    lead_sessions,
    seed_history,
)

LIMITS = PoolLimits(
    min_replicas=1, max_replicas=10, sessions_per_worker=4, spare_sessions=2, scale_down_delay_s=300
)
STATIC = replace(LIMITS, lead_time_s=0)  # no lead term: active + spare only


def run(
    steps: Sequence[tuple[float, int]], limits: PoolLimits = LIMITS, history: History | None = None
) -> list[Decision]:
    """Feed (time, active sessions) through decide, threading the history like the operator does."""
    history = history if history is not None else History()
    out = []
    for now, active in steps:
        d = decide(active, limits, history, now)
        history = d.history
        out.append(d)
    return out


def replicas(
    steps: Sequence[tuple[float, int]], limits: PoolLimits = LIMITS, history: History | None = None
) -> list[int]:
    return [d.replicas for d in run(steps, limits, history)]


# --- tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "spare", "spw", "expected"),
    [
        (0, 0, 4, 0),
        (0, 2, 4, 1),
        (2, 2, 4, 1),  # 4 slots needed, one pod of 4
        (3, 2, 4, 2),  # 5 slots needed
        (6, 2, 4, 2),
        (7, 2, 4, 3),
        (0, 8, 4, 2),  # spare alone asks for two warm pods
        (10, 0, 1, 10),
        (-3, 2, 4, 1),  # a bogus negative count is read as zero
    ],
)
def test_demand_counts_active_plus_spare_slots(active: int, spare: int, spw: int, expected: int) -> None:
    limits = PoolLimits(0, 100, spw, spare, 300)
    assert demand_replicas(active, limits) == expected


def test_scale_up_is_immediate() -> None:
    assert replicas([(0, 0), (5, 20), (10, 30)], limits=STATIC) == [1, 6, 8]
    # With the lead term: +1 slot at 5 s (a rise of 2 counted: a jump is a burst), +2 at 10 s (rise 4).
    assert [(d.replicas, d.lead_sessions) for d in run([(0, 0), (5, 20), (10, 30)])] == [
        (1, 0),
        (6, 1),
        (9, 2),
    ]


def test_holds_during_the_delay_then_scales_down() -> None:
    steps = [(0, 30), (5, 0), (150, 0), (299, 0), (299.9, 0), (300, 0), (305, 0)]
    assert replicas(steps) == [8, 8, 8, 8, 8, 1, 1]


def test_steps_down_through_intermediate_recommendations() -> None:
    # 8 at t=0, 3 at t=100 (10 sessions), then idle: 8 holds to 300, 3 holds to 400, then the floor.
    steps = [(0, 30), (100, 10), (200, 0), (299, 0), (300, 0), (399, 0), (400, 0)]
    assert replicas(steps) == [8, 8, 8, 8, 3, 3, 1]


def test_new_high_inside_the_window_restarts_the_hold() -> None:
    steps = [(0, 30), (200, 0), (250, 30), (300, 0), (549, 0), (550, 0)]
    assert replicas(steps) == [8, 8, 8, 8, 8, 1]


def test_zero_delay_follows_demand_both_ways() -> None:
    limits = PoolLimits(1, 10, 4, 2, 0)
    assert replicas([(0, 30), (1, 0), (2, 10)], limits=limits) == [8, 1, 3]


@pytest.mark.parametrize(
    ("limits", "active", "replicas_", "limited", "unclamped"),
    [
        (LIMITS, 100, 10, AT_MAX, 26),
        (LIMITS, 38, 10, None, 10),  # exactly max is not limited
        (LIMITS, 39, 10, AT_MAX, 11),
        (PoolLimits(2, 10, 4, 2, 300), 0, 2, AT_MIN, 1),
        (PoolLimits(1, 10, 4, 2, 300), 0, 1, None, 1),  # exactly min is not limited
        (PoolLimits(1, 10, 4, 0, 300), 0, 1, AT_MIN, 0),
        (PoolLimits(0, 10, 4, 0, 300), 0, 0, None, 0),  # scale to zero when allowed
    ],
)
def test_clamps_report_limited(
    limits: PoolLimits, active: int, replicas_: int, limited: str | None, unclamped: int
) -> None:
    d = decide(active, limits, History(), 0)
    assert (d.replicas, d.limited, d.unclamped) == (replicas_, limited, unclamped)
    assert d.target == clamp(unclamped, limits)


def test_restart_seeds_the_current_size_and_waits_a_whole_delay() -> None:
    seeded = seed_history(7, now=1000)
    assert replicas([(1000, 0), (1150, 0), (1299, 0), (1300, 0)], history=seeded) == [7, 7, 7, 1]


def test_restart_still_scales_up_at_once() -> None:
    assert replicas([(1000, 60)], history=seed_history(3, now=1000)) == [10]


def test_restart_with_a_size_above_max_is_clamped() -> None:
    assert replicas([(0, 0)], history=seed_history(25, now=0)) == [10]


def test_history_only_keeps_the_window() -> None:
    recs = run([(float(t), 5) for t in range(0, 1000, 5)])[-1].history.recommendations
    assert [t for t, _ in recs] == [float(t) for t in range(700, 1000, 5)]  # (995 - 300, 995]


def test_lowering_max_under_a_history_applies_at_once() -> None:
    history = run([(0, 36)])[-1].history  # recommended 10
    lower = PoolLimits(1, 4, 4, 2, 300)
    d = decide(0, lower, history, 10)
    assert d.replicas == 4
    # ... and raising it back does not resurrect more than the demand asks for.
    d2 = decide(0, LIMITS, d.history, 20)
    assert d2.replicas == 10  # the old recommendation of 10 is still inside the window
    assert decide(0, LIMITS, d2.history, 300).replicas == 1


def test_raising_min_under_a_history_applies_at_once() -> None:
    history = run([(0, 0)])[-1].history
    d = decide(0, PoolLimits(5, 10, 4, 2, 300), history, 10)
    assert (d.replicas, d.limited) == (5, AT_MIN)


def test_lowering_min_waits_the_delay_like_any_scale_down() -> None:
    high_floor = PoolLimits(6, 10, 4, 2, 300)
    history = run([(0, 0)], limits=high_floor)[-1].history
    assert replicas([(10, 0), (299, 0), (300, 0)], history=history) == [6, 6, 1]


# --- the lead term --------------------------------------------------------------------------------


def test_lead_defaults_keep_old_callers_working() -> None:
    limits = PoolLimits(1, 10, 4, 2, 300)  # positional, as the operator builds it
    assert (limits.lead_time_s, limits.trend_window_s) == (LEAD_TIME_S, TREND_WINDOW_S)
    d = decide(3, limits, seed_history(2, now=0), 0)
    assert (d.replicas, d.target, d.unclamped, d.limited, d.lead_sessions) == (2, 2, 2, None, 0)


def test_a_steady_ramp_keeps_its_projected_arrivals_warm() -> None:
    # One more session every 5 s: 9 over the 45 s window, 9 x 18/45 = 3.6 -> 4 lead slots.
    ds = run([(float(t), t // 5) for t in range(0, 50, 5)])
    assert [d.lead_sessions for d in ds] == [0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert ds[-1].unclamped == math.ceil((9 + 2 + 4) / 4)
    # ... and the same ramp without the term asks one pod less.
    assert run([(float(t), t // 5) for t in range(0, 50, 5)], limits=STATIC)[-1].unclamped == 3


def test_a_burst_counts_as_spare_sessions_not_as_a_trend() -> None:
    burst = run([(0, 10), (5, 10), (10, 40)])[-1]
    assert burst.lead_sessions == math.ceil(2 * LEAD_TIME_S / TREND_WINDOW_S)  # the rise is capped at 2
    # Falls count in full: a burst that ends leaves no trend behind.
    assert run([(0, 10), (5, 40), (10, 10)])[-1].lead_sessions == 0


def test_no_lead_without_growth() -> None:
    assert [d.lead_sessions for d in run([(float(t), 12) for t in range(0, 300, 5)])] == [0] * 60
    falling = run([(float(t), 60 - t // 5) for t in range(0, 300, 5)])
    assert all(d.lead_sessions == 0 for d in falling)


def test_growth_older_than_the_window_is_forgotten() -> None:
    steps = [(0, 0), (5, 2), (10, 4), (50, 4), (56, 4)]
    assert [d.lead_sessions for d in run(steps)] == [0, 1, 2, 1, 0]  # at 50 s only 5 -> 10 s is left
    assert [t for t, _ in run(steps)[-1].history.samples] == [50, 56]


def test_a_young_history_does_not_extrapolate_from_seconds() -> None:
    # A rise of 2 in the first second is 2 over the window, not 2 per second.
    assert run([(0, 0), (1, 2)])[-1].lead_sessions == 1


def test_the_lead_term_can_be_turned_off() -> None:
    ramp = [(float(t), t // 5) for t in range(0, 100, 5)]
    for off in (STATIC, replace(LIMITS, trend_window_s=0), replace(LIMITS, spare_sessions=0)):
        assert all(d.lead_sessions == 0 for d in run(ramp, limits=off))


def test_lead_can_reach_max_and_reports_it() -> None:
    # 37 active + 2 spare fit 10 pods; the ramp's 2 lead slots do not.
    d = run([(0, 33), (5, 35), (10, 37)])[-1]
    assert (d.lead_sessions, d.replicas, d.limited, d.unclamped) == (2, 10, AT_MAX, 10 + 1)


def test_restart_starts_the_trend_from_nothing() -> None:
    d = decide(30, LIMITS, seed_history(3, now=1000), 1000)
    assert (d.lead_sessions, d.history.samples) == (0, ((1000, 30),))


def test_lead_sessions_direct() -> None:
    assert lead_sessions((), LIMITS) == 0
    assert lead_sessions(((5, 3),), LIMITS) == 0
    assert lead_sessions(((5, 3), (5, 9)), LIMITS) == 0  # no time between samples: no rate
    assert lead_sessions(((0, 0), (45, 5)), LIMITS) == 1  # one step capped at 2: 2 x 18/45 = 0.8
    assert lead_sessions(tuple((float(5 * i), 2 * i) for i in range(10)), LIMITS) == math.ceil(18 * 18 / 45)
    # exact integers do not round up: 5 x 18/45 = 2
    assert lead_sessions(((0, 0), (15, 2), (30, 4), (45, 5)), LIMITS) == 2


# --- properties -----------------------------------------------------------------------------------


@st.composite
def limits_st(draw: st.DrawFn) -> PoolLimits:
    lo = draw(st.integers(0, 5))
    hi = draw(st.integers(max(lo, 1), 60))
    return PoolLimits(
        min_replicas=lo,
        max_replicas=hi,
        sessions_per_worker=draw(st.integers(1, 8)),
        spare_sessions=draw(st.integers(0, 10)),
        scale_down_delay_s=draw(st.sampled_from([0, 1, 5, 30, 60, 300, 301.5])),
        lead_time_s=draw(st.sampled_from([0, 5, LEAD_TIME_S, 60])),
        trend_window_s=draw(st.sampled_from([0, 10, TREND_WINDOW_S, 120.5])),
    )


@st.composite
def load_st(draw: st.DrawFn) -> list[tuple[float, int]]:
    """Strictly increasing times (integer steps often land exactly on window edges) with session counts."""
    gaps = draw(
        st.lists(
            st.one_of(st.integers(1, 120), st.floats(0.01, 400, allow_nan=False)), min_size=1, max_size=60
        )
    )
    counts = draw(st.lists(st.integers(0, 400), min_size=len(gaps), max_size=len(gaps)))
    times = [float(sum(gaps[: i + 1])) for i in range(len(gaps))]
    return list(zip(times, counts, strict=True))


SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(limits=limits_st(), load=load_st())
def test_replicas_stay_within_bounds_and_cover_demand(
    limits: PoolLimits, load: list[tuple[float, int]]
) -> None:
    for (_, active), d in zip(load, run(load, limits=limits), strict=True):
        assert limits.min_replicas <= d.replicas <= limits.max_replicas
        assert d.replicas >= d.target
        slots = active + limits.spare_sessions + d.lead_sessions
        assert d.unclamped == math.ceil(slots / limits.sessions_per_worker)
        if d.unclamped <= limits.max_replicas:
            assert d.replicas * limits.sessions_per_worker >= slots
            assert d.limited in (None, AT_MIN)
        else:
            assert (d.replicas, d.limited) == (limits.max_replicas, AT_MAX)


@SETTINGS
@given(limits=limits_st(), load=load_st())
def test_no_flapping_inside_the_delay(limits: PoolLimits, load: list[tuple[float, int]]) -> None:
    ds = run(load, limits=limits)
    times = [t for t, _ in load]
    delay = limits.scale_down_delay_s
    for i, d in enumerate(ds):
        window = [ds[j].target for j in range(i + 1) if times[i] - times[j] < delay] + [d.target]
        # The HPA-style rule exactly: the highest target recommended in (now - delay, now].
        assert d.replicas == max(window)
        if i and d.replicas < ds[i - 1].replicas:
            assert all(t <= d.replicas for t in window)
    # After any scale-up at t, nothing before t + delay returns fewer replicas than it.
    for i in range(1, len(ds)):
        if ds[i].replicas > ds[i - 1].replicas:
            for j in range(i + 1, len(ds)):
                if times[j] - times[i] < delay:
                    assert ds[j].replicas >= ds[i].replicas


@SETTINGS
@given(limits=limits_st(), load=load_st())
def test_lead_is_the_recent_capped_growth(limits: PoolLimits, load: list[tuple[float, int]]) -> None:
    for (now, active), d in zip(load, run(load, limits=limits), strict=True):
        samples = d.history.samples
        assert samples[-1] == (now, active)
        assert all(now - t <= limits.trend_window_s for t, _ in samples)  # only the window is kept
        assert d.lead_sessions >= 0
        if limits.lead_time_s <= 0 or limits.spare_sessions == 0 or len(samples) < 2:
            assert d.lead_sessions == 0
            continue
        net = active - samples[0][1]
        window = max(now - samples[0][0], limits.trend_window_s)
        # Never more than the net growth seen in the window projected over the lead ...
        assert d.lead_sessions <= math.ceil(max(net, 0) * limits.lead_time_s / window)
        # ... nor more than spareSessions per step; and exactly the net growth when no step jumped.
        steps = [b - a for (_, a), (_, b) in pairwise(samples)]
        cap = limits.spare_sessions * len(steps)
        assert d.lead_sessions <= math.ceil(cap * limits.lead_time_s / window)
        if all(s <= limits.spare_sessions for s in steps):
            assert d.lead_sessions == max(math.ceil(net * limits.lead_time_s / window - 1e-9), 0)


@SETTINGS
@given(limits=limits_st(), load=load_st())
def test_without_the_lead_term_the_policy_is_active_plus_spare(
    limits: PoolLimits, load: list[tuple[float, int]]
) -> None:
    static = replace(limits, lead_time_s=0)
    for (_, active), d in zip(load, run(load, limits=static), strict=True):
        assert d.lead_sessions == 0
        assert d.unclamped == demand_replicas(active, static)


@SETTINGS
@given(limits=limits_st(), load=load_st())
def test_scales_down_once_a_whole_delay_of_lower_demand_passed(
    limits: PoolLimits, load: list[tuple[float, int]]
) -> None:
    ds = run(load, limits=limits)
    last_t = load[-1][0]
    # Past both the delay and the trend window, nothing of the old load is left (+1 µs: with float
    # times, t + delay - t can round to just under delay).
    quiet = last_t + max(limits.scale_down_delay_s, limits.trend_window_s) + 1e-6
    d = decide(0, limits, ds[-1].history, quiet)
    assert d.lead_sessions == 0
    assert d.replicas == clamp(demand_replicas(0, limits), limits)


@SETTINGS
@given(limits=limits_st(), load=load_st(), current=st.integers(0, 80))
def test_restart_never_shrinks_before_a_delay(
    limits: PoolLimits, load: list[tuple[float, int]], current: int
) -> None:
    start = load[0][0]
    for (t, _), d in zip(load, run(load, limits=limits, history=seed_history(current, start)), strict=True):
        assert limits.min_replicas <= d.replicas <= limits.max_replicas
        if t - start < limits.scale_down_delay_s:
            assert d.replicas >= clamp(current, limits)


@SETTINGS
@given(
    specs=st.lists(limits_st(), min_size=2, max_size=4),
    load=load_st(),
    switch=st.data(),
)
def test_spec_changes_under_a_history_stay_within_the_new_bounds(
    specs: list[PoolLimits], load: list[tuple[float, int]], switch: st.DataObject
) -> None:
    history = History()
    for now, active in load:
        limits = switch.draw(st.sampled_from(specs))
        d = decide(active, limits, history, now)
        history = d.history
        assert limits.min_replicas <= d.replicas <= limits.max_replicas
        assert d.replicas >= d.target

"""The builtin autoscaling policy (pure): table tests, then properties over random limits and loads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyteller_operator.policy import (
    AT_MAX,
    AT_MIN,
    Decision,
    History,
    PoolLimits,
    clamp,
    decide,
    demand_replicas,
    seed_history,
)

LIMITS = PoolLimits(
    min_replicas=1, max_replicas=10, sessions_per_worker=4, spare_sessions=2, scale_down_delay_s=300
)


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
    assert replicas([(0, 0), (5, 20), (10, 30)]) == [1, 6, 8]


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
        assert d.unclamped == math.ceil((active + limits.spare_sessions) / limits.sessions_per_worker)
        if d.unclamped <= limits.max_replicas:
            assert d.replicas * limits.sessions_per_worker >= active + limits.spare_sessions
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
def test_scales_down_once_a_whole_delay_of_lower_demand_passed(
    limits: PoolLimits, load: list[tuple[float, int]]
) -> None:
    ds = run(load, limits=limits)
    last_t = load[-1][0]
    # (+1 µs: with float times, t + delay - t can round to just under delay)
    d = decide(0, limits, ds[-1].history, last_t + limits.scale_down_delay_s + 1e-6)
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

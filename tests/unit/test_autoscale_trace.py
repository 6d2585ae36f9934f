"""bench/autoscale_sim.py with a trace: parsing and validating the CSV, replaying it through the same
simulation as the synthetic day, and the synthetic day itself unchanged by the trace support.

Pure logic, no files except where the command line is the subject (a bad trace exits 2, like argparse).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path

import pytest

from bench import autoscale_sim as sim

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "bench" / "traces" / "example.csv"

# make_day(seed) as it was before traces existed: (sessions, sum of arrivals, sum of durations,
# sessions in bursts, bursts, sha256 of the (arrival, duration, burst, burst_id) tuples, first 16 hex).
SYNTHETIC_BEFORE = {
    1: (15221, 822_964_104, 4_656_359, 555, 120, "9a70d6bf7d97b7bb"),
    7: (15449, 832_265_170, 4_691_590, 598, 120, "450e50937ec17869"),
}


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def replay(text: str) -> sim.Workload:
    return sim.trace_workload(sim.parse_trace(lines(text), "t.csv"), seed=1, trace="t.csv")


# --- parsing ------------------------------------------------------------------------------------


def test_a_good_trace_parses_in_file_order_with_whole_seconds() -> None:
    text = "arrival_s, duration_s ,room\n30,60,a\n0,45.2,b\n 12.9 , 1e2 ,c\n\n7,0.5,d\n"
    sessions = sim.parse_trace(lines(text))
    # Arrivals round down, durations up (never to 0); extra columns, spaces and blank lines are ignored.
    assert [(s.arrival, s.duration) for s in sessions] == [(30, 60), (0, 46), (12, 100), (7, 1)]
    assert all(s.burst == 0 and s.burst_id == -1 for s in sessions)


def test_a_workload_from_a_trace_is_sorted_and_spans_to_the_last_end() -> None:
    # The session arriving last (at 100) ends at 110, but the one at 5 runs until 505.
    work = replay("arrival_s,duration_s\n100,10\n5,500\n0,20\n")
    assert [s.arrival for s in work.sessions] == [0, 5, 100]
    assert work.length_s == 505
    assert work.horizon_s == 505 + sim.TAIL_S
    assert work.label == "trace t.csv"


def test_sessions_arriving_in_the_same_second_are_a_burst() -> None:
    work = replay("arrival_s,duration_s\n50,10\n10,10\n50,20\n10.4,30\n10.9,40\n99,5\n")
    got = [(s.arrival, s.burst, s.burst_id) for s in work.sessions]
    assert got == [(10, 3, 0), (10, 3, 0), (10, 3, 0), (50, 2, 1), (50, 2, 1), (99, 0, -1)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", ["empty file", "arrival_s,duration_s"], id="empty file"),
        pytest.param("arrival_s,duration_s\n", ["empty trace", "no rows"], id="header only"),
        pytest.param("\n1,2\n", ["header (line 1)", "blank"], id="blank header"),
        pytest.param(
            "arrival,duration_s\n1,2\n", ["header (line 1)", "missing column arrival_s"], id="no arrival_s"
        ),
        pytest.param(
            "start,end\n1,2\n", ["header (line 1)", "missing columns arrival_s, duration_s"], id="neither"
        ),
        pytest.param(
            "arrival_s,duration_s\n1,2\nsoon,3\n",
            ["row 2 (line 3)", "arrival_s is not a number: 'soon'"],
            id="arrival not a number",
        ),
        pytest.param(
            "arrival_s,duration_s\n1,2\n3,4\n5,4m\n",
            ["row 3 (line 4)", "duration_s is not a number: '4m'"],
            id="duration not a number",
        ),
        pytest.param(
            "arrival_s,duration_s\n1,inf\n", ["row 1 (line 2)", "duration_s is not a finite number"], id="inf"
        ),
        pytest.param(
            "arrival_s,duration_s\n1,2\n-0.5,3\n",
            ["row 2 (line 3)", "arrival_s must be >= 0, got -0.5"],
            id="negative arrival",
        ),
        pytest.param(
            "arrival_s,duration_s\n1,0\n", ["row 1 (line 2)", "duration_s must be > 0, got 0"], id="zero"
        ),
        pytest.param(
            "arrival_s,duration_s\n1,2\n\n3,-4\n",
            ["row 2 (line 4)", "duration_s must be > 0, got -4"],
            id="negative duration after a blank line",
        ),
        pytest.param(
            "arrival_s,duration_s\n1,2\n3\n", ["row 2 (line 3)", "duration_s is missing"], id="short row"
        ),
        pytest.param("arrival_s,duration_s\n,2\n", ["row 1 (line 2)", "arrival_s is missing"], id="empty"),
        pytest.param(
            "arrival_s,duration_s\n1,2,3\n", ["row 1 (line 2)", "more fields than the header's 2"], id="long"
        ),
    ],
)
def test_a_bad_trace_is_refused_naming_the_row_and_field(text: str, expected: list[str]) -> None:
    with pytest.raises(sim.TraceError) as err:
        sim.parse_trace(lines(text), "t.csv")
    message = str(err.value)
    assert message.startswith("t.csv: ")
    for part in expected:
        assert part in message


def test_a_bad_trace_on_the_command_line_exits_2_with_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,duration_s\n0,60\n10,0\n")
    with pytest.raises(SystemExit) as exited:
        sim.main(["--trace", str(bad), "--no-spare-table"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {bad}: row 2 (line 3): duration_s must be > 0, got 0" in err
    assert "Traceback" not in err


def test_a_missing_trace_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        sim.main(["--trace", str(tmp_path / "nope.csv")])
    assert exited.value.code == 2
    assert "nope.csv: cannot read the trace" in capsys.readouterr().err


def test_the_example_trace_loads() -> None:
    work = sim.load_trace(EXAMPLE, seed=1)
    assert len(work.sessions) >= 24
    assert any(s.burst for s in work.sessions)
    assert work.trace == str(EXAMPLE)


# --- replaying ----------------------------------------------------------------------------------


def builders() -> list[tuple[str, sim.Scaler]]:
    limits = sim.limits_for(2)
    return [
        ("builtin", sim.SessionScaler(limits, sim.DECISION_S)),
        ("HPA", sim.HpaScaler(limits, random.Random(1))),
        ("poll", sim.SessionScaler(replace(limits, lead_time_s=0), 30)),
    ]


def test_a_trace_well_within_capacity_loses_no_session_under_any_scaler() -> None:
    # One pod of 4 slots is up from the start; never more than 3 sessions at once.
    work = replay("arrival_s,duration_s\n0,30\n10,30\n20,30\n100,60\n130,60\n400,10\n")
    for name, scaler in builders():
        res = sim.simulate(name, work, scaler, sim.limits_for(2))
        assert res.sessions == 6
        assert res.no_warm == [], name
        assert res.waits == [], name
        assert res.cut_sessions == 0, name


def test_a_burst_beyond_the_first_pod_leaves_exactly_the_overflow_without_a_warm_slot() -> None:
    # Six at second 0 on one ready pod of 4: two find no slot whatever the scaler, and then wait for the
    # pod asked for at that same second (ready STARTUP_S later).
    work = replay("arrival_s,duration_s\n" + "0,600\n" * 6 + "2000,60\n")
    for name, scaler in builders():
        res = sim.simulate(name, work, scaler, sim.limits_for(2))
        assert len(res.no_warm) == 2, name
        if name != "HPA":  # the HPA sees no CPU for a while and waits longer
            assert res.waits == [sim.STARTUP_S, sim.STARTUP_S], name


def test_the_horizon_comes_from_the_trace_not_the_day() -> None:
    # One session of 60 s: the oracle holds min (1 pod) over 60 s plus the tail, not over a day.
    work = replay("arrival_s,duration_s\n0,60\n")
    assert sim.oracle(work, sim.limits_for(2)).pod_minutes == pytest.approx((60 + sim.TAIL_S) / 60)
    res = sim.simulate(
        "builtin", work, sim.SessionScaler(sim.limits_for(2), sim.DECISION_S), sim.limits_for(2)
    )
    assert res.pod_minutes == pytest.approx((60 + sim.TAIL_S) / 60)


def test_peak_base_arrivals_counts_sessions_outside_bursts_in_a_window() -> None:
    work = replay("arrival_s,duration_s\n0,5\n10,5\n20,5\n24,5\n24,5\n30,5\n60,5\n")
    # Base arrivals 0, 10, 20, 30, 60 (the two at 24 are a burst): at most 3 within any 25 s.
    assert sim.peak_base_arrivals(work, 25) == 3
    assert sim.peak_base_arrivals(work, 1) == 1


# --- the synthetic day is unchanged -------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(SYNTHETIC_BEFORE))
def test_the_synthetic_day_draws_the_same_sessions_as_before(seed: int) -> None:
    work = sim.synthetic_day(seed)
    sessions = work.sessions
    digest = hashlib.sha256(repr([(s.arrival, s.duration, s.burst, s.burst_id) for s in sessions]).encode())
    got = (
        len(sessions),
        sum(s.arrival for s in sessions),
        sum(s.duration for s in sessions),
        sum(1 for s in sessions if s.burst),
        len({s.burst_id for s in sessions if s.burst}),
        digest.hexdigest()[:16],
    )
    assert got == SYNTHETIC_BEFORE[seed]
    assert list(sessions) == sim.make_day(seed)
    assert (work.length_s, work.horizon_s, work.trace) == (sim.DAY_S, sim.DAY_S + sim.TAIL_S, None)
    assert work.label == f"seed {seed}"
    assert work.span == "24 h"


def test_the_synthetic_day_replays_to_the_same_figures_as_before() -> None:
    # Recorded before traces existed: builtin (5 s) and the oracle on seed 1, spareSessions 2.
    work, limits = sim.synthetic_day(1), sim.limits_for(2)
    res = sim.simulate("builtin", work, sim.SessionScaler(limits, sim.DECISION_S), limits)
    assert (len(res.no_warm), res.scale_events, res.cut_sessions, sum(res.waits)) == (199, 545, 0, 1796)
    assert res.pod_minutes == pytest.approx(23993.516666666666)
    base = sim.oracle(work, limits)
    assert base.pod_minutes == pytest.approx(20981.816666666666)
    assert base.scale_events == 6085

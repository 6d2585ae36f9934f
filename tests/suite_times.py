"""Where the suite's time goes: wall and CPU time per tier and per test file.

At the end of a run this plugin prints two tables (tiers, then the slowest files) and writes every test's
figures to ``.state/suite/test-times.json``:

- ``wall``: the test's setup + call + teardown, as pytest measures them;
- ``own cpu``: CPU seconds of the pytest process that ran it and of the child processes it reaped meanwhile
  (kubectl, helm, worker processes a test stopped; not the long-lived servers of session fixtures);
- ``machine``: the whole machine's busy CPU seconds while the test ran, read from ``/proc/stat`` once a
  second by the process that reports (the xdist controller, or pytest itself). Tests that ran side by side
  share it, so per file it may add up to more than the tier's.
- per tier, ``span`` is its first start to its last end, and ``busy`` the machine's CPU use over that span
  (100 % = every core busy): a tier that waits shows a low figure.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import resource
import threading
import time
from collections import defaultdict
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPORT_PATH = Path(__file__).resolve().parents[1] / ".state" / "suite" / "test-times.json"
SAMPLE_EVERY_S = 1.0
SLOWEST_FILES = 25
_OWN_CPU = "suite_times.own_cpu_s"
_CPU_STASH = pytest.StashKey[float]()


def _own_cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal, sum(fields)


class MachineCpu:
    """The machine's busy CPU seconds over time, sampled by a daemon thread."""

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK")
        self.cores = os.cpu_count() or 1
        self._times: list[float] = []
        self._busy: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suite-times-cpu", daemon=True)

    def start(self) -> MachineCpu:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _sample(self) -> None:
        busy, _ = _machine_jiffies()
        self._times.append(time.time())
        self._busy.append(busy / self._hz)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self._sample()

    def _at(self, t: float) -> float:
        """Busy CPU seconds at time t, interpolated between samples."""
        i = bisect.bisect_left(self._times, t)
        if i <= 0:
            return self._busy[0]
        if i >= len(self._times):
            return self._busy[-1]
        t0, t1 = self._times[i - 1], self._times[i]
        b0, b1 = self._busy[i - 1], self._busy[i]
        return b0 + (b1 - b0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)

    def busy_s(self, start: float, stop: float) -> float:
        return max(0.0, self._at(stop) - self._at(start)) if self._times else 0.0


@dataclass
class TestTimes:
    nodeid: str
    tier: str
    file: str
    worker: str
    start: float = 0.0
    stop: float = 0.0
    wall_s: float = 0.0
    own_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    outcome: str = "passed"


@dataclass
class Totals:
    tests: int = 0
    start: float = float("inf")
    stop: float = 0.0
    wall_s: float = 0.0
    own_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    workers: set[str] = field(default_factory=set)

    def add(self, t: TestTimes) -> None:
        self.tests += 1
        self.start, self.stop = min(self.start, t.start), max(self.stop, t.stop)
        self.wall_s += t.wall_s
        self.own_cpu_s += t.own_cpu_s
        self.machine_cpu_s += t.machine_cpu_s
        self.workers.add(t.worker)

    @property
    def span_s(self) -> float:
        return max(0.0, self.stop - self.start) if self.tests else 0.0


def tier(nodeid: str) -> str:
    """The tier a test belongs to: its folder under tests/ ("" outside one)."""
    parts = nodeid.split("::")[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else ""


class SuiteTimes:
    """Collects every test's phases (also from xdist workers) and reports at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tests: dict[str, TestTimes] = {}
        self.cpu = MachineCpu()
        self.started = time.time()

    @pytest.hookimpl
    def pytest_sessionstart(self) -> None:
        self.cpu.start()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        t = self.tests.get(report.nodeid)
        if t is None:
            worker = getattr(report, "node", None)
            worker_id = getattr(worker, "gateway", None)
            t = TestTimes(
                report.nodeid,
                tier(report.nodeid) or "other",
                report.nodeid.split("::")[0],
                getattr(worker_id, "id", "main"),
                start=report.start,
            )
            self.tests[report.nodeid] = t
        t.start = min(t.start, report.start)
        t.stop = max(t.stop, report.stop)
        t.wall_s += report.duration
        t.own_cpu_s += dict(report.user_properties).get(_OWN_CPU, 0.0)
        if report.failed:
            t.outcome = "failed"
        elif report.skipped and t.outcome == "passed":
            t.outcome = "skipped"

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        self.cpu.stop()
        if not self.tests:
            return
        for t in self.tests.values():
            t.machine_cpu_s = self.cpu.busy_s(t.start, t.stop)
        tiers: dict[str, Totals] = defaultdict(Totals)
        files: dict[str, Totals] = defaultdict(Totals)
        for t in self.tests.values():
            tiers[t.tier].add(t)
            files[t.file].add(t)
        tr = terminalreporter
        tr.section("where the time went (tests/suite_times.py)")
        tr.write_line(
            f"{'tier':<12} {'tests':>5} {'span':>8} {'wall':>8} {'own cpu':>8} {'busy':>5} {'workers':>7}"
        )
        for name, tot in sorted(tiers.items(), key=lambda kv: kv[1].start):
            busy = self.cpu.busy_s(tot.start, tot.stop) / max(tot.span_s * self.cpu.cores, 1e-9)
            tr.write_line(
                f"{name:<12} {tot.tests:>5} {_mmss(tot.span_s):>8} {_mmss(tot.wall_s):>8} "
                f"{_mmss(tot.own_cpu_s):>8} {busy:>5.0%} {len(tot.workers):>7}"
            )
        first = min(t.start for t in self.tests.values())
        last = max(t.stop for t in self.tests.values())
        busy_all = self.cpu.busy_s(first, last) / max((last - first) * self.cpu.cores, 1e-9)
        tr.write_line(
            f"{'all':<12} {len(self.tests):>5} {_mmss(last - first):>8} {'':>8} {'':>8} {busy_all:>5.0%}"
        )
        tr.write_line("")
        tr.write_line(f"{'slowest files':<58} {'tests':>5} {'wall':>8} {'own cpu':>8} {'machine':>8}")
        for name, tot in sorted(files.items(), key=lambda kv: -kv[1].wall_s)[:SLOWEST_FILES]:
            tr.write_line(
                f"{name:<58} {tot.tests:>5} {_mmss(tot.wall_s):>8} {_mmss(tot.own_cpu_s):>8} "
                f"{_mmss(tot.machine_cpu_s):>8}"
            )
        # Files this run did not touch keep their last figures: a run of one file must not make the next
        # `make test` forget how long the others take (it orders the work by them).
        kept = [t for t in _previous_tests() if t.get("file") not in files]
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        REPORT_PATH.write_text(
            json.dumps(
                {
                    "cores": self.cpu.cores,
                    "started": self.started,
                    "tests": kept + [asdict(t) for t in sorted(self.tests.values(), key=lambda t: t.start)],
                },
                indent=1,
            )
        )
        tr.write_line(f"every test's figures: {REPORT_PATH}")


def _previous_tests() -> list[dict[str, Any]]:
    """The figures the last runs wrote (empty without any, or when unreadable)."""
    try:
        tests = json.loads(REPORT_PATH.read_text())["tests"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [t for t in tests if isinstance(t, dict)] if isinstance(tests, list) else []


def previous_seconds_by_file() -> dict[str, float]:
    """Each test file's wall time when it last ran (empty before any run)."""
    seconds: dict[str, float] = defaultdict(float)
    for t in _previous_tests():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            seconds[str(t["file"])] += float(t["wall_s"])
    return dict(seconds)


def _mmss(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_CPU_STASH] = _own_cpu_s()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_CPU_STASH] = _own_cpu_s()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_CPU_STASH] = _own_cpu_s()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    began = item.stash.get(_CPU_STASH, None)
    if began is not None:
        report.user_properties.append((_OWN_CPU, _own_cpu_s() - began))


def pytest_configure(config: pytest.Config) -> None:
    # The xdist workers only measure their own CPU; the controller (or a run without xdist) reports.
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(SuiteTimes(config), "suite-times-report")

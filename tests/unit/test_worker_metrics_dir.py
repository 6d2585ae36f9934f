"""The metrics directory's reaper: exited processes' files folded into archives, values kept exactly.

Dead processes are real: a writer subprocess in multiprocess mode forks one child per "job process",
each child records with the real prometheus_client and exits, so their files carry real pids of
exited processes. The directory is then read with the worker's collector, before and after reaping.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from storyteller_worker.telemetry import metrics_archive, metrics_dir
from storyteller_worker.telemetry.metrics_archive import LockedMultiProcessCollector

# One "job process" per child: what each records depends on its index, so totals are known.
_WRITER = r"""
import json, os, sys
from prometheus_client import Counter, Gauge, Histogram, Summary

SESSIONS = Counter("t_sessions", "Sessions.", ["tenant"])
AUDIO = Counter("t_audio_seconds", "Audio.", ["tenant"])
DURATION = Histogram("t_duration_seconds", "Duration.", ["tenant"], buckets=(0.5, 1.0, 10.0))
LATENCY = Summary("t_latency_seconds", "Latency.", ["tenant"])
CAPACITY = Gauge("t_capacity", "Capacity.", ["tenant"], multiprocess_mode="max")
FLOOR = Gauge("t_floor", "Floor.", ["tenant"], multiprocess_mode="min")
ACTIVE = Gauge("t_active", "Active.", ["tenant"], multiprocess_mode="livesum")
LOAD = Gauge("t_load", "Load.", ["tenant"], multiprocess_mode="all")

def work(i):
    SESSIONS.labels("acme").inc()
    AUDIO.labels("acme").inc(0.1 * (i + 1))  # not integers: their sum depends on the order of additions
    DURATION.labels("acme").observe(0.3 * i)
    LATENCY.labels("acme").observe(0.01 * i)
    CAPACITY.labels("acme").set(i)
    FLOOR.labels("acme").set(100 - i)
    ACTIVE.labels("acme").set(1)  # a session its process never ended
    LOAD.labels("acme").set(i)

count, stay = int(sys.argv[1]), sys.argv[2] == "stay"
pids = []
for i in range(count):
    pid = os.fork()
    if pid == 0:
        work(i)
        os._exit(0)
    os.waitpid(pid, 0)
    pids.append(pid)
if stay:
    work(count)
print(json.dumps({"dead": pids, "self": os.getpid()}), flush=True)
if stay:
    sys.stdin.read()  # alive until the test closes stdin
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _write_processes(path: Path, count: int) -> list[int]:
    """`count` exited job processes' files in `path`; returns their pids."""
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, str(count), "exit"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pids: list[int] = json.loads(out.stdout)["dead"]
    return pids


@pytest.fixture
def live_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A running process with its own files in tmp_path/metrics (after 3 exited children's)."""
    path = tmp_path / "metrics"
    path.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, "3", "stay"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    pid = json.loads(proc.stdout.readline())["self"]  # blocks until its files are written
    yield proc, pid
    proc.stdin.close()
    proc.wait(timeout=30)


def _scrape(path: Path) -> Samples:
    """What the worker's /metrics serves from `path`, by sample name and labels."""
    registry = CollectorRegistry()
    LockedMultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _is_monotonic(name: str) -> bool:
    return name.endswith(("_total", "_bucket", "_count", "_sum"))


def _assert_kept(before: Samples, after: Samples) -> None:
    """Counters, histograms and summaries: never lower after a reap, and equal up to rounding."""
    kept = {k: v for k, v in before.items() if _is_monotonic(k[0])}
    assert kept
    for key, value in kept.items():
        assert after[key] >= value, key
        assert math.isclose(after[key], value, rel_tol=1e-12), (key, value, after[key])


def test_reaping_keeps_every_counter_histogram_and_summary_value(tmp_path: Path) -> None:
    n = 12
    dead = _write_processes(tmp_path, n)
    before = _scrape(tmp_path)

    assert metrics_dir.reap_dead_processes(tmp_path) == sorted(dead)
    after = _scrape(tmp_path)

    _assert_kept(before, after)
    # The totals are what the processes recorded, exactly where the values are integers.
    assert _value(after, "t_sessions_total", tenant="acme") == n
    assert _value(after, "t_duration_seconds_count", tenant="acme") == n
    assert _value(after, "t_duration_seconds_bucket", tenant="acme", le="0.5") == 2  # 0.0, 0.3
    assert _value(after, "t_duration_seconds_bucket", tenant="acme", le="1.0") == 4  # ..., 0.6, 0.9
    assert _value(after, "t_duration_seconds_bucket", tenant="acme", le="+Inf") == n
    assert _value(after, "t_latency_seconds_count", tenant="acme") == n
    audio = sum(Fraction(0.1 * (i + 1)) for i in range(n))
    assert math.isclose(_value(after, "t_audio_seconds_total", tenant="acme"), float(audio), rel_tol=1e-12)
    # Gauges merged by max/min keep their value; the pid label is not theirs.
    assert _value(after, "t_capacity", tenant="acme") == n - 1
    assert _value(after, "t_floor", tenant="acme") == 100 - (n - 1)


def test_exited_processes_live_and_all_gauges_are_dropped(tmp_path: Path) -> None:
    _write_processes(tmp_path, 4)
    before = _scrape(tmp_path)
    assert _value(before, "t_active", tenant="acme") == 4  # sessions their processes never ended
    assert sum(1 for name, _labels in before if name == "t_load") == 4  # one series per pid

    metrics_dir.reap_dead_processes(tmp_path)

    after = _scrape(tmp_path)
    assert ("t_active", (("tenant", "acme"),)) not in after or _value(after, "t_active", tenant="acme") == 0
    assert not [name for name, _labels in after if name == "t_load"]


def test_the_number_of_files_does_not_grow_with_the_number_of_processes(tmp_path: Path) -> None:
    names = []
    for n in (2, 25):
        path = tmp_path / str(n)
        path.mkdir()
        _write_processes(path, n)
        assert len(list(path.iterdir())) == 7 * n  # counter, histogram, summary and four gauge files each
        metrics_dir.reap_dead_processes(path)
        names.append(sorted(p.name for p in path.iterdir()))
    assert (
        names[0]
        == names[1]
        == [
            "counter_archive.db",
            "gauge_max_archive.db",
            "gauge_min_archive.db",
            "histogram_archive.db",
            "summary_archive.db",
        ]
    )


def test_successive_reaps_add_up_and_an_idle_reap_changes_nothing(tmp_path: Path) -> None:
    _write_processes(tmp_path, 5)
    metrics_dir.reap_dead_processes(tmp_path)
    _write_processes(tmp_path, 7)  # more sessions end after the first reap
    before = _scrape(tmp_path)

    assert len(metrics_dir.reap_dead_processes(tmp_path)) == 7
    after = _scrape(tmp_path)
    _assert_kept(before, after)
    assert _value(after, "t_sessions_total", tenant="acme") == 12

    contents = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert metrics_dir.reap_dead_processes(tmp_path) == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == contents
    assert _scrape(tmp_path) == after


def test_a_running_process_files_are_untouched(
    tmp_path: Path, live_process: tuple[subprocess.Popen[str], int]
) -> None:
    _proc, pid = live_process
    path = tmp_path / "metrics"
    own = {p.name: p.read_bytes() for p in path.iterdir() if p.stem.endswith(f"_{pid}")}
    assert len(own) == 7
    before = _scrape(path)

    reaped = metrics_dir.reap_dead_processes(path)

    assert reaped and pid not in reaped
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.stem.endswith(f"_{pid}")} == own
    after = _scrape(path)
    _assert_kept(before, after)
    assert _value(after, "t_active", tenant="acme") == 1  # the running process's session only
    assert [labels for name, labels in after if name == "t_load"] == [(("pid", str(pid)), ("tenant", "acme"))]


def test_the_reaping_process_own_files_are_untouched(tmp_path: Path) -> None:
    dead = _write_processes(tmp_path, 2)
    reaped = metrics_archive.reap(tmp_path, own_pid=dead[0])  # as if it were the main process's
    assert reaped.pids == [dead[1]]
    assert (tmp_path / f"counter_{dead[0]}.db").exists()
    assert not (tmp_path / f"counter_{dead[1]}.db").exists()


def _float_counter_file(file: Path, value: float) -> None:
    out = MmapedDict(str(file))  # type: ignore[no-untyped-call]
    key = mmap_key("t_float", "t_float_total", ["tenant"], ["acme"], "Float.")
    out.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
    out.close()  # type: ignore[no-untyped-call]


def _exited_pids(count: int) -> list[int]:
    pids = []
    for _ in range(count):
        proc = subprocess.Popen(["true"])
        proc.wait()
        pids.append(proc.pid)
    return pids


def test_a_float_total_never_goes_down_however_the_additions_are_grouped(tmp_path: Path) -> None:
    # Summing the same floats grouped differently can come out an ulp lower, which Prometheus takes
    # for a counter reset. Random values: some processes exited (folded), one running, maybe an archive.
    rng = random.Random(14)
    exited, running = _exited_pids(6), os.getpid()
    grouping_matters = 0
    for trial in range(200):
        path = tmp_path / str(trial)
        path.mkdir()
        values = [rng.uniform(0, 10) * 10 ** rng.randint(-3, 6) for _ in exited]
        for pid, value in zip(exited, values, strict=True):
            _float_counter_file(path / f"counter_{pid}.db", value)
        live = rng.uniform(0, 1000)
        _float_counter_file(path / f"counter_{running}.db", live)
        if trial % 2:  # an archive from an earlier reap
            values.insert(0, rng.uniform(0, 1e6))
            _float_counter_file(path / "counter_archive.db", values[0])
        grouping_matters += sum(values) + live != sum([live, *values])
        key = ("t_float_total", (("tenant", "acme"),))
        before = _scrape(path)[key]

        metrics_archive.reap(path, own_pid=running)

        after = _scrape(path)[key]
        assert after >= before, trial
        assert math.isclose(after, before, rel_tol=1e-14)
        assert {p.name for p in path.iterdir()} == {"counter_archive.db", f"counter_{running}.db"}
    assert grouping_matters  # the data do exercise rounding


def test_the_swap_happens_under_the_scrape_lock_archive_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = _write_processes(tmp_path, 2)
    seen: list[tuple[str, bool, bool]] = []
    replace, unlink = os.replace, Path.unlink

    def spy_replace(src: str | Path, dst: str | Path) -> None:
        dead_file_there = (tmp_path / f"counter_{dead[0]}.db").exists()
        seen.append(("replace", metrics_archive.SCRAPE_LOCK.locked(), dead_file_there))
        replace(src, dst)

    def spy_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".db":
            seen.append(("unlink", metrics_archive.SCRAPE_LOCK.locked(), True))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(metrics_archive.os, "replace", spy_replace)
    monkeypatch.setattr(Path, "unlink", spy_unlink)
    metrics_dir.reap_dead_processes(tmp_path)

    assert seen and all(locked for _op, locked, _ in seen)
    first_unlink = next(i for i, (op, _l, _e) in enumerate(seen) if op == "unlink")
    assert all(op == "replace" for op, _l, _e in seen[:first_unlink])
    assert all(dead_file_there for op, _l, dead_file_there in seen if op == "replace")


def test_a_scrape_reads_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_processes(tmp_path, 1)
    locked: list[bool] = []
    read = MmapedDict.read_all_values_from_file

    def spy(filename: str) -> object:
        locked.append(metrics_archive.SCRAPE_LOCK.locked())
        return read(filename)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(MmapedDict, "read_all_values_from_file", staticmethod(spy))
    _scrape(tmp_path)
    assert locked and all(locked)


def test_the_frameworks_metrics_endpoint_scrapes_with_the_locked_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livekit.agents.telemetry import http_server

    _write_processes(tmp_path, 2)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # Restored after the test: this process is not the worker's main process.
    monkeypatch.setattr(multiprocess, "MultiProcessCollector", multiprocess.MultiProcessCollector)
    used: list[str] = []
    collect = LockedMultiProcessCollector.collect

    def spy(self: LockedMultiProcessCollector) -> object:
        used.append(self._path)
        return collect(self)

    monkeypatch.setattr(LockedMultiProcessCollector, "collect", spy)
    metrics_archive.install_locked_collector()

    response = asyncio.run(http_server.metrics(None))  # type: ignore[arg-type]

    assert used and set(used) == {str(tmp_path)}
    assert b't_sessions_total{tenant="acme"} 2.0' in response.body

"""Exited processes' metrics files folded into one archive per file family, and the collector reading them.

In multiprocess mode every process writes its own value files (`counter_<pid>.db`, `histogram_<pid>.db`,
`gauge_<mode>_<pid>.db`, ...) and `/metrics` reads every `*.db` file of the directory on each scrape. A
job process serves one session and exits, so without this the directory gains a few files per session
for the pod's whole life, and every scrape reads them all.

`reap` (the worker's main process, every few seconds) handles the files of processes that are gone:

- counters, histograms, summaries: their values are added into `counter_archive.db`,
  `histogram_archive.db`, `summary_archive.db`. They must not be dropped: a total that goes down is a
  counter reset to Prometheus, and `rate()` would count the whole total again;
- gauges merged across processes by max, min, sum or mostrecent: folded the same way into
  `gauge_<mode>_archive.db`; the collector drops the pid of these modes, so the output does not change;
- `live*` gauges: deleted, as `prometheus_client.multiprocess.mark_process_dead` does (a session of a
  killed process must stop counting as active);
- `all` gauges: deleted. Each process is its own series (label `pid`), so keeping them would grow the
  series with every session; a gone process's own value means nothing any more.

The collector takes the archive names as any other file of its family: it reads the type (and a gauge's
mode) from the name before the first (second) `_`, and the rest only as a gauge's `pid` label.

The archive keeps each value under the key its processes wrote, so the collector sums it like any other
file's. Two precautions keep what Prometheus sees monotonic:

- no scrape sees a half-done swap: the new archive is renamed into place and the dead processes' files
  are deleted while holding `SCRAPE_LOCK`, which `LockedMultiProcessCollector` holds while it lists and
  reads the files (see `reap`);
- no rounding makes a total go down: float addition is not associative, so summing the same values
  grouped differently (archive + the rest, instead of each file) can come out one ulp lower, and
  Prometheus takes any decrease for a reset. The collector sums with `math.fsum` (correctly rounded,
  whatever the order) and an archive's sum is rounded up when inexact, so the total after a merge is
  never below the total before. Integer values (counts, tokens, bucket counts) stay exact.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.samples import Sample

logger = logging.getLogger("storyteller.worker.metrics")

# Held while the collector lists and reads the files, and while `reap` swaps an archive in and deletes
# the files it folded: a scrape sees the directory wholly before or wholly after a reap.
SCRAPE_LOCK = threading.Lock()
# One reap at a time: a reap reads the archive it then replaces.
_REAP_LOCK = threading.Lock()

ARCHIVE = "archive"  # the "pid" part of an archive's name
_TMP_SUFFIX = ".tmp"  # not `*.db`: the collector never reads a half-written archive
# A process's value file: `<family>_<pid>.db`, the family being the type and, for gauges, the mode.
_PROCESS_FILE = re.compile(r"^(?P<family>counter|histogram|summary|gauge_[a-z]+)_(?P<pid>\d+)\.db$")

Entry = tuple[float, float]  # (value, timestamp), as the files hold them


def _exact_sum(values: list[float]) -> float:
    """The sum of `values`, rounded up when it is not a float (see the module docstring)."""
    if not all(math.isfinite(v) for v in values):
        return sum(values)
    exact = sum((Fraction(v) for v in values), Fraction(0))
    total = float(exact)
    return math.nextafter(total, math.inf) if Fraction(total) < exact else total


def _summed(entries: list[Entry]) -> Entry:
    return _exact_sum([v for v, _ in entries]), max(t for _, t in entries)


def _most_recent(entries: list[Entry]) -> Entry:
    # On a tie the first wins (the archive's, read first), as in the collector.
    return max(entries, key=lambda e: e[1])


_MERGES: dict[str, Callable[[list[Entry]], Entry]] = {
    "counter": _summed,
    "histogram": _summed,  # bucket values in the files are per bucket, not cumulative: they add up
    "summary": _summed,
    "gauge_sum": _summed,
    "gauge_max": lambda entries: max(entries, key=lambda e: e[0]),
    "gauge_min": lambda entries: min(entries, key=lambda e: e[0]),
    "gauge_mostrecent": _most_recent,
}


def _dropped(family: str) -> bool:
    """Families whose values die with their process: live gauges, and `all` gauges (one series per pid)."""
    return family == "gauge_all" or family.startswith("gauge_live")


def _read(path: Path) -> dict[str, Entry]:
    values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
    return {key: (value, timestamp) for key, value, timestamp, _pos in values}


def _write(path: Path, entries: dict[str, Entry]) -> None:
    path.unlink(missing_ok=True)  # MmapedDict appends to an existing file
    out = MmapedDict(str(path))  # type: ignore[no-untyped-call]
    try:
        for key in sorted(entries):
            out.write_value(key, *entries[key])  # type: ignore[no-untyped-call]
    finally:
        out.close()  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Reaped:
    """What one `reap` did."""

    pids: list[int] = field(default_factory=list)  # exited processes whose files were handled
    live_gauge_pids: list[int] = field(default_factory=list)  # those of them that had live gauges
    merged: int = 0  # files folded into an archive
    dropped: int = 0  # files deleted without merging (live and `all` gauges)
    skipped: list[int] = field(default_factory=list)  # exited, but a file could not be read: left as is


_unreadable_reported: set[int] = set()


def reap(path: Path, own_pid: int | None = None) -> Reaped:
    """Fold the value files of every exited process in `path` into the archives, and delete them.

    Files of running processes and of `own_pid` (default: this process, the worker's main one) are never
    touched, nor files of a family not listed above. A pid is taken for exited when no process has it:
    the kernel hands out pids in sequence, so a new process would have to wrap around the whole pid
    space within the milliseconds between the check and the delete to be mistaken for the old one.
    """
    own = os.getpid() if own_pid is None else own_pid
    result = Reaped()
    with _REAP_LOCK:
        files_by_pid: dict[int, list[tuple[str, Path]]] = defaultdict(list)
        for file in path.iterdir():
            m = _PROCESS_FILE.match(file.name)
            if m and int(m["pid"]) != own and (m["family"] in _MERGES or _dropped(m["family"])):
                files_by_pid[int(m["pid"])].append((m["family"], file))
        dead = sorted(pid for pid in files_by_pid if not _alive(pid))
        if not dead:
            return result

        # Read everything before changing anything: a pid with an unreadable file is left whole.
        folded: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
        to_delete: list[Path] = []
        for pid in dead:
            try:
                contents = [
                    (family, file, _read(file) if family in _MERGES else {})
                    for family, file in files_by_pid[pid]
                ]
            except (OSError, RuntimeError) as err:  # RuntimeError: a corrupt file (prometheus_client)
                result.skipped.append(pid)
                if pid not in _unreadable_reported:
                    _unreadable_reported.add(pid)
                    logger.warning(
                        "metrics files of an exited process are unreadable, left in place",
                        extra={"pid": pid, "error": str(err)},
                    )
                continue
            result.pids.append(pid)
            if any(family.startswith("gauge_live") for family, _file, _values in contents):
                result.live_gauge_pids.append(pid)
            for family, file, values in contents:
                for key, entry in values.items():
                    folded[family][key].append(entry)
                to_delete.append(file)
                if family in _MERGES:
                    result.merged += 1
                else:
                    result.dropped += 1

        # New archives under temporary names (the archive's values come first: see _most_recent).
        swaps: list[tuple[Path, Path]] = []
        try:
            for family, by_key in folded.items():
                archive = path / f"{family}_{ARCHIVE}.db"
                merged = {key: [entry] for key, entry in _read(archive).items()} if archive.exists() else {}
                for key, entries in by_key.items():
                    merged.setdefault(key, []).extend(entries)
                tmp = archive.with_name(archive.name + _TMP_SUFFIX)
                _write(tmp, {key: _MERGES[family](entries) for key, entries in merged.items()})
                swaps.append((tmp, archive))

            # The swap, under the collector's lock. Without it (a collector that does not take the lock)
            # one scrape could count a dead process twice, between the rename and the delete (or not at
            # all, in the other order), and a file deleted between its listing and its reading fails
            # that scrape. Renaming first means a failure between the two steps counts twice rather than
            # loses; neither should happen on a local directory.
            with SCRAPE_LOCK:
                for tmp, archive in swaps:
                    os.replace(tmp, archive)
                for file in to_delete:
                    file.unlink(missing_ok=True)
        finally:
            for tmp, _archive in swaps:
                tmp.unlink(missing_ok=True)  # left only when the pass failed
    return result


def _exact_totals(metrics: Iterable[Metric]) -> None:
    """One sample per series of every counter, histogram and summary, its files' values summed exactly."""
    for metric in metrics:
        if metric.type not in ("counter", "histogram", "summary"):
            continue
        parts: dict[tuple[str, Any], list[float]] = defaultdict(list)
        for sample in metric.samples:
            # Labels are still a tuple here (`_read_metrics`), hashable.
            parts[(sample.name, sample.labels)].append(sample.value)
        metric.samples = [Sample(name, labels, math.fsum(values)) for (name, labels), values in parts.items()]


class LockedMultiProcessCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's multiprocess collector, reading under `SCRAPE_LOCK` and summing exactly.

    Reading is the library's (`_read_metrics`), and so is the merge of processes (`_accumulate_metrics`),
    which it is handed one exactly summed sample per series of the summed types.
    """

    def collect(self) -> Iterable[Metric]:
        with SCRAPE_LOCK:
            files = glob.glob(os.path.join(self._path, "*.db"))
            metrics = self._read_metrics(files)  # type: ignore[no-untyped-call]
        _exact_totals(metrics.values())
        return list(self._accumulate_metrics(metrics, True))  # type: ignore[no-untyped-call]


def install_locked_collector() -> None:
    """Make `multiprocess.MultiProcessCollector` ours, in this process (the worker's main one).

    The framework's `/metrics` handler (livekit/agents/telemetry/http_server.py) builds
    `multiprocess.MultiProcessCollector(registry)` on every request: replacing the module's attribute is
    what makes its scrapes take the lock. A unit test holds the framework to it.
    """
    multiprocess.MultiProcessCollector = LockedMultiProcessCollector  # type: ignore[misc]

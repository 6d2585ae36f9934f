"""A real worker on a real LiveKit server runs many job processes, one session each: its metrics
directory stays the same size, and its counters neither lose nor double-count a session.

Each call is a real dispatch: the framework forks a prewarmed job process, the entrypoint starts the
session in the room, a caller joins until the agent is up, then leaves and the room is deleted, and the
job process exits. The worker's reaper folds the exited processes' files into the archives while a
thread scrapes `/metrics` all along.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from storyteller_api import metric_names
from storyteller_devkit.caller import Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess
from storyteller_worker.telemetry.metrics import NO_REVISION

JOBS = 30
FIRST_CHECK = 5  # sessions after which the directory is measured the first time
IDLE_PROCESSES = 1
# The main process's files (counter, histogram, gauge_livesum, gauge_max, gauge_all) and the archives
# (counter, histogram, gauge_max) stay; each job process alive (idle, or starting) has four.
MAIN_AND_ARCHIVES = 5 + 3
MAX_FILES = MAIN_AND_ARCHIVES + 4 * (IDLE_PROCESSES + 2)
_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_(\d+|archive)\.db$")


def _value(text: str, name: str) -> float:
    """The value of the tenant's sample `name` in a scrape (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == {"tenant": "acme", "revision": NO_REVISION}:
                return float(s.value)
    return 0.0


def _sessions_started(text: str) -> float:
    return _value(text, metric_names.SESSIONS_STARTED)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _exited_pids_files(directory: Path) -> list[str]:
    """Files of processes that no longer run (what the reaper has still to fold)."""
    names = []
    for path in directory.iterdir():
        m = _FILE.match(path.name)
        if m and m.group(1) != "archive" and not _alive(int(m.group(1))):
            names.append(path.name)
    return names


@dataclass
class Scraper:
    """Scrapes `/metrics` in a thread; every counter and histogram sample must only ever go up."""

    worker: WorkerProcess
    scrapes: int = 0
    decreases: list[str] = field(default_factory=list)
    max_started: float = 0.0
    _last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _check(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            if family.type not in ("counter", "histogram"):
                continue
            for s in family.samples:
                if not s.name.endswith(("_total", "_bucket", "_count", "_sum")):
                    continue  # _created: each process's own
                key = (s.name, tuple(sorted(s.labels.items())))
                if s.value < self._last.get(key, 0.0):
                    self.decreases.append(f"{key}: {self._last[key]!r} -> {s.value!r}")
                self._last[key] = s.value
        self.max_started = max(self.max_started, _sessions_started(text))

    def _run(self) -> None:
        while not self._stop.wait(0.05):  # a scrape rate, not a synchronisation
            try:
                text = self.worker.metrics()
            except OSError:
                continue
            self._check(text)
            self.scrapes += 1

    def __enter__(self) -> Scraper:
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)


async def _one_call(lk: api.LiveKitAPI, livekit: LiveKitServer, worker: WorkerProcess) -> None:
    """One session: dispatch, wait until the agent is up in the room, hang up; its process exits."""
    room = f"files-{uuid.uuid4().hex[:8]}"
    await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="acme-storyteller", room=room)
    )
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()
    try:
        # Deleting the room before the session was up once left a job process running for minutes.
        await caller.wait_for("the agent's state", lambda: bool(caller.agent_states), 60)
    finally:
        await caller.leave()
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    await asyncio.to_thread(
        worker.wait_until, lambda: worker.status().get("active_jobs", 0) == 0, "the job to end", 60
    )


def _wait_reaped(worker: WorkerProcess) -> list[str]:
    """Wait until the reaper has folded every exited process's files; the directory's file names."""
    worker.wait_until(
        lambda: not _exited_pids_files(worker.multiproc_dir), "the reaper to fold exited processes", 30
    )
    return sorted(p.name for p in worker.multiproc_dir.iterdir())


@pytest.fixture
def worker(
    livekit_server: LiveKitServer, model_server: ThreadedServer, tmp_path: Path
) -> Iterator[WorkerProcess]:
    config = tenant_dict(
        model_server.base_url,
        livekit_url=livekit_server.url,
        observability={"metricsPort": free_port()},
        pool={"sessionsPerWorker": 2, "idleProcesses": IDLE_PROCESSES},
    )
    started = WorkerProcess(config, livekit_server, tmp_path).start()
    try:
        started.wait_registered()
        yield started
    finally:
        started.stop()


def _figures(worker: WorkerProcess, sessions: int) -> str:
    directory = worker.multiproc_dir
    text = worker.metrics()
    t0 = time.perf_counter()
    for _ in range(10):
        worker.metrics()
    scrape_ms = (time.perf_counter() - t0) / 10 * 1000
    files = list(directory.iterdir())
    disk = sum(f.stat().st_size for f in files)
    return (
        f"after {sessions} sessions: {len(files)} files, {disk} bytes on disk, "
        f"scrape {len(text.encode())} bytes in {scrape_ms:.1f} ms"
    )


async def test_metrics_files_stay_bounded_and_counters_exact_over_many_job_processes(
    livekit_server: LiveKitServer, worker: WorkerProcess
) -> None:
    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        with Scraper(worker) as scraper:
            for _ in range(FIRST_CHECK):
                await _one_call(lk, livekit_server, worker)
            early = await asyncio.to_thread(_wait_reaped, worker)
            print(await asyncio.to_thread(_figures, worker, FIRST_CHECK))
            for _ in range(JOBS - FIRST_CHECK):
                await _one_call(lk, livekit_server, worker)
            late = await asyncio.to_thread(_wait_reaped, worker)
            print(await asyncio.to_thread(_figures, worker, JOBS))

    def kept(names: list[str]) -> list[str]:
        """The main process's files and the archives: what does not come and go with job processes."""
        assert worker.proc is not None
        return [n for n in names if n.endswith(("_archive.db", f"_{worker.proc.pid}.db"))]

    assert len(kept(early)) == MAIN_AND_ARCHIVES, early
    assert kept(late) == kept(early)  # flat: the same files after 5 sessions and after 30
    assert len(late) <= MAX_FILES, late
    # Every session counted once: none lost to a merge, none counted twice during one.
    text = worker.metrics()
    assert _sessions_started(text) == JOBS
    assert _value(text, f"{metric_names.SESSION_DURATION}_count") == JOBS  # a histogram, merged
    assert _value(text, metric_names.SESSIONS_ACTIVE) == 0
    assert scraper.scrapes > JOBS
    assert scraper.max_started <= JOBS
    assert not scraper.decreases, scraper.decreases[:5]
    assert "metrics reaper failed" not in worker.log()

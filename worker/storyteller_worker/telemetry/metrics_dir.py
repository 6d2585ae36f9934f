"""The Prometheus multiprocess directory, prepared before anything imports `prometheus_client`.

Job processes are separate processes, so their counters reach the pod's `/metrics` only through
Prometheus multiprocess mode: every process writes its values to files in one directory and the
worker's endpoint (the SDK's, on `observability.metricsPort`) merges them. `prometheus_client` picks
its value storage when it is imported, so the variable must be set before the framework is imported,
in the worker's main process; job processes inherit it. This module must not import prometheus_client.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import MutableMapping
from pathlib import Path

logger = logging.getLogger("storyteller.worker.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# An emptyDir in the pod; /tmp works on a laptop. Each worker needs its own directory.
DEFAULT_MULTIPROC_DIR = "/tmp/storyteller-metrics"


def prepare_multiprocess_dir(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Set $PROMETHEUS_MULTIPROC_DIR (default when unset), create it and remove stale value files.

    Files left by a previous run of the worker (a restarted container keeps its emptyDir) would be
    merged into this run's counters, so the directory is emptied at start.
    """
    path = Path(environ.setdefault(MULTIPROC_ENV, DEFAULT_MULTIPROC_DIR))
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in path.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink(missing_ok=True)
            removed += 1
    logger.debug("metrics directory ready", extra={"path": str(path), "removed_files": removed})
    return path


# Files of gauges whose merge mode drops dead processes (livesum, liveall, livemax, ...), one per process.
LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
REAP_INTERVAL_S = 5.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reap_dead_processes(path: Path) -> list[int]:
    """Drop the live gauges of job processes that are gone, and return their pids.

    A job process that crashes or is killed mid-session never decrements `storyteller_sessions_active`;
    its file would keep the session counted forever, and the autoscaler (KEDA, or the Prometheus
    session source) would keep a pod for it. prometheus_client's mark_process_dead removes the file.
    """
    from prometheus_client import multiprocess  # only here: this module is imported before the env is set

    dead = sorted(
        {
            int(m.group(1))
            for entry in path.iterdir()
            if (m := LIVE_GAUGE_FILE.match(entry.name)) and int(m.group(1)) != os.getpid()
        }
    )
    dead = [pid for pid in dead if not _alive(pid)]
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    if dead:
        logger.info("dropped the live gauges of exited job processes", extra={"pids": dead})
    return dead


def start_reaper(path: Path, interval_s: float = REAP_INTERVAL_S) -> threading.Event:
    """Reap every `interval_s` in a daemon thread of the worker's main process; set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                reap_dead_processes(path)
            except OSError as err:  # the directory vanished (shutdown): nothing left to reap
                logger.warning("metrics reaper", extra={"error": str(err)})

    threading.Thread(target=loop, name="metrics-reaper", daemon=True).start()
    return stop

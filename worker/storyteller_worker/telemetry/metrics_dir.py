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
    merged into this run's counters, so the directory is emptied at start (archives and a reaper's
    half-written `.tmp` archive included).
    """
    path = Path(environ.setdefault(MULTIPROC_ENV, DEFAULT_MULTIPROC_DIR))
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in path.iterdir():
        if entry.is_file() and entry.suffix in (".db", ".tmp"):
            entry.unlink(missing_ok=True)
            removed += 1
    logger.debug("metrics directory ready", extra={"path": str(path), "removed_files": removed})
    return path


REAP_INTERVAL_S = 5.0


def reap_dead_processes(path: Path) -> list[int]:
    """Fold the metrics files of exited job processes into the archives, and return their pids.

    A job process serves one session and exits: without this the directory would gain a few files per
    session and every scrape would read them all (`metrics_archive` says what happens to each kind).
    A job process that crashes or is killed mid-session never decrements `storyteller_sessions_active`;
    dropping its live gauges stops counting the session, so the autoscaler (KEDA, or the Prometheus
    session source) does not keep a pod for it.
    """
    from . import metrics_archive  # only here: it imports prometheus_client, which needs the env set

    reaped = metrics_archive.reap(path)
    if reaped.live_gauge_pids:
        logger.info("dropped the live gauges of exited job processes", extra={"pids": reaped.live_gauge_pids})
    if reaped.pids:
        logger.debug(
            "merged the metrics files of exited job processes",
            extra={"pids": reaped.pids, "merged_files": reaped.merged, "dropped_files": reaped.dropped},
        )
    return reaped.pids


def start_reaper(path: Path, interval_s: float = REAP_INTERVAL_S) -> threading.Event:
    """Reap every `interval_s` in a daemon thread of the worker's main process; set the event to stop.

    Also makes this process's `/metrics` scrapes take the reaper's lock
    (`metrics_archive.install_locked_collector`), so that no scrape sees a reap half done.
    """
    from . import metrics_archive  # after prepare_multiprocess_dir has set the env

    metrics_archive.install_locked_collector()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                reap_dead_processes(path)
            except OSError as err:  # the directory vanished (shutdown): nothing left to reap
                logger.warning("metrics reaper", extra={"error": str(err)})
            except Exception:  # keep reaping: a dead reaper lets the directory grow again
                logger.exception("metrics reaper failed")

    threading.Thread(target=loop, name="metrics-reaper", daemon=True).start()
    return stop

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

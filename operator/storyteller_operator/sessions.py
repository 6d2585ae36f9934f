"""Where the operator learns how many sessions each worker pod is running.

The source is the workers themselves: every worker serves `GET :8081/worker` (the framework's status,
with `active_jobs`), the same port the kubelet probes, so it works on any cluster with no Prometheus
and no extra RBAC beyond listing pods, and it is current to the second. Prometheus would add a
scrape interval of lag and a dependency; it can be plugged in later as another `SessionSource`.
A pod that does not answer (starting, or gone) counts as unknown, not as zero.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

log = logging.getLogger("storyteller.operator.sessions")

WORKER_STATUS_PORT = 8081
STATUS_TIMEOUT_S = 1.0


class SessionSource(Protocol):
    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Pod name → sessions running on it, for the pods that answered."""
        ...


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_S) as resp:
        return json.loads(resp.read())


class WorkerStatusSource:
    """Asks each running pod's worker (`GET http://<podIP>:8081/worker`) for its active jobs."""

    def __init__(self, fetch: Callable[[str], Any] = _fetch_json, port: int = WORKER_STATUS_PORT) -> None:
        self._fetch = fetch
        self._port = port
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sessions")

    def _one(self, pod: Mapping[str, Any]) -> tuple[str, int | None]:
        name = str(pod["metadata"]["name"])
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("status") or {}).get("phase") != "Running":
            return name, None
        try:
            body = self._fetch(f"http://{ip}:{self._port}/worker")
            return name, int(body.get("active_jobs", 0))
        except (OSError, ValueError, AttributeError) as err:
            log.debug("worker status unavailable", extra={"pod": name, "error": str(err)})
            return name, None

    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        return {name: n for name, n in self._pool.map(self._one, pods) if n is not None}

"""Where the operator learns how many sessions each worker pod is running.

Two sources, chosen with the operator's --sessions-source:

- `workers` (the default): every worker serves `GET :8081/worker` (the framework's status, with
  `active_jobs`), the same port the kubelet probes. It works on any cluster with no Prometheus and no
  extra RBAC beyond listing pods, and it is current to the second.
- `prometheus`: `storyteller_sessions_active` per pod from the Prometheus that scrapes the workers. One
  query per tenant instead of one request per pod, and no operator→pod traffic (for clusters whose
  NetworkPolicies forbid it), at the cost of a scrape interval of lag and a dependency.

A pod with no answer (starting, gone, not scraped yet) counts as unknown, not as zero.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from storyteller_api import contract, metric_names

log = logging.getLogger("storyteller.operator.sessions")

WORKER_STATUS_PORT = contract.HEALTH_PORT  # the framework's status page shares the health port
STATUS_TIMEOUT_S = 1.0


class SessionSource(Protocol):
    where: str  # where the counts come from, for messages ("GET :8081/worker")
    settle_seconds: float  # how long a pod is Ready before its silence means something

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
        self.where = f"GET :{port}/worker"
        self.settle_seconds = 0.0  # Ready means the worker's HTTP server answered the kubelet
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


POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # what a pod name can be (safe inside a regex)


class PrometheusSessionSource:
    """`sum by (pod) (storyteller_sessions_active{namespace=..., pod=~...})` from Prometheus."""

    def __init__(
        self, url: str, fetch: Callable[[str], Any] = _fetch_json, settle_seconds: float = 60.0
    ) -> None:
        self._url = url.rstrip("/")
        self._fetch = fetch
        self.where = f"{metric_names.SESSIONS_ACTIVE} in Prometheus"
        self.settle_seconds = settle_seconds  # a new pod has no series before its first scrapes

    def query(self, pods: Sequence[Mapping[str, Any]]) -> str | None:
        """The PromQL asked for `pods` (one namespace: a tenant's), or None when there is nothing to ask."""
        names = sorted(str(p["metadata"]["name"]) for p in pods if POD_NAME.match(str(p["metadata"]["name"])))
        if not names:
            return None
        namespace = pods[0]["metadata"]["namespace"]
        return (
            f"sum by (pod) ({metric_names.SESSIONS_ACTIVE}"
            f'{{namespace="{namespace}", pod=~"{"|".join(names)}"}})'
        )

    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        expr = self.query(pods)
        if expr is None:
            return {}
        try:
            body = self._fetch(f"{self._url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
            result = body["data"]["result"]
            return {str(r["metric"]["pod"]): int(float(r["value"][1])) for r in result}
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("prometheus sessions query failed", extra={"error": str(err)[:300]})
            return {}

"""Where the operator learns how many sessions each worker pod is running.

Two sources, chosen with the operator's --sessions-source:

- `workers` (the default): every worker serves `GET :8081/worker` (the framework's status, with
  `active_jobs`), the same port the kubelet probes. It works on any cluster with no Prometheus and no
  extra RBAC beyond listing pods, and it is current to the second.
- `prometheus`: `storyteller_sessions_active` per pod from the Prometheus that scrapes the workers. One
  query per tenant instead of one request per pod, and no operator→pod traffic (for clusters whose
  NetworkPolicies forbid it), at the cost of a scrape interval of lag and a dependency.

A pod with no answer (starting, gone, not scraped yet) counts as unknown, not as zero.

Pods and Prometheus are other people's servers: nothing they do may stall the reconcile that asks, or any
other tenant's. Every request has a total deadline (connect, headers and body together: a server that
drips one byte a second beats any per-read socket timeout) and a cap on the bytes read; one tenant's pods
are asked concurrently, at most `concurrency` at a time, under a deadline for the whole tenant; an answer
that is late, too big or not a count leaves its pod out of the result (the planner then reports
WorkersNotReporting and holds the pool), and `active_sessions` never raises. The requests run on one
shared asyncio loop, because only there can a deadline cancel a read that is in progress.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import math
import re
import threading
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import aiohttp  # kopf's own HTTP client: no new dependency

from storyteller_api import contract, metric_names

log = logging.getLogger("storyteller.operator.sessions")

WORKER_STATUS_PORT = contract.HEALTH_PORT  # the framework's status page shares the health port
POD_DEADLINE_S = 1.0  # one pod's whole answer; the framework answers in milliseconds
TENANT_DEADLINE_S = 2.0  # all of one tenant's pods; well inside the recheck interval (5 s by default)
TENANT_CONCURRENCY = 16  # requests in flight for one tenant
STATUS_MAX_BYTES = 64 * 1024  # the framework's answer is ~120 bytes
PROMETHEUS_DEADLINE_S = 2.0
PROMETHEUS_MAX_BYTES = 1024 * 1024  # maxReplicas (1000) pods' series are ~100 KB
_BACKSTOP_S = 1.0  # a caller waits this much past the coroutine's own deadline, in case the loop is stuck

T = TypeVar("T")


class SessionSource(Protocol):
    where: str  # where the counts come from, for messages ("GET :8081/worker")
    settle_seconds: float  # how long a pod is Ready before its silence means something

    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Pod name → sessions running on it, for the pods that answered."""
        ...


class Unusable(Exception):
    """An answer that is no count: not 200, too big, or a body that does not say."""


# ------------------------------------------------------------------------------------------ the I/O loop

_loop_guard = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _io_loop() -> asyncio.AbstractEventLoop:
    """The loop all session requests run on (started on first use, on a daemon thread)."""
    global _loop
    with _loop_guard:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="sessions-io", daemon=True).start()
            _loop = loop
        return _loop


def run_io(coro: Coroutine[Any, Any, T], wait_s: float) -> T:
    """Run `coro` on the I/O loop from a reconcile's thread. The coroutine keeps its own deadline; `wait_s`
    is the backstop should the loop itself be stuck."""
    future = asyncio.run_coroutine_threadsafe(coro, _io_loop())
    try:
        return future.result(wait_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"no result within {wait_s:g} s") from None


_shared: aiohttp.ClientSession | None = None


def shared_session() -> aiohttp.ClientSession:
    """The one client session of the I/O loop (call on it): a session per request would cost a third of a
    request's CPU, times every pod of every tenant on every recheck.

    No connection limit: each caller bounds its own concurrency, and a shared limit would let one tenant's
    slow pods queue another's requests. No keep-alive: each pod is asked once per reconcile, and a
    cancelled request then closes its own connection. No decompression (a small gzip body can inflate past
    the cap), no proxy from the environment.
    """
    global _shared
    if _shared is None or _shared.closed:
        if _shared is None:
            atexit.register(close)
        _shared = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            auto_decompress=False,
            trust_env=False,
        )
    return _shared


def close() -> None:
    """Close the shared session, if there is one (at exit: aiohttp warns of one left open)."""
    if _shared is not None and not _shared.closed:
        with contextlib.suppress(Exception):  # a stuck loop at exit: nothing more to tidy
            run_io(_shared.close(), 5.0)


async def get_bytes(session: aiohttp.ClientSession, url: str, max_bytes: int) -> bytes:
    """The body of `GET url`: 200 only, no redirects, at most `max_bytes` (Unusable beyond). The caller
    sets the deadline."""
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    async with session.get(url, headers=headers, allow_redirects=False) as resp:
        if resp.status != 200:
            raise Unusable(f"HTTP {resp.status}")
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise Unusable(f"{resp.content_length} bytes announced, more than {max_bytes}")
        body = bytearray()
        # Reads at most one byte past the cap, whatever the server announced or not.
        while chunk := await resp.content.read(max_bytes + 1 - len(body)):
            body += chunk
            if len(body) > max_bytes:
                raise Unusable(f"more than {max_bytes} bytes")
        return bytes(body)


def parse_json(raw: bytes) -> Any:
    """The JSON in `raw`; Unusable when it is none (RecursionError: a body of nested brackets)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise Unusable(f"not JSON: {type(err).__name__}") from None


# ------------------------------------------------------------------------------------------- workers


def worker_sessions(body: Any) -> int | None:
    """Sessions in a framework's `GET /worker` answer, None when `body` does not say.

    The answer is livekit.protocol's WorkerInfo printed as proto3 JSON: `active_jobs` is a float field
    (3 sessions print as 3.0) and a zero is left out altogether. A missing key is 0 only in an answer that
    is the framework's (`sdk_version` is always filled): another server's `{}` must not pass for an idle
    pod, which the ReplicaSet would then remove first. A number in a string is one too in proto3 JSON
    (and how an int64 field would print).
    """
    if not isinstance(body, dict):
        return None
    if "active_jobs" not in body:
        return 0 if isinstance(body.get("sdk_version"), str) else None
    jobs = body["active_jobs"]
    if isinstance(jobs, str):
        try:
            jobs = float(jobs)
        except ValueError:
            return None
    if isinstance(jobs, bool) or not isinstance(jobs, int | float):
        return None  # null, a list, an object
    if isinstance(jobs, float) and not math.isfinite(jobs):
        return None
    return int(jobs) if jobs >= 0 else None


class WorkerStatusSource:
    """Asks each running pod's worker (`GET http://<podIP>:8081/worker`) for its active jobs.

    `fetch` (url → parsed JSON, blocking) replaces the HTTP client, for tests of the request side; it runs
    in a thread under the same deadlines.
    """

    def __init__(
        self,
        fetch: Callable[[str], Any] | None = None,
        port: int = WORKER_STATUS_PORT,
        *,
        pod_deadline_s: float = POD_DEADLINE_S,
        tenant_deadline_s: float = TENANT_DEADLINE_S,
        concurrency: int = TENANT_CONCURRENCY,
        max_bytes: int = STATUS_MAX_BYTES,
    ) -> None:
        self._fetch = fetch
        self._port = port
        self._pod_deadline_s = pod_deadline_s
        self._tenant_deadline_s = tenant_deadline_s
        self._concurrency = concurrency
        self._max_bytes = max_bytes
        self.where = f"GET :{port}/worker"
        self.settle_seconds = 0.0  # Ready means the worker's HTTP server answered the kubelet

    def _url(self, pod: Mapping[str, Any]) -> str | None:
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running":
            return None
        host = f"[{ip}]" if ":" in str(ip) else ip  # an IPv6 pod
        return f"http://{host}:{self._port}/worker"

    async def _ask(
        self, session: aiohttp.ClientSession, limit: asyncio.Semaphore, namespace: str, name: str, url: str
    ) -> int | None:
        async with limit:
            try:
                async with asyncio.timeout(self._pod_deadline_s):
                    if self._fetch is not None:
                        body = await asyncio.to_thread(self._fetch, url)
                    else:
                        body = parse_json(await get_bytes(session, url, self._max_bytes))
                count = worker_sessions(body)
                if count is None:
                    raise Unusable("no active_jobs count in the answer")
                return count
            # Whatever a pod's answer does (refuse, time out, break the HTTP parser, say nonsense), it only
            # costs that pod's count.
            except Exception as err:
                log.debug(
                    "worker status unavailable",
                    extra={
                        "namespace": namespace,
                        "pod": name,
                        "error": f"{type(err).__name__}: {err}"[:300],
                    },
                )
                return None

    async def _ask_all(self, namespace: str, targets: list[tuple[str, str]]) -> dict[str, int]:
        limit = asyncio.Semaphore(self._concurrency)
        session = shared_session()
        tasks = {
            asyncio.create_task(self._ask(session, limit, namespace, name, url)): name
            for name, url in targets
        }
        done, late = await asyncio.wait(tasks, timeout=self._tenant_deadline_s)
        for task in late:
            task.cancel()
        # Cancelled requests close their connections before this returns.
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.debug(
                "worker status: tenant deadline passed",
                extra={
                    "namespace": namespace,
                    "pods": sorted(tasks[t] for t in late),
                    "deadline_s": self._tenant_deadline_s,
                },
            )
        return {tasks[t]: n for t in done if (n := t.result()) is not None}

    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        targets = [(str(p["metadata"]["name"]), url) for p in pods if (url := self._url(p))]
        if not targets:
            return {}
        namespace = str(pods[0]["metadata"].get("namespace", ""))  # one tenant's pods: one namespace
        try:
            return run_io(self._ask_all(namespace, targets), self._tenant_deadline_s + _BACKSTOP_S)
        # A failure here must not fail the reconcile: with no counts the planner holds the pool.
        except Exception as err:
            log.warning(
                "worker status failed",
                extra={
                    "namespace": namespace,
                    "error": f"{type(err).__name__}: {err}"[:300],
                },
                exc_info=True,
            )
            return {}


# ---------------------------------------------------------------------------------------- prometheus

POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # what a pod name can be (safe inside a regex)


def prometheus_sessions(body: Any) -> dict[str, int]:
    """Pod → sessions in an instant query's answer; a series that does not say is left out (its pod is
    unknown), an answer of the wrong shape raises Unusable."""
    try:
        result = body["data"]["result"]
    except (KeyError, TypeError, IndexError):
        raise Unusable("no data.result in the answer") from None
    if not isinstance(result, list):
        raise Unusable("data.result is not a list")
    out: dict[str, int] = {}
    for series in result:
        try:
            pod, value = series["metric"]["pod"], float(series["value"][1])
        except (KeyError, TypeError, IndexError, ValueError):
            continue
        if isinstance(pod, str) and math.isfinite(value) and value >= 0:
            out[pod] = int(value)
    return out


class PrometheusSessionSource:
    """`sum by (pod) (storyteller_sessions_active{namespace=..., pod=~...})` from Prometheus."""

    def __init__(
        self,
        url: str,
        fetch: Callable[[str], Any] | None = None,
        settle_seconds: float = 60.0,
        *,
        deadline_s: float = PROMETHEUS_DEADLINE_S,
        max_bytes: int = PROMETHEUS_MAX_BYTES,
    ) -> None:
        self._url = url.rstrip("/")
        self._fetch = fetch
        self._deadline_s = deadline_s
        self._max_bytes = max_bytes
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

    async def _get_json(self, url: str) -> Any:
        async with asyncio.timeout(self._deadline_s):
            if self._fetch is not None:
                return await asyncio.to_thread(self._fetch, url)
            return parse_json(await get_bytes(shared_session(), url, self._max_bytes))

    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        expr = self.query(pods)
        if expr is None:
            return {}
        url = f"{self._url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            return prometheus_sessions(run_io(self._get_json(url), self._deadline_s + _BACKSTOP_S))
        # Prometheus down, slow, or saying nonsense: every pod unknown, which holds the pool.
        except Exception as err:
            log.warning(
                "prometheus sessions query failed",
                extra={
                    "namespace": pods[0]["metadata"].get("namespace"),
                    "error": f"{type(err).__name__}: {err}"[:300],
                },
            )
            return {}

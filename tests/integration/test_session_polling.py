"""Session polling that cannot hurt other tenants, against real HTTP servers on loopback: pods that answer
`/worker` late, drip by the byte, say null or garbage or 50 MB cost their own count and nothing else, and
another tenant's scale-up still comes within one recheck interval.

Each stand-in pod listens on its own 127.0.0.x address, all on one port (the source asks every pod on the
same port, as it asks :8081 in a cluster). Time bounds are deadlines far from what waiting would cost: the
slow pod answers after 10 s, the dripping ones after minutes.
"""

from __future__ import annotations

import copy
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from storyteller_api import contract
from storyteller_operator import render
from storyteller_operator import status as st
from storyteller_operator.handlers import Options, recheck_loop
from storyteller_operator.reconcile import Reconciler
from storyteller_operator.sessions import (
    POD_DEADLINE_S,
    TENANT_DEADLINE_S,
    PrometheusSessionSource,
    WorkerStatusSource,
)
from tests.fakes.worker_status import worker_info
from tests.unit.test_operator_reconcile import Events, FakeKube, secret
from tests.unit.test_operator_render import tenant

MB = 1024 * 1024
SLOW_S = 10.0  # what the slow pod makes a caller wait
# Well past the source's own deadlines (a pod's, then a whole tenant's), well short of SLOW_S.
WITHIN = TENANT_DEADLINE_S + 3.0
assert WITHIN < SLOW_S


def wait_for(cond: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------- stand-in servers

Behaviour = Callable[["Handler", "Server"], None]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        srv = self.server
        with srv.guard:
            srv.requests += 1
            srv.tracker.enter()
        try:
            srv.behaviour(self, srv)
        except OSError:  # the client hung up (what it must do to a slow or huge answer)
            srv.hung_up = True
        finally:
            srv.tracker.leave()
            srv.finished.set()

    def head(self, length: int | None, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def answer(self, body: Any, status: int = 200) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.head(len(raw), status)
        self.wfile.write(raw)

    def log_message(self, *_: Any) -> None:
        return None


class Tracker:
    """Requests in flight across a group of servers, and the most seen at once."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.now = self.most = 0

    def enter(self) -> None:
        with self.guard:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.guard:
            self.now -= 1


class Server(ThreadingHTTPServer):
    def __init__(
        self, ip: str, port: int, behaviour: Behaviour, stop: threading.Event, tracker: Tracker | None = None
    ) -> None:
        super().__init__((ip, port), Handler)
        self.behaviour = behaviour
        self.stop = stop  # set at teardown: slow answers end then
        self.tracker = tracker or Tracker()
        self.guard = threading.Lock()
        self.requests = 0
        self.sent = 0  # bytes of body written
        self.hung_up = False
        self.finished = threading.Event()  # a request has been handled to its end
        self.active_jobs = 0
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def valid(h: Handler, srv: Server) -> None:
    h.answer(worker_info(srv.active_jobs))


def slow(h: Handler, srv: Server) -> None:
    """A valid answer after SLOW_S, unless the client hangs up first (the connection reads EOF)."""
    deadline = time.monotonic() + SLOW_S
    while time.monotonic() < deadline and not srv.stop.is_set():
        readable, _, _ = select.select([h.connection], [], [], 0.05)
        if readable and h.connection.recv(1, socket.MSG_PEEK) == b"":
            srv.hung_up = True
            return
    h.answer(worker_info(1))


def drip(raw: bytes, h: Handler, srv: Server) -> None:
    for i in range(len(raw)):
        h.wfile.write(raw[i : i + 1])
        srv.sent += 1
        if srv.stop.wait(1.0):
            return


def trickle(h: Handler, srv: Server) -> None:
    """Headers at once, then a valid body at one byte a second (a per-read timeout never fires)."""
    raw = json.dumps({**worker_info(2), "pad": " " * 200}).encode()
    h.head(len(raw))
    drip(raw, h, srv)


def trickle_head(h: Handler, srv: Server) -> None:
    """Even the status line at one byte a second."""
    raw = json.dumps(worker_info(2)).encode()
    drip(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw, h, srv)


def huge(announced: bool) -> Behaviour:
    """50 MB of a body that would count, were it read to the end."""

    def behaviour(h: Handler, srv: Server) -> None:
        head = json.dumps(worker_info(7))[:-1].encode() + b', "pad": "'
        size = 50 * MB
        h.head(size if announced else None)
        h.wfile.write(head)
        srv.sent = len(head)
        chunk = b"x" * (64 * 1024)
        while srv.sent < size - 2 and not srv.stop.is_set():
            n = min(len(chunk), size - 2 - srv.sent)
            h.wfile.write(chunk[:n])
            srv.sent += n
        h.wfile.write(b'"}')
        srv.sent += 2

    return behaviour


BEHAVIOURS: dict[str, Behaviour] = {
    "slow": slow,
    "trickle": trickle,
    "trickle-head": trickle_head,
    "null": lambda h, _: h.answer({**worker_info(0), "active_jobs": None}),
    "string": lambda h, _: h.answer({**worker_info(0), "active_jobs": "three"}),
    "garbage": lambda h, _: h.answer(b"\x00\xff<html>not json{{{"),
    "nested": lambda h, _: h.answer(b"[" * 60_000),
    "not-the-framework": lambda h, _: h.answer({}),
    "error": lambda h, _: h.answer(worker_info(1), status=500),
    "huge": huge(announced=True),
    "huge-unannounced": huge(announced=False),
}
BAD = sorted(BEHAVIOURS)


class Pods:
    """Stand-in pods on 127.0.0.x, one port for all; `add` returns the pod object the source is given."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.servers: dict[str, Server] = {}
        self.next_ip = 10
        self.port = 0

    def ip(self) -> str:
        self.next_ip += 1
        return f"127.0.0.{self.next_ip}"

    def add(
        self,
        name: str,
        behaviour: Behaviour | None,
        tracker: Tracker | None = None,
        tenant_name: str = "acme",
        namespace: str = "team-a",
    ) -> dict[str, Any]:
        ip = self.ip()
        if behaviour is not None:  # None: nobody listens (connection refused)
            srv = Server(ip, self.port, behaviour, self.stop, tracker)
            self.port = srv.port  # the first picks a free port, the others share it
            self.servers[name] = srv
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": render.selector_labels(tenant_name)},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }

    def close(self) -> None:
        self.stop.set()
        for srv in self.servers.values():
            srv.shutdown()
            srv.server_close()


@pytest.fixture
def pods() -> Iterator[Pods]:
    p = Pods()
    yield p
    p.close()


def timed(
    source: WorkerStatusSource | PrometheusSessionSource, asked: list[dict[str, Any]]
) -> tuple[Any, float]:
    started = time.monotonic()
    result = source.active_sessions(asked)
    return result, time.monotonic() - started


# ------------------------------------------------------------------------------------- the source alone


def test_the_frameworks_answers_are_counted_with_and_without_active_jobs(pods: Pods) -> None:
    busy = pods.add("busy", valid)
    pods.servers["busy"].active_jobs = 3
    idle = pods.add("idle", valid)
    pending = {**pods.add("pending", valid), "status": {"phase": "Pending", "podIP": "127.0.0.99"}}
    no_ip = {**pods.add("no-ip", valid), "status": {"phase": "Running"}}
    source = WorkerStatusSource(port=pods.port)
    assert source.where == f"GET :{pods.port}/worker"
    assert source.active_sessions([busy, idle, pending, no_ip]) == {"busy": 3, "idle": 0}
    assert pods.servers["pending"].requests == 0 and pods.servers["no-ip"].requests == 0


@pytest.mark.parametrize("kind", BAD)
def test_a_pod_that_answers_badly_is_left_out_within_the_deadline(pods: Pods, kind: str) -> None:
    good = pods.add("good", valid)
    pods.servers["good"].active_jobs = 1
    bad = pods.add(kind, BEHAVIOURS[kind])
    result, took = timed(WorkerStatusSource(port=pods.port), [bad, good])
    assert result == {"good": 1}
    assert took < POD_DEADLINE_S + 2.0, f"{took:.1f} s"
    assert pods.servers[kind].requests == 1


def test_the_huge_answers_are_cut_off_not_read_to_the_end(pods: Pods) -> None:
    asked = [pods.add(kind, BEHAVIOURS[kind]) for kind in ("huge", "huge-unannounced")]
    assert WorkerStatusSource(port=pods.port).active_sessions(asked) == {}
    for kind in ("huge", "huge-unannounced"):
        srv = pods.servers[kind]
        wait_for(srv.finished.is_set, f"the {kind} server to notice the hang-up", 10)
        assert srv.hung_up and srv.sent < 50 * MB


def test_a_tenant_with_every_kind_of_bad_pod_still_answers_for_its_good_ones_within_the_deadline(
    pods: Pods,
) -> None:
    asked = [pods.add(kind, BEHAVIOURS[kind]) for kind in BAD]
    asked.append(pods.add("refused", None))
    asked.append(pods.add("busy", valid))
    pods.servers["busy"].active_jobs = 4
    asked.append(pods.add("idle", valid))
    result, took = timed(WorkerStatusSource(port=pods.port), asked)
    assert result == {"busy": 4, "idle": 0}
    assert took < WITHIN, f"{took:.1f} s"


def test_a_tenants_pods_are_asked_a_few_at_a_time_under_one_deadline(pods: Pods) -> None:
    slow_ones = Tracker()
    asked = [pods.add(f"slow-{i}", slow, slow_ones) for i in range(8)]
    asked.append(pods.add("last", valid))
    source = WorkerStatusSource(port=pods.port, concurrency=2, pod_deadline_s=1.0, tenant_deadline_s=2.0)
    result, took = timed(source, asked)
    # Two at a time, a second each: the tenant's two seconds are up before the last pod's turn.
    assert result == {}
    assert took < WITHIN, f"{took:.1f} s"
    assert slow_ones.most == 2  # connections held open at once (a slow pod notices a hang-up)
    assert pods.servers["last"].requests == 0


# ----------------------------------------------------------------------------------------- prometheus


PROMETHEUS_ANSWER = {
    "status": "success",
    "data": {"result": [{"metric": {"pod": "w-1"}, "value": [0, "2"]}]},
}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("valid", {"w-1": 2}),
        ("slow", {}),
        ("trickle", {}),
        ("huge", {}),
        ("huge-unannounced", {}),
        ("garbage", {}),
        ("nested", {}),
        ("null", {}),
    ],
)
def test_prometheus_answers_within_its_deadline(pods: Pods, kind: str, expected: dict[str, int]) -> None:
    behaviour = (lambda h, _: h.answer(PROMETHEUS_ANSWER)) if kind == "valid" else BEHAVIOURS[kind]
    ip = pods.add("prometheus", behaviour)["status"]["podIP"]
    source = PrometheusSessionSource(f"http://{ip}:{pods.port}/")
    asked = [{"metadata": {"name": "w-1", "namespace": "team-a"}, "status": {}}]
    result, took = timed(source, asked)
    assert result == expected
    assert took < WITHIN, f"{took:.1f} s"
    assert pods.servers["prometheus"].requests == 1


# ------------------------------------------------------------------ two tenants through the recheck loop


def locked(name: str) -> Any:
    """FakeKube's method `name`, under the instance's lock."""
    base = getattr(FakeKube, name)

    def method(self: LockedKube, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return base(self, *args, **kwargs)

    return method


class LockedKube(FakeKube):
    """The unit tests' fake API server, shared by reconciles running on the recheck loop's threads."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    add = locked("add")
    get = locked("get")
    metadata = locked("metadata")
    apply = locked("apply")
    patch_status = locked("patch_status")
    has_api = locked("has_api")
    list = locked("list")
    annotate = locked("annotate")
    scale = locked("scale")
    delete = locked("delete")
    roll_out = locked("roll_out")

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(kind, namespace, name)])

    def read_write(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The stored object itself (only while no reconcile runs)."""
        return self.objects[(kind, namespace, name)]


def test_a_tenant_with_misbehaving_pods_does_not_delay_another_tenants_scale_up(pods: Pods) -> None:
    kube = LockedKube()
    for name, namespace, uid in (("slow", "team-a", "uid-a"), ("busy", "team-b", "uid-b")):
        obj = tenant(None, name=name, namespace=namespace)
        obj["metadata"]["uid"] = uid
        kube.add(obj)
        kube.add(secret("lk-creds", namespace))
    # Tenant A: one pod that counts, and one of each kind that must not hold anybody up.
    a_pods = [pods.add("slow-good", valid, tenant_name="slow")]
    pods.servers["slow-good"].active_jobs = 3
    for kind in ("slow", "trickle", "null", "garbage", "huge"):
        a_pods.append(pods.add(f"slow-{kind}", BEHAVIOURS[kind], tenant_name="slow"))
    b_pod = pods.add("busy-0", valid, tenant_name="busy", namespace="team-b")
    b_worker = pods.servers["busy-0"]
    rec = Reconciler(kube, Events(), detect_pod_monitor=False, sessions=WorkerStatusSource(port=pods.port))
    for namespace, name in (("team-a", "slow"), ("team-b", "busy")):
        rec.trigger(namespace, name, force_apply=True)
    # A's pool had grown to its six pods: silent workers must hold it there.
    kube.read_write("Deployment", "team-a", render.worker_name("slow"))["spec"]["replicas"] = 6
    for namespace, name in (("team-a", "slow"), ("team-b", "busy")):
        kube.roll_out(namespace, name)
    for pod in [*a_pods, b_pod]:
        kube.add(pod)

    def replicas(namespace: str, name: str) -> int:
        return int(kube.read("Deployment", namespace, render.worker_name(name))["spec"]["replicas"])

    def b_replicas() -> int:
        return replicas("team-b", "busy")

    assert b_replicas() == 1  # nothing running: one worker for the two spare slots
    interval = 2.0
    stop = threading.Event()
    loop = threading.Thread(
        target=recheck_loop,
        args=(rec, Options(recheck_seconds=interval, resync_seconds=300.0, workers=8), stop),
        daemon=True,
    )
    loop.start()
    try:
        slow_pod = pods.servers["slow-slow"]
        wait_for(lambda: slow_pod.requests >= 1, "the recheck loop to ask tenant A's slow pod", 2 * interval)
        # A load step on B while A's reconcile waits on its pods: 10 sessions + 2 spare need 3 workers.
        b_worker.active_jobs = 10
        wait_for(lambda: b_replicas() >= 3, "tenant B's scale-up", interval + 1.0)

        # A goes on being reconciled: its good pod counted, the others reported, its pool held.
        def a_reported() -> bool:
            status = kube.read(contract.KIND, "team-a", "slow").get("status") or {}
            cond = st.condition(status, "ScalingLimited") or {}
            return cond.get("reason") == "WorkersNotReporting" and status.get("activeSessions") == 3

        wait_for(a_reported, "tenant A's status to say 5 workers did not report", 3 * interval)
        status = kube.read(contract.KIND, "team-a", "slow")["status"]
        message = (st.condition(status, "ScalingLimited") or {})["message"]
        assert message.startswith("5 of 6 ready workers did not report their sessions")
        assert message.endswith("the pool is held at 6 workers until they do")
        assert replicas("team-a", "slow") == 6
    finally:
        stop.set()
        loop.join(interval + 5)
    assert not loop.is_alive()

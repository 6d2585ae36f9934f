"""Leader election (leadership.py) on a fake clock and a fake Lease: the elector's rules, replicas simulated
together (never two writers; a dead leader replaced within the bound; a stalled API server or a burst of
429s costs no leadership; a lost leader stops writing and may lead again), the write fence, the gate in
front of the reconciler, and the builtin autoscaler's history across a handover. No threads are timed,
nothing sleeps."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import heapq
import itertools
import json
import logging
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pytest
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient, ApiException
from prometheus_client import REGISTRY

from storyteller_operator import kube as kube_mod
from storyteller_operator import leadership
from storyteller_operator import reconcile as reconcile_mod
from storyteller_operator.leadership import (
    FAST_RETRY_S,
    LAST_TRY_S,
    LEASE_DURATION_S,
    RELEASED_DURATION_S,
    RENEW_DEADLINE_S,
    REQUEST_TIMEOUT_S,
    RETRY_PERIOD_S,
    Elector,
    LeaderElection,
    LeaderGate,
    LeaseConflict,
    LeaseLock,
    LeaseRecord,
    LeaseUnavailable,
)
from storyteller_operator.runner import Key
from tests.unit.test_operator_reconcile import FakeKube
from tests.unit.test_operator_render import tenant
from tests.unit.test_operator_scaling import Sessions, builtin_pool, cluster_with

WALL = "2026-01-01T00:00:00.000000Z"
# A dead leader's successor reconciles within this, the tenants' own reconcile aside: client-go's lease
# (15 s), the poll that saw the last renewal late, one request.
TAKEOVER_BOUND_S = 20.0
# How long before another replica can take the Lease a cut-off leader has stopped writing (the fence).
FENCE_MARGIN_S = LEASE_DURATION_S - RENEW_DEADLINE_S
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseServer:
    """The API server's one Lease: conditional replaces on resourceVersion, like the real one. While
    `stalled_until` is ahead (the process paused), requests wait for it."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.stalled_until = 0.0

    def store(self, record: LeaseRecord) -> LeaseRecord:
        current = self.record
        if record.resource_version == "":
            if current is not None:
                raise LeaseConflict("exists")
        elif current is None or current.resource_version != record.resource_version:
            raise LeaseConflict("changed")
        self.version += 1
        self.record = dataclasses.replace(record, resource_version=str(self.version))
        return self.record


class Killed(BaseException):
    """Unwinds a killed replica's thread at its next turn."""


class Sim:
    """Virtual time for the replicas' election threads. They take turns, one at a time, each running until
    it waits (a request under way, the pause between steps), and the earliest due goes next: deterministic,
    and one replica's hung request holds nobody else up. After every turn at most one replica may write.
    The test's own thread (a resign, say) takes its time at once."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.server = LeaseServer()
        self.replicas: list[Replica] = []
        self.failure: BaseException | None = None  # raised in a replica's thread: re-raised by run()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._yielded = threading.Semaphore(0)
        self._threads: dict[threading.Thread, Replica] = {}

    def __enter__(self) -> Sim:
        return self

    def __exit__(self, *_: object) -> None:
        """End every replica's thread: each is killed at its next turn, which comes at once."""
        for r in self.replicas:
            r.alive = False
        while self._due:
            heapq.heappop(self._due)[2]()
        for thread in self._threads:
            thread.join(10)

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._due, (when, next(self._order), action))

    def spawn(self, replica: Replica, delay: float) -> None:
        go = threading.Semaphore(0)
        thread = threading.Thread(target=self._life, args=(replica, go), daemon=True)
        self._threads[thread] = replica
        self.replicas.append(replica)
        thread.start()
        self.at(self.clock() + delay, functools.partial(self._turn, go))

    def _life(self, replica: Replica, go: threading.Semaphore) -> None:
        go.acquire()
        try:
            while replica.alive:
                replica.step()
                self.sleep(replica.election.next_wait())
        except Killed:
            pass
        except BaseException as err:
            self.failure = err
        finally:
            self._yielded.release()

    def _turn(self, go: threading.Semaphore) -> None:
        go.release()
        self._yielded.acquire()

    def sleep(self, seconds: float) -> None:
        replica = self._threads.get(threading.current_thread())
        if replica is None:
            self.clock.now += seconds
            return
        go = threading.Semaphore(0)
        self.at(self.clock() + seconds, functools.partial(self._turn, go))
        self._yielded.release()
        go.acquire()
        if not replica.alive:
            raise Killed

    def run(self, until: float) -> None:
        while self._due and self._due[0][0] <= until:
            when, _, action = heapq.heappop(self._due)
            self.clock.now = max(self.clock.now, when)
            action()
            if self.failure is not None:
                raise self.failure
            writers = [r.name for r in self.replicas if r.writer]
            assert len(writers) <= 1, f"two writers at {self.clock() - 1000:.2f} s: {writers}"
        self.clock.now = max(self.clock.now, until)


class FakeLock:
    """One replica's way to the server. A request is served after what is left of a stall plus `latency`;
    its answer comes back if that is within its timeout, else it fails after the timeout (a write landing
    all the same, when served). `down` (a partition): every call hangs for its whole timeout and fails.
    `refusals`: the next calls are refused at once (429), each with its Retry-After (None: none sent).
    `lose_next_answer`: the next write lands but its answer is lost. `overrun`: the next answer comes that
    long after the timeout, and is taken (a client that overran it). Every call's start and timeout is kept
    in `calls`."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.server = sim.server
        self.latency = 0.0
        self.down = False
        self.refusals: list[float | None] = []
        self.lose_next_answer = False
        self.overrun = 0.0
        self.calls: list[tuple[float, float]] = []

    def _call(self, timeout: float, serve: Callable[[], T]) -> T:
        assert timeout > 0, "a request without a timeout"
        sim, now = self.sim, self.sim.clock()
        self.calls.append((now, timeout))
        if self.refusals:
            after = self.refusals.pop(0)
            raise LeaseUnavailable("429 Too Many Requests", FAST_RETRY_S if after is None else after)
        if self.down:
            sim.sleep(timeout)
            raise LeaseUnavailable("partitioned")
        took = max(self.server.stalled_until - now, 0.0) + self.latency
        if self.overrun:
            took, self.overrun = timeout + self.overrun, 0.0
        elif took >= timeout:
            sim.at(now + took, functools.partial(self._served_late, serve))
            sim.sleep(timeout)
            raise LeaseUnavailable("timed out")
        sim.sleep(took)
        return serve()

    @staticmethod
    def _served_late(serve: Callable[[], object]) -> None:
        with contextlib.suppress(LeaseConflict):  # nobody is there to hear it
            serve()

    def get(self, timeout: float) -> LeaseRecord | None:
        return self._call(timeout, lambda: self.server.record)

    def write(self, record: LeaseRecord, timeout: float) -> LeaseRecord:
        stored = self._call(timeout, lambda: self.server.store(record))
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise LeaseUnavailable("timed out")
        return stored


class Replica:
    """One operator process: its election on a thread of the sim. What it may write is what its fence lets
    through; `started` and `lost` are its spells of leading as its gate saw them. Taking the Lease, it
    checks that every other process's fence closed long enough before."""

    def __init__(self, name: str, sim: Sim, delay: float = 0.0) -> None:
        self.name = name
        self.sim = sim
        self.clock = sim.clock
        self.lock = FakeLock(sim)
        self.started: list[tuple[float, str]] = []
        self.lost: list[float] = []
        self.alive = True
        self.fence_closes = 0.0  # the latest its fence has been open until, as of its last step
        self._spell: tuple[bool, int] = (False, 0)
        self.election = LeaderElection(
            self.lock, name, on_started=self._started, clock=sim.clock, wall=lambda: WALL
        )
        sim.spawn(self, delay)

    def _started(self, how: str) -> None:
        now = self.clock()
        self.started.append((now, how))
        for other in self.sim.replicas:
            if other.alive and other.name != self.name:
                assert other.fence_closes + FENCE_MARGIN_S <= now + 1e-9, (
                    f"{self.name} took over {now - other.fence_closes:.2f} s after {other.name}'s fence"
                )

    def step(self) -> None:
        self.election.step()
        now = self.clock()
        if self.election.holds_lease():
            self.fence_closes = max(self.fence_closes, now + self.election.elector.valid_for(now))
        spell = (self.election.leading(), self.election.elector.term)
        if self._spell[0] and spell != self._spell:
            self.lost.append(now)  # the gate closed (maybe to open again on a new term)
        self._spell = spell

    @property
    def writer(self) -> bool:
        """Alive, and its fence lets writes through (in-flight reconciles included)."""
        return self.alive and self.election.holds_lease()

    def kill(self) -> None:
        self.alive = False


@pytest.fixture
def sim() -> Iterator[Sim]:
    with Sim() as s:
        yield s


def pair(sim: Sim) -> tuple[Clock, LeaseServer, Replica, Replica]:
    a, b = Replica("a", sim), Replica("b", sim, delay=0.5)  # b starts half a second after a
    return sim.clock, sim.server, a, b


def leading_since(sim: Sim, a: Replica, b: Replica, settle_s: float = 20) -> float:
    """Run until a leads and b follows; when a's gate closes if nothing renews it."""
    sim.run(sim.clock() + settle_s)
    assert a.election.leading() and not b.election.leading()
    deadline: float = sim.clock() + a.election.elector.valid_for(sim.clock())
    return deadline


# ---------------------------------------------------------------------------------------- the rules


def test_client_go_timings_leave_a_cut_off_leader_time_to_stop_before_anyone_takes_over() -> None:
    assert (LEASE_DURATION_S, RENEW_DEADLINE_S, RETRY_PERIOD_S) == (15, 10.0, 2.0)
    assert RENEW_DEADLINE_S + REQUEST_TIMEOUT_S < LEASE_DURATION_S
    assert RETRY_PERIOD_S < RENEW_DEADLINE_S and FAST_RETRY_S < RETRY_PERIOD_S
    # Two tries fit in a deadline even when each hangs for its whole timeout.
    assert RETRY_PERIOD_S + REQUEST_TIMEOUT_S + RETRY_PERIOD_S + LAST_TRY_S < RENEW_DEADLINE_S
    # The worst takeover while the API server answers: the last renewal seen one poll late, then the
    # expiry; a read, a write and the first reconciles take well under the rest.
    assert LEASE_DURATION_S + RETRY_PERIOD_S + 1 < TAKEOVER_BOUND_S


def test_the_first_replica_creates_the_lease_and_the_second_follows(sim: Sim) -> None:
    clock, server, a, b = pair(sim)
    sim.run(clock() + 30)
    assert a.started and a.started[0][1] == "created" and not b.started
    assert server.record is not None and server.record.holder == "a"
    assert server.record.duration_s == LEASE_DURATION_S
    assert a.election.leading() and not b.election.leading()
    assert not a.lost and not b.lost


def test_a_killed_leader_is_replaced_within_the_bound_and_never_early(sim: Sim) -> None:
    clock, server, a, b = pair(sim)
    sim.run(clock() + 20.3)
    killed_at = clock()
    a.kill()  # SIGKILL: no release
    sim.run(killed_at + 30)
    ((took_at, how),) = b.started
    assert how == "expired"
    assert took_at - killed_at <= LEASE_DURATION_S + RETRY_PERIOD_S + 0.1 < TAKEOVER_BOUND_S
    assert server.record is not None and server.record.holder == "b" and server.record.transitions == 1


def test_a_released_lease_is_taken_after_its_one_second(sim: Sim) -> None:
    clock, server, a, b = pair(sim)
    sim.run(clock() + 20)
    assert a.election.resign(lambda _timeout: True) is True
    a.alive = False
    released_at = clock()
    assert server.record is not None and server.record.holder == ""
    assert server.record.duration_s == RELEASED_DURATION_S
    sim.run(released_at + 10)
    ((took_at, how),) = b.started
    # Seen within a poll, then taken once its second has passed.
    assert how == "released" and took_at - released_at <= RETRY_PERIOD_S + RELEASED_DURATION_S + 0.1


# --------------------------------------------------------------------- renewals within the deadline


@pytest.mark.parametrize("retry_after", [None, 1.0, 3.0])
def test_a_refused_renewal_is_retried_soon_within_the_deadline_and_leadership_kept(
    sim: Sim, retry_after: float | None
) -> None:
    """Two 429s (as API Priority and Fairness sends under load): tried again after their Retry-After (or a
    moment), well before the deadline; the next try passes and nothing changes hands."""
    clock, server, a, b = pair(sim)
    leading_since(sim, a, b)
    a.lock.refusals = [retry_after, retry_after]
    refused_from = len(a.lock.calls)
    sim.run(clock() + 30)
    tries = [at for at, _ in a.lock.calls[refused_from : refused_from + 3]]
    wait = FAST_RETRY_S if retry_after is None else retry_after
    assert [round(t2 - t1, 3) for t1, t2 in itertools.pairwise(tries)] == [wait, wait]
    assert a.election.leading() and not a.lost and len(a.started) == 1 and not b.started
    assert server.record is not None and server.record.holder == "a"


def test_a_renewal_that_times_out_is_retried_a_retry_period_later_and_kept_when_that_passes(
    sim: Sim,
) -> None:
    clock, _server, a, b = pair(sim)
    leading_since(sim, a, b)
    a.lock.down = True  # hangs: the next try takes its whole timeout
    first = len(a.lock.calls)
    sim.run(clock() + RETRY_PERIOD_S + REQUEST_TIMEOUT_S)
    a.lock.down = False  # the second try, a retry period after the first failed, passes
    sim.run(clock() + 30)
    (start1, timeout1), (start2, _), (start3, _) = a.lock.calls[first : first + 3]
    assert timeout1 == REQUEST_TIMEOUT_S and start2 - (start1 + timeout1) == pytest.approx(RETRY_PERIOD_S)
    assert start3 > start2  # and renewals go on as before
    assert a.election.leading() and not a.lost and len(a.started) == 1 and not b.started


def test_every_try_ends_by_the_deadline_and_the_last_one_starts_in_time(sim: Sim) -> None:
    """A leader whose every renewal hangs: its tries end by its deadline (none is still out when the gate
    closes), the last one starts at least LAST_TRY_S before it, and then it has lost."""
    _clock, _server, a, b = pair(sim)
    deadline = leading_since(sim, a, b)
    a.lock.down = True
    tries = len(a.lock.calls)
    sim.run(deadline + 0.5)
    held = [(at, timeout) for at, timeout in a.lock.calls[tries:] if at < deadline]
    assert len(held) >= 2, held
    assert all(at + timeout <= deadline + 1e-9 for at, timeout in held)
    assert held[-1][0] <= deadline - LAST_TRY_S + 1e-9
    assert a.lost and not a.election.leading() and not a.election.holds_lease()


@pytest.mark.parametrize("offset", [0.0, 0.7, 1.5, 1.99, 2.0])
@pytest.mark.parametrize("stall_s", [3.0, 6.0])
def test_a_stalled_api_server_costs_no_leadership(sim: Sim, stall_s: float, offset: float) -> None:
    """The API server paused (SIGSTOP) for a while, starting anywhere in the leader's renewal cycle: the
    renewal waits for it or is tried again, and the same leader goes on; the follower never takes over."""
    clock, server, a, b = pair(sim)
    leading_since(sim, a, b)
    last_renewal = a.lock.calls[-1][0]
    sim.run(last_renewal + offset)
    server.stalled_until = last_renewal + offset + stall_s
    sim.run(clock() + 40)
    assert a.election.leading() and not a.lost and len(a.started) == 1
    assert not b.started and server.record is not None and server.record.holder == "a"
    assert server.record.transitions == 0


def test_a_stall_past_the_deadline_loses_the_lease_then_the_same_leader_takes_it_back(sim: Sim) -> None:
    """Nobody could take the Lease meanwhile (every request waited on the same stall): the leader's gate
    closes at its deadline, then it finds its own name there and takes it back, re-applying everything."""
    clock, server, a, b = pair(sim)
    deadline = leading_since(sim, a, b)
    server.stalled_until = deadline + 1
    sim.run(clock() + 40)
    assert len(a.lost) == 1 and deadline <= a.lost[0]
    assert [how for _, how in a.started] == ["created", "reclaimed"] and not b.started
    assert a.election.leading()


# ------------------------------------------------------------------------------------- losing it


def test_a_leader_cut_off_stops_before_anyone_takes_over_then_follows_and_may_lead_again(sim: Sim) -> None:
    clock, _server, a, b = pair(sim)
    sim.run(clock() + 20)
    a.lock.down = True  # each attempt hangs for its whole timeout, then fails
    sim.run(clock() + 30)
    (lost_at,) = a.lost
    ((took_at, _),) = b.started
    assert lost_at < took_at and a.fence_closes + FENCE_MARGIN_S <= took_at
    assert a.alive and not a.election.leading() and not a.election.holds_lease()
    a.lock.down = False  # back: a follows b now
    sim.run(clock() + 10)
    assert a.election.elector.holder == "b" and not a.election.leading()
    b.kill()  # and when b dies, a leads again
    sim.run(clock() + TAKEOVER_BOUND_S)
    assert [how for _, how in a.started] == ["created", "expired"] and a.election.leading()


def test_a_leader_that_missed_its_renew_deadline_loses_even_when_the_api_server_is_back(sim: Sim) -> None:
    """Its reconciles were fenced past the deadline: even when the next read shows the Lease still its own,
    that is a new spell of leading (taken back, everything re-applied), not the old one going on."""
    clock, _server, a, b = pair(sim)
    deadline = leading_since(sim, a, b)
    a.lock.down = True
    sim.run(deadline)  # renewals fail until the deadline...
    assert not a.election.leading() and not a.election.holds_lease()
    a.lock.down = False  # ...then the API server answers again
    sim.run(clock() + 30)
    assert len(a.lost) == 1
    assert [how for _, how in a.started] == ["created", "reclaimed"] and not b.started


def test_a_renewal_answered_after_the_deadline_starts_a_new_spell(sim: Sim) -> None:
    """A client that overran the timeout it was given: the renewal landed, but the gate was closed while it
    was out, so the election reports a loss and a new start (whose takeover re-applies what was fenced)."""
    clock, _server, a, b = pair(sim)
    leading_since(sim, a, b)
    a.lock.overrun = RENEW_DEADLINE_S - REQUEST_TIMEOUT_S - 1  # answered a second before a takeover could be
    sim.run(clock() + 30)
    assert len(a.lost) == 1 and [how for _, how in a.started] == ["created", "renewed"] and not b.started
    assert a.election.leading()


def test_the_gate_and_the_fence_close_at_the_renew_deadline_even_if_the_election_thread_is_stuck(
    sim: Sim,
) -> None:
    clock, _server, a, _b = pair(sim)
    sim.run(clock() + 5)
    assert a.election.leading() and a.election.holds_lease()
    clock.now += RENEW_DEADLINE_S  # no step at all meanwhile
    assert not a.election.leading() and not a.election.holds_lease()


def test_losing_is_logged_and_the_leader_metric_follows(sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    def leader_metric() -> float | None:
        return REGISTRY.get_sample_value("storyteller_operator_leader")

    clock, _server, a, b = pair(sim)
    deadline = leading_since(sim, a, b)
    assert leader_metric() == 1
    a.lock.down = True
    with caplog.at_level(logging.INFO, logger="storyteller.operator.leadership"):
        sim.run(deadline + 0.5)
        assert leader_metric() == 0
        a.lock.down = False
        sim.run(clock() + 5)
    messages = [r.getMessage() for r in caplog.records if getattr(r, "identity", "") == "a"]
    assert messages[-2:] == ["leadership lost", "leading"] and leader_metric() == 1


def test_a_restarted_process_of_the_same_pod_takes_its_lease_back_at_once(sim: Sim) -> None:
    clock, _server, a, b = pair(sim)
    sim.run(clock() + 10)
    a.kill()
    again = Replica("a", sim)  # the container restarted: same pod name, new process
    sim.run(clock() + 1)
    ((_, how),) = again.started
    assert how == "reclaimed" and not b.started


def test_a_renewal_whose_answer_was_lost_is_read_back_and_kept(sim: Sim) -> None:
    clock, _server, a, b = pair(sim)
    sim.run(clock() + 10)
    a.lock.lose_next_answer = True  # stored, but a timeout for all a knows
    sim.run(clock() + 30)
    assert a.election.leading() and not a.lost and not b.started


def test_two_candidates_for_a_free_lease_one_wins(sim: Sim) -> None:
    a, b = Replica("a", sim), Replica("b", sim)
    a.lock.latency = b.lock.latency = 0.1  # both read the empty Lease before either create lands
    sim.run(sim.clock() + 10)
    assert sorted(len(r.started) for r in (a, b)) == [0, 1]
    assert a.lock.calls[:2] and b.lock.calls[:2]  # each read, then tried to create
    winner = a if a.started else b
    assert sim.server.record is not None and sim.server.record.holder == winner.name


def test_a_deleted_lease_is_recreated_by_its_leader_not_grabbed_by_a_follower(sim: Sim) -> None:
    clock, server, a, b = pair(sim)
    sim.run(clock() + 10)
    server.record = None  # someone deletes it
    sim.run(clock() + 30)
    assert a.election.leading() and not a.lost and not b.started
    assert server.record is not None and server.record.holder == "a"


def test_lost_to_another_holder_stops_at_once() -> None:
    elector = Elector("a")
    elector.observe(None, 0.0)
    attempt = elector.attempt(None, 0.0, WALL)
    assert attempt is not None and attempt.how == "created"
    elector.wrote(dataclasses.replace(attempt.record, resource_version="1"), 0.0, 0.1)
    assert elector.leading(1.0)
    elector.observe(LeaseRecord("b", 15, WALL, WALL, 1, "2"), 1.0)  # taken (a bug, a hand edit)
    assert not elector.leading(1.0)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[float, int, str, float]]:
    """(time, replica, action, value in [0, 1]): kill, partition on/off, a request latency, a stall of the
    API server, quick refusals."""
    n = draw(st.integers(1, 12))
    times = sorted(draw(st.lists(st.floats(0, 90), min_size=n, max_size=n)))
    out = []
    for t in times:
        action = draw(st.sampled_from(["kill", "partition", "heal", "latency", "stall", "refuse"]))
        out.append((t, draw(st.integers(0, 2)), action, draw(st.floats(0, 1))))
    return out


MAX_STALL_S = 2 * REQUEST_TIMEOUT_S


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_never_two_writers_and_a_healthy_survivor_leads(
    script: list[tuple[float, int, str, float]],
) -> None:
    with Sim() as sim:
        replicas = [Replica(name, sim, delay=0.3 * i) for i, name in enumerate("abc")]
        start = sim.clock()
        for at, i, action, value in script:
            sim.run(start + at)  # at most one writer after every turn; takeovers well after the fences
            lock = replicas[i].lock
            if action == "kill":
                replicas[i].kill()
            elif action in ("partition", "heal"):
                lock.down = action == "partition"
            elif action == "latency":
                lock.latency = value * REQUEST_TIMEOUT_S * 1.25  # a quarter of them always too slow
            elif action == "stall":
                sim.server.stalled_until = sim.clock() + value * MAX_STALL_S
            else:
                lock.refusals = [value * RETRY_PERIOD_S] * int(value * 5)
        settled = sim.clock() + MAX_STALL_S + LEASE_DURATION_S + RETRY_PERIOD_S + 3 * REQUEST_TIMEOUT_S
        sim.run(settled)
        ok = [r for r in replicas if r.alive and not r.lock.down and r.lock.latency < REQUEST_TIMEOUT_S]
        if ok:
            assert [r.name for r in replicas if r.writer and r.election.leading()], "nobody leads"


# ------------------------------------------------------------------------------------------ the I/O


class FakeResponse:
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = "Reason"
        self.data = json.dumps(body or {}).encode()
        self.headers = headers or {}

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> dict[str, str]:
        return self.headers


class FakeApi:
    """An ApiClient's two calls: each request is recorded and answered with `answer` (raised if an
    exception)."""

    def __init__(self, answer: FakeResponse | Exception) -> None:
        self.answer = answer
        self.sent: list[tuple[str, str, Any]] = []

    def param_serialize(self, method: str, path: str, **kwargs: Any) -> tuple[Any, ...]:
        return method, path, {}, kwargs.get("body"), None

    def call_api(self, method: str, path: str, headers: Any, body: Any, post: Any, **kwargs: Any) -> Any:
        self.sent.append((method, path, kwargs.get("_request_timeout")))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "retry_in"),
    [
        (FakeResponse(429, headers={"Retry-After": "3"}), 3.0),
        (FakeResponse(429), FAST_RETRY_S),
        (FakeResponse(503, headers={"Retry-After": "0"}), FAST_RETRY_S),
        (FakeResponse(500), FAST_RETRY_S),
        (FakeResponse(403, {"message": "forbidden"}), None),  # RBAC: no better in half a second
        (urllib3.exceptions.NewConnectionError(cast(Any, None), "Connection refused"), FAST_RETRY_S),
        (urllib3.exceptions.ProtocolError("Connection aborted"), FAST_RETRY_S),
        (
            urllib3.exceptions.ReadTimeoutError(cast(Any, None), "/", "read timed out"),
            None,
        ),  # hung: its time spent
        (TimeoutError("timed out"), None),
    ],
    ids=["429-retry-after", "429", "503", "500", "403", "refused", "cut", "read-timeout", "timeout"],
)
def test_a_quick_refusal_asks_for_a_quick_retry_and_a_hang_does_not(
    answer: FakeResponse | Exception, retry_in: float | None
) -> None:
    api = FakeApi(answer)
    lock = LeaseLock(cast(ApiClient, api), "ops", "leader")
    with pytest.raises(LeaseUnavailable) as raised:
        lock.get(1.5)
    assert raised.value.retry_in == retry_in
    assert api.sent == [("GET", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/leader", 1.5)]


# ------------------------------------------------------------------------------------------ the fence


@pytest.mark.parametrize("leading", [True, False])
def test_the_fence_refuses_every_write_while_not_leading_and_lets_reads_through(leading: bool) -> None:
    api = FakeApi(FakeResponse(200, {"metadata": {"name": "x"}}))
    client = kube_mod.Kube(cast(ApiClient, api), may_write=lambda: leading)
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "team-a", "name": "x"}}
    assert client.get("v1", "ConfigMap", "team-a", "x") is not None
    writes: list[Callable[[], object]] = [
        lambda: client.apply(manifest),
        lambda: client.patch_status("team-a", "acme", {"phase": "Ready"}),
        lambda: client.delete("v1", "ConfigMap", "team-a", "x"),
        lambda: client.scale("team-a", "acme", 2, resource_version="1"),
        lambda: client.annotate("v1", "Pod", "team-a", "p", {"a": "b"}),
    ]
    for write in writes:
        if leading:
            write()
            continue
        with pytest.raises(ApiException) as refused:
            write()
        assert refused.value.status == 0 and "fenced" in kube_mod.error_text(refused.value)
    # A refused write is never sent; an Event is best effort and says why it was not posted.
    client.post_event(
        {"metadata": {"namespace": "team-a", "name": "acme"}}, type="Normal", reason="R", message="m"
    )
    assert [m for m, _, _ in api.sent] == ["GET"] + (
        ["PATCH", "PATCH", "DELETE", "PATCH", "PATCH", "POST"] if leading else []
    )


def test_the_fence_stays_open_while_resigning_until_the_release(sim: Sim) -> None:
    """A graceful stop closes the gate at once but the fence only at the release, so the reconciles the
    drain waits for can finish their writes."""
    clock, server, a, _b = pair(sim)
    sim.run(clock() + 10)
    api = FakeApi(FakeResponse(200))
    client = kube_mod.Kube(cast(ApiClient, api), may_write=a.election.holds_lease)
    fenced_in_drain: list[bool] = []

    def drain(_timeout: float) -> bool:
        fenced_in_drain.append(not a.election.leading() and a.election.holds_lease())
        client.delete("v1", "ConfigMap", "team-a", "x")  # a reconcile finishing
        return True

    assert a.election.resign(drain) is True
    assert fenced_in_drain == [True] and [m for m, _, _ in api.sent] == ["DELETE"]
    with pytest.raises(ApiException):
        client.delete("v1", "ConfigMap", "team-a", "y")
    assert server.record is not None and server.record.holder == ""


def test_without_an_election_every_write_goes() -> None:
    api = FakeApi(FakeResponse(200))
    kube_mod.Kube(cast(ApiClient, api)).delete("v1", "ConfigMap", "team-a", "x")
    assert [m for m, _, _ in api.sent] == ["DELETE"]


def test_lease_record_round_trip_and_micro_time() -> None:
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert leadership.micro_time(at) == "2026-01-02T03:04:05.000000Z"  # six digits even at .0
    obj = {
        "metadata": {"resourceVersion": "42"},
        "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 10, "acquireTime": WALL,
                 "renewTime": WALL, "leaseTransitions": 3},
    }  # fmt: skip
    record = LeaseRecord.from_object(obj)
    assert record == LeaseRecord("pod-1", 10, WALL, WALL, 3, "42")
    assert record.spec() == obj["spec"]
    assert LeaseRecord.from_object({"metadata": {}, "spec": {}}).spec() == {
        "holderIdentity": None,
        "leaseTransitions": 0,
    }


# ------------------------------------------------------------------------------------------ the gate


class FakeReconciler:
    def __init__(self) -> None:
        self.touched: list[Key] = []
        self.triggered: list[tuple[Key, bool]] = []
        self.tenants: list[Key] = [("team-a", "acme"), ("team-b", "other")]
        self.hold: threading.Event | None = None  # a trigger blocks on it while set
        self.inside = threading.Event()
        self.changed = threading.Condition()

    def touch(self, namespace: str, name: str) -> None:
        self.touched.append((namespace, name))

    def known(self) -> list[Key]:
        return list(self.tenants)

    def due(self, resync_seconds: float) -> list[tuple[Key, bool]]:
        return [(k, False) for k in self.tenants]

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        with self.changed:
            self.triggered.append(((namespace, name), force_apply))
            self.changed.notify_all()
        if self.hold is not None:
            self.inside.set()
            self.hold.wait(30)

    def note_tenant(self, namespace: str, name: str, obj: Any) -> list[Key]:
        return []

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        pass

    def forget_child(self, uid: str, kind: str, name: str) -> None:
        pass

    def seen(self, obj: Any) -> None:
        pass


def test_a_follower_only_notes_tenants_and_a_new_leader_reapplies_them_all() -> None:
    rec, leading = FakeReconciler(), [False]
    gate = LeaderGate(rec, lambda: leading[0], workers=4)
    gate.trigger("team-a", "acme", force_apply=False)
    assert rec.triggered == [] and rec.touched == [("team-a", "acme")]
    assert gate.due(300) == []  # the recheck loop finds nothing to do on a follower
    leading[0] = True
    assert len(gate.due(300)) == 2
    gate.take_over()

    with rec.changed:
        forced = rec.changed.wait_for(
            lambda: sorted(rec.triggered) == [(k, True) for k in sorted(rec.tenants)], timeout=10
        )
    assert forced, rec.triggered


def test_drain_waits_for_the_reconciles_that_passed_the_gate() -> None:
    rec = FakeReconciler()
    rec.hold = threading.Event()
    gate = LeaderGate(rec, lambda: True)
    worker = threading.Thread(target=gate.trigger, args=("team-a", "acme"), kwargs={"force_apply": False})
    worker.start()
    assert rec.inside.wait(10)
    assert gate.drain(0.01) is False  # one reconcile is still writing
    rec.hold.set()
    assert gate.drain(10) is True
    worker.join(10)


def test_resign_does_not_release_while_a_reconcile_still_runs(sim: Sim) -> None:
    clock, server, a, _b = pair(sim)
    sim.run(clock() + 5)
    assert a.election.resign(lambda _timeout: False) is False
    assert server.record is not None and server.record.holder == "a"  # left to expire instead
    assert not a.election.leading()
    clock.now += RENEW_DEADLINE_S  # and what still runs is fenced from its deadline on
    assert not a.election.holds_lease()


# ------------------------------------------------------------------------- the autoscaler's history


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The autoscaler's clock (reconcile.py's time.monotonic), and only its."""
    clock = Clock()
    monkeypatch.setattr(
        reconcile_mod, "time", types.SimpleNamespace(monotonic=clock, perf_counter=time.perf_counter)
    )
    yield clock


def replicas(kube: FakeKube) -> int:
    return int(kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"])


@pytest.mark.parametrize("busy_after_takeover", [True, False])
def test_a_new_leader_never_shrinks_a_pool_before_a_whole_delay(
    monotonic: Clock, busy_after_takeover: bool
) -> None:
    """The old leader's history is gone with its process; the new one seeds it from the running size."""
    delay = 120
    pool = {"minReplicas": 1, "maxReplicas": 10, "sessionsPerWorker": 4, "spareSessions": 2,
            "scaleDownDelaySeconds": delay}  # fmt: skip
    kube, source = cluster_with(tenant({"pool": pool}), keda_served=False), Sessions()
    pods = {f"w-{i}": False for i in range(4)}
    old = builtin_pool(kube, source, 1, pods)
    start = monotonic()
    busy = {name: 4 for name in pods}  # 16 sessions + 2 spare: 5 workers
    source.answers = dict(busy)
    for t in range(0, 60, 5):  # the old leader's load history
        monotonic.now = start + t
        old.reconcile("team-a", "acme")
    assert replicas(kube) == 5
    source.answers = {name: 0 for name in pods}  # the load is gone at 60 s...
    monotonic.now = start + 60
    old.reconcile("team-a", "acme")
    assert replicas(kube) == 5  # ...the old leader holds the pool until 60 + delay

    # The old leader dies at 100 s; the new one (empty memory, the same cluster) leads from 112 s.
    new = builtin_pool(kube, source, replicas(kube), {})
    if busy_after_takeover:
        source.answers = dict(busy)
    took_over = start + 112
    for t in range(0, delay, 4):
        monotonic.now = took_over + t
        new.reconcile("team-a", "acme")
        assert replicas(kube) == 5, f"shrunk {t} s after the takeover"
    # The limit: a pool that was due to shrink at 180 s waits one whole delay from the takeover instead.
    monotonic.now = took_over + delay
    new.reconcile("team-a", "acme")
    new.reconcile("team-a", "acme")  # a scale-in may wait one reconcile for fresh pod prices
    assert replicas(kube) == (5 if busy_after_takeover else 1)

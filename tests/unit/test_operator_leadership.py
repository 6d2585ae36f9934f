"""Leader election (leadership.py) on a fake clock and a fake Lease: the elector's rules, replicas simulated
together (never two writers; a dead leader replaced within the bound), the gate in front of the reconciler,
and the builtin autoscaler's history across a handover. No threads are timed, nothing sleeps."""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyteller_operator import leadership
from storyteller_operator import reconcile as reconcile_mod
from storyteller_operator.leadership import (
    LEASE_DURATION_S,
    RELEASED_DURATION_S,
    RENEW_DEADLINE_S,
    REQUEST_TIMEOUT_S,
    RETRY_PERIOD_S,
    Elector,
    LeaderElection,
    LeaderGate,
    LeaseConflict,
    LeaseRecord,
    LeaseUnavailable,
)
from storyteller_operator.runner import Key
from tests.unit.test_operator_reconcile import FakeKube
from tests.unit.test_operator_render import tenant
from tests.unit.test_operator_scaling import Sessions, builtin_pool, cluster_with

WALL = "2026-01-01T00:00:00.000000Z"
# A dead leader's successor reconciles within this (the issue's bound), the tenants' own reconcile aside.
TAKEOVER_BOUND_S = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseServer:
    """The API server's one Lease: conditional replaces on resourceVersion, like the real one."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0

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


class FakeLock:
    """One replica's way to the server: each call takes `latency` seconds of the shared clock; `down`
    (a partition) fails every call after that; `lose_next_answer` stores a write but reports a timeout."""

    def __init__(self, server: LeaseServer, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        self.latency = 0.0
        self.down = False
        self.lose_next_answer = False

    def _travel(self) -> None:
        self.clock.now += self.latency
        if self.down:
            raise LeaseUnavailable("partitioned")

    def get(self) -> LeaseRecord | None:
        self._travel()
        return self.server.record

    def write(self, record: LeaseRecord) -> LeaseRecord:
        self._travel()
        stored = self.server.store(record)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise LeaseUnavailable("timed out")
        return stored


class Replica:
    """One operator process: its election, stepped when its thread would wake; on loss it exits."""

    def __init__(self, name: str, server: LeaseServer, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.lock = FakeLock(server, clock)
        self.started: list[tuple[float, str]] = []
        self.lost: list[float] = []
        self.alive = True
        self.wake = clock()
        self.election = LeaderElection(
            self.lock,
            name,
            on_started=lambda how: self.started.append((clock(), how)),
            on_lost=self._lose,
            clock=clock,
            wall=lambda: WALL,
        )

    def _lose(self) -> None:
        self.lost.append(self.clock())
        self.alive = False  # the operator exits (os._exit): nothing of it writes any more

    @property
    def writer(self) -> bool:
        """Alive and leading since its last start: it may write (in-flight reconciles included)."""
        return self.alive and bool(self.started)

    def kill(self) -> None:
        self.alive = False


def run(replicas: list[Replica], until: float) -> None:
    """Step each live replica when its election thread would wake, in time order, checking after every
    step that at most one process may write."""
    clock = replicas[0].clock
    while True:
        live = [r for r in replicas if r.alive]
        if not live:
            break
        r = min(live, key=lambda x: x.wake)
        if r.wake > until:
            break
        clock.now = max(clock.now, r.wake)
        r.election.step()
        writers = [x.name for x in replicas if x.writer]
        assert len(writers) <= 1, f"two writers at {clock.now - 1000:.2f} s: {writers}"
        r.wake = clock() + r.election.next_wait()
    clock.now = max(clock.now, until)


def pair() -> tuple[Clock, LeaseServer, Replica, Replica]:
    clock, server = Clock(), LeaseServer()
    a, b = Replica("a", server, clock), Replica("b", server, clock)
    b.wake = clock() + 0.5  # b starts half a second after a
    return clock, server, a, b


# ---------------------------------------------------------------------------------------- the rules


def test_timing_leaves_a_cut_off_leader_time_to_stop_before_anyone_takes_over() -> None:
    assert RENEW_DEADLINE_S + REQUEST_TIMEOUT_S < LEASE_DURATION_S
    assert RETRY_PERIOD_S < RENEW_DEADLINE_S
    # The worst takeover while the API server answers: the last renewal seen one poll late, then the
    # expiry; a read, a write and the first reconciles take well under the second left.
    assert LEASE_DURATION_S + RETRY_PERIOD_S + 1 < TAKEOVER_BOUND_S


def test_the_first_replica_creates_the_lease_and_the_second_follows() -> None:
    clock, server, a, b = pair()
    run([a, b], clock() + 30)
    assert a.started and a.started[0][1] == "created" and not b.started
    assert server.record is not None and server.record.holder == "a"
    assert server.record.duration_s == LEASE_DURATION_S
    assert a.election.leading() and not b.election.leading()
    assert not a.lost and not b.lost


def test_a_killed_leader_is_replaced_within_the_bound_and_never_early() -> None:
    clock, server, a, b = pair()
    run([a, b], clock() + 20.3)
    killed_at = clock()
    a.kill()  # SIGKILL: no release
    run([a, b], killed_at + 30)
    ((took_at, how),) = b.started
    assert how == "expired"
    assert took_at - killed_at <= LEASE_DURATION_S + RETRY_PERIOD_S + 0.1 < TAKEOVER_BOUND_S
    assert server.record is not None and server.record.holder == "b" and server.record.transitions == 1


def test_a_released_lease_is_taken_after_its_one_second() -> None:
    clock, server, a, b = pair()
    run([a, b], clock() + 20)
    assert a.election.resign(lambda _timeout: True) is True
    a.alive = False
    released_at = clock()
    assert server.record is not None and server.record.holder == ""
    assert server.record.duration_s == RELEASED_DURATION_S
    run([a, b], released_at + 10)
    ((took_at, how),) = b.started
    # Seen within a poll, then taken once its second has passed.
    assert how == "released" and took_at - released_at <= RETRY_PERIOD_S + RELEASED_DURATION_S + 0.1


def test_a_leader_cut_off_from_the_api_server_exits_before_anyone_takes_over() -> None:
    clock, _server, a, b = pair()
    run([a, b], clock() + 20)
    a.lock.down = True
    a.lock.latency = REQUEST_TIMEOUT_S  # each attempt hangs for the whole timeout, then fails
    run([a, b], clock() + 30)
    (lost_at,) = a.lost
    ((took_at, _),) = b.started
    assert lost_at < took_at
    assert not a.election.leading()


def test_a_leader_that_missed_its_renew_deadline_gives_up_even_when_the_api_server_is_back() -> None:
    """Its reconciles went on past the deadline (only the process ending stops them): it must not lead on."""
    clock, _server, a, b = pair()
    run([a, b], clock() + 20)
    a.lock.down = True
    while a.election.elector.valid_for(clock()) > 0.5:  # renewals fail until the deadline is near...
        run([a, b], clock() + 0.25)
    assert a.election.leading() and not a.lost
    a.lock.down = False  # ...then the API server answers again, before a's next attempt at the deadline
    run([a, b], clock() + 30)
    assert a.lost and b.started


def test_the_gate_closes_at_the_renew_deadline_even_if_the_election_thread_is_stuck() -> None:
    clock, _server, a, _b = pair()
    run([a], clock() + 5)
    assert a.election.leading()
    clock.now += RENEW_DEADLINE_S  # no step at all meanwhile
    assert not a.election.leading()


def test_a_restarted_process_of_the_same_pod_takes_its_lease_back_at_once() -> None:
    clock, server, a, b = pair()
    run([a, b], clock() + 10)
    a.kill()
    again = Replica("a", server, clock)  # the container restarted: same pod name, new process
    again.wake = clock()
    run([again, b], clock() + 1)
    ((_, how),) = again.started
    assert how == "reclaimed" and not b.started


def test_a_renewal_whose_answer_was_lost_is_read_back_and_kept() -> None:
    clock, _server, a, b = pair()
    run([a, b], clock() + 10)
    a.lock.lose_next_answer = True  # stored, but a timeout for all a knows
    run([a, b], clock() + 30)
    assert a.election.leading() and not a.lost and not b.started


def test_two_candidates_for_a_free_lease_one_wins() -> None:
    clock, server = Clock(), LeaseServer()
    a, b = Replica("a", server, clock), Replica("b", server, clock)
    write = a.lock.write

    def b_first(record: LeaseRecord) -> LeaseRecord:
        b.election.step()  # b read the empty Lease too, and its create lands first
        return write(record)

    a.lock.write = b_first  # type: ignore[method-assign]
    a.election.step()
    a.lock.write = write  # type: ignore[method-assign]
    run([a, b], clock() + 10)
    assert [bool(r.started) for r in (a, b)] == [False, True]
    assert server.record is not None and server.record.holder == "b"


def test_a_deleted_lease_is_recreated_by_its_leader_not_grabbed_by_a_follower() -> None:
    clock, server, a, b = pair()
    run([a, b], clock() + 10)
    server.record = None  # someone deletes it
    run([a, b], clock() + 30)
    assert a.election.leading() and not a.lost and not b.started
    assert server.record is not None and server.record.holder == "a"


def test_lost_to_another_holder_stops_at_once() -> None:
    elector = Elector("a")
    elector.observe(None, 0.0)
    attempt = elector.attempt(None, 0.0, WALL)
    assert attempt is not None and attempt.how == "created"
    elector.wrote(dataclasses.replace(attempt.record, resource_version="1"), 0.0)
    assert elector.leading(1.0)
    elector.observe(LeaseRecord("b", 10, WALL, WALL, 1, "2"), 1.0)  # taken (a bug, a hand edit)
    assert not elector.leading(1.0)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[float, int, str, float]]:
    """(time, replica, action, value): kill, partition on/off, a request latency."""
    n = draw(st.integers(1, 12))
    times = sorted(draw(st.lists(st.floats(0, 90), min_size=n, max_size=n)))
    out = []
    for t in times:
        action = draw(st.sampled_from(["kill", "partition", "heal", "latency"]))
        latency = draw(st.floats(0, REQUEST_TIMEOUT_S))
        out.append((t, draw(st.integers(0, 2)), action, latency))
    return out


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_never_two_writers_and_a_healthy_survivor_leads(
    script: list[tuple[float, int, str, float]],
) -> None:
    clock, server = Clock(), LeaseServer()
    replicas = [Replica(name, server, clock) for name in ("a", "b", "c")]
    for i, r in enumerate(replicas):
        r.wake = clock() + 0.3 * i
    start = clock()
    for at, i, action, value in script:
        run(replicas, start + at)  # asserts at most one writer after every step
        lock = replicas[i].lock
        if action == "kill":
            replicas[i].kill()
        elif action in ("partition", "heal"):
            lock.down = action == "partition"
        else:
            lock.latency = value
    settled = clock() + LEASE_DURATION_S + RETRY_PERIOD_S + 3 * REQUEST_TIMEOUT_S + 1
    run(replicas, settled)
    # A replica whose every request takes the whole timeout is told each write failed while the writes land:
    # it keeps the Lease fresh without ever leading, and nobody can take it over (a known gap: such a
    # replica should stop writing once it has failed for a whole lease duration). Not the case here.
    if any(r.alive and not r.lock.down and r.lock.latency >= REQUEST_TIMEOUT_S for r in replicas):
        return
    healthy = [r for r in replicas if r.alive and not r.lock.down]
    if healthy:
        assert [r.name for r in replicas if r.writer and r.election.leading()], "nobody leads"


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


def test_resign_does_not_release_while_a_reconcile_still_runs() -> None:
    clock, server, a, b = pair()
    run([a, b], clock() + 5)
    assert a.election.resign(lambda _timeout: False) is False
    assert server.record is not None and server.record.holder == "a"  # left to expire instead
    assert not a.election.leading()


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

"""Slow servers asked off the reconcile threads (fair_io.py): a tenant whose pods hang costs its own
budget, not every tenant's reconcile threads. Every wait here is on an Event; nothing is timed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from storyteller_devkit.real_platform import wait_for
from storyteller_operator import render
from storyteller_operator.fair_io import FairCalls
from storyteller_operator.reconcile import Reconciler
from tests.unit.test_operator_reconcile import Events, FakeKube, secret
from tests.unit.test_operator_render import tenant

DEADLINE_S = 10.0  # for a pool thread to deliver an answer already released


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # whatever the test did, no pool thread stays blocked


def test_a_call_that_outlives_its_budget_answers_the_next_request(gate: threading.Event) -> None:
    calls = FairCalls[int]("t", wait_s=0.01, slow_wait_s=0.0)
    asked: list[int] = []

    def slow() -> int:
        asked.append(1)
        gate.wait()
        return 7

    assert calls.call("a", slow) == (False, None)  # the budget passed; the call goes on
    assert calls.call("a", slow) == (False, None)  # still in flight: not asked twice
    assert len(asked) == 1
    gate.set()
    wait_for("the late call to end", lambda: calls.ready("a"), deadline=DEADLINE_S, every=0.01)
    assert calls.call("a", slow) == (True, 7)  # its answer, at once
    # ... and a new call started for the next request, so a late key still has an answer every time.
    wait_for("the next call", lambda: calls.ready("a"), deadline=DEADLINE_S, every=0.01)
    assert len(asked) == 2 and calls.call("a", slow) == (True, 7)


def test_the_total_budget_leaves_other_keys_unasked_not_waiting(gate: threading.Event) -> None:
    calls = FairCalls[int]("t", limit=1, wait_s=0.01)
    assert calls.call("hung", lambda: gate.wait() and 1) == (False, None)
    asked: list[str] = []

    def other() -> int:
        asked.append("other")
        return 2

    assert calls.call("other", other) == (False, None)
    assert asked == []  # over the total budget: not even started
    gate.set()


def test_a_key_is_slow_while_its_calls_take_longer_than_the_budget(gate: threading.Event) -> None:
    now = [0.0]  # the calls' durations are the test's: each says how long it took
    calls = FairCalls[int]("t", wait_s=1.0, slow_wait_s=0.0, clock=lambda: now[0])

    def took(seconds: float) -> Callable[[], int]:
        def fn() -> int:
            gate.wait()
            now[0] += seconds
            return int(seconds)

        return fn

    assert calls.call("a", took(5.0)) == (False, None)  # held on the gate past its budget
    gate.set()
    wait_for("the slow call to end", lambda: calls.ready("a"), deadline=DEADLINE_S, every=0.01)
    assert calls.slow("a") and not calls.slow("b")
    assert calls.call("a", took(0.1)) == (True, 5)  # the slow call's answer; a quick one is started
    wait_for("the quick call to end", lambda: calls.ready("a"), deadline=DEADLINE_S, every=0.01)
    assert not calls.slow("a")


class HangingPods:
    """A session source whose pods accept and never answer, until `release` is set."""

    where = "hanging pods"
    settle_seconds = 0.0

    def __init__(self, release: threading.Event, counts: dict[str, int]) -> None:
        self.release, self.counts, self.asked = release, counts, 0

    def active_sessions(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        self.asked += 1
        self.release.wait()
        return dict(self.counts)


def running_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "labels": render.selector_labels("acme")},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }


def test_a_tenant_whose_pods_hang_does_not_hold_its_reconcile_and_holds_its_pool(
    gate: threading.Event,
) -> None:
    kube = FakeKube()
    kube.add(tenant({"providerSecrets": ["acme-openai"], "pool": {"minReplicas": 1, "maxReplicas": 5}}))
    kube.add(secret("lk-creds"))
    kube.add(secret("acme-openai"))
    source = HangingPods(gate, {"w-a": 9})
    rec = Reconciler(
        kube, Events(), clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False, sessions=source
    )
    rec.observer._sessions_io.wait_s = 0.01  # the reconcile's budget for this tenant
    rec.reconcile("team-a", "acme")
    kube.add(running_pod("w-a"))
    out = rec.reconcile("team-a", "acme")  # returns while the pods hang
    assert out is not None and source.asked == 1
    assert kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 1
    gate.set()
    # The late answer (9 sessions: 11 slots wanted, 3 pods of 4) sizes the pool at a later reconcile.

    def sized() -> bool:
        rec.reconcile("team-a", "acme")
        return bool(kube.objects[("Deployment", "team-a", "acme-worker")]["spec"]["replicas"] == 3)

    wait_for("the pool sized by the late answer", sized, deadline=DEADLINE_S, every=0.01)

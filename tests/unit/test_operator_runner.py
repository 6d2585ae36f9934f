"""When reconciles run: the backoff policy (pure) and the runner's use of it, with an injected clock and
random source (no sleeps, no threads)."""

from __future__ import annotations

import logging

import pytest

from storyteller_operator.backoff import Backoff
from storyteller_operator.runner import Runner

KEY = ("team-a", "acme")
RESYNC = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reconcile:
    """Fails while `failing` is set, else returns `phase`; records each call's force_apply."""

    def __init__(self, phase: str = "Ready") -> None:
        self.failing = False
        self.phase = phase
        self.calls: list[bool] = []

    def __call__(self, namespace: str, name: str, force: bool) -> str | None:
        self.calls.append(force)
        if self.failing:
            raise RuntimeError("403 Forbidden: networkpolicies is forbidden")
        return self.phase


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reconcile() -> Reconcile:
    return Reconcile()


def runner_with(reconcile: Reconcile, clock: Clock, rand: float = 0.5) -> Runner:
    return Runner(reconcile, clock, rand=lambda: rand, backoff=Backoff(base=5.0, cap=300.0))


# ------------------------------------------------------------------------------------------ the policy


def test_backoff_doubles_per_failure_from_the_base() -> None:
    b = Backoff(base=5.0, cap=300.0)
    assert [b.step(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]


def test_backoff_is_capped_and_stays_finite() -> None:
    b = Backoff(base=5.0, cap=300.0)
    assert b.step(7) == 300.0  # 320 capped
    assert b.step(10_000) == 300.0  # 2**9999 would overflow a float
    assert b.delay(10_000, lambda: 0.999999) <= 300.0


def test_backoff_equal_jitter_stays_within_half_the_step_and_the_step() -> None:
    b = Backoff(base=5.0, cap=300.0)
    for failures in (1, 3, 9):
        step = b.step(failures)
        assert b.delay(failures, lambda: 0.0) == step / 2
        assert b.delay(failures, lambda: 0.5) == pytest.approx(step * 0.75)
        assert step / 2 <= b.delay(failures, lambda: 0.999999) < step


def test_backoff_after_no_failure_is_nothing() -> None:
    """A success resets the runner's count to 0: no wait at all."""
    b = Backoff(base=5.0, cap=300.0)
    assert b.step(0) == 0.0 and b.delay(0, lambda: 0.999999) == 0.0


# ------------------------------------------------------------------------------------------ the runner


def test_a_failing_tenant_is_not_due_before_its_backoff_then_retried_in_full(
    reconcile: Reconcile, clock: Clock
) -> None:
    runner = runner_with(reconcile, clock, rand=0.0)  # the shortest wait: half the step
    reconcile.failing = True
    runner.trigger(*KEY, force_apply=False)

    # Not even a full resync or a session poll visits it before its time (the first wait is 2.5 s).
    clock.now += 2.4
    assert runner.due(resync_seconds=0, poll_all=True) == []
    clock.now += 0.1
    assert runner.due(resync_seconds=RESYNC, poll_all=False) == [(KEY, True)]


def test_consecutive_failures_wait_longer_up_to_the_cap(reconcile: Reconcile, clock: Clock) -> None:
    runner = runner_with(reconcile, clock, rand=0.0)
    reconcile.failing = True
    waits = []
    for _ in range(9):
        failed_at = clock.now
        runner.trigger(*KEY, force_apply=True)
        # Find the retry time through due() alone, as the recheck loop sees it.
        while runner.due(RESYNC, poll_all=True) == []:
            clock.now += 0.5
        waits.append(clock.now - failed_at)
    assert waits == [2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 150.0, 150.0, 150.0]


def test_a_success_resets_the_backoff(reconcile: Reconcile, clock: Clock) -> None:
    runner = runner_with(reconcile, clock, rand=0.0)
    reconcile.failing = True
    for _ in range(5):
        runner.trigger(*KEY, force_apply=True)
    reconcile.failing = False
    runner.trigger(*KEY, force_apply=True)
    # Ready and just re-applied: the recheck leaves it alone until the resync, as for any Ready tenant.
    assert runner.due(RESYNC, poll_all=False) == []
    clock.now += RESYNC
    assert runner.due(RESYNC, poll_all=False) == [(KEY, True)]
    # The next failure starts again from the base, not from where the last streak ended.
    reconcile.failing = True
    runner.trigger(*KEY, force_apply=False)
    clock.now += 2.5
    assert runner.due(RESYNC, poll_all=False) == [(KEY, True)]


def test_a_watch_event_reconciles_a_backing_off_tenant_at_once(reconcile: Reconcile, clock: Clock) -> None:
    """A user fixing the spec must not wait out the backoff."""
    runner = runner_with(reconcile, clock)
    reconcile.failing = True
    for _ in range(6):
        runner.trigger(*KEY, force_apply=True)
    assert runner.due(RESYNC, poll_all=True) == []  # backing off (tens of seconds)
    reconcile.failing = False
    calls = len(reconcile.calls)
    runner.trigger(*KEY, force_apply=False)  # handlers.tenant_event on a spec change
    assert reconcile.calls[calls:] == [False]
    # Healthy again, and polled as before; a full apply is owed, since every forced one failed.
    assert runner.due(RESYNC, poll_all=True) == [(KEY, True)]


def test_other_tenants_are_not_held_back_by_a_failing_one(clock: Clock) -> None:
    def reconcile(namespace: str, name: str, force: bool) -> str | None:
        if name == "broken":
            raise RuntimeError("boom")
        return "Progressing"

    runner = Runner(reconcile, clock, rand=lambda: 0.5)
    runner.trigger("team-a", "broken", force_apply=True)
    runner.trigger("team-a", "rolling", force_apply=True)
    assert runner.due(RESYNC, poll_all=False) == [(("team-a", "rolling"), False)]


def test_the_jitter_comes_from_the_injected_random_source(reconcile: Reconcile, clock: Clock) -> None:
    reconcile.failing = True
    late = runner_with(reconcile, clock, rand=0.99)
    late.trigger(*KEY, force_apply=True)
    clock.now += 4.9  # rand 0.99: 2.5 + 0.99 × 2.5 = 4.975 s
    assert late.due(RESYNC, poll_all=True) == []
    clock.now += 0.1
    assert late.due(RESYNC, poll_all=True) == [(KEY, True)]


def test_a_failure_is_logged_with_its_streak_and_wait(
    reconcile: Reconcile, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = runner_with(reconcile, clock, rand=0.0)
    reconcile.failing = True
    with caplog.at_level(logging.WARNING, logger="storyteller.operator.runner"):
        runner.trigger(*KEY, force_apply=True)
        runner.trigger(*KEY, force_apply=True)
    recs = [r for r in caplog.records if r.getMessage() == "reconcile failed"]
    assert [(r.failures, r.retry_in_s) for r in recs] == [(1, 2.5), (2, 5.0)]  # type: ignore[attr-defined]
    assert all(r.tenant == "acme" and "403 Forbidden" in r.error for r in recs)  # type: ignore[attr-defined]


def test_the_default_backoff_is_the_documented_policy() -> None:
    runner = Runner(lambda namespace, name, force: "Ready")
    assert runner.backoff == Backoff(base=5.0, cap=300.0)

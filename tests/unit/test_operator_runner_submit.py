"""Watch events submit reconciles to the runner's pool (Runner.submit): the event handler returns at once,
a tenant edited without pause takes turns with the others, and a replica that no longer leads starts
none. The pool here is a queue the test runs by hand: no threads, no sleeps."""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable
from typing import Any

from storyteller_operator.runner import Runner


class ManualPool(concurrent.futures.Executor):
    """Runs submitted jobs only when the test says so, in order."""

    def __init__(self) -> None:
        self.jobs: deque[Callable[[], Any]] = deque()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.jobs.append(lambda: fn(*args, **kwargs))
        return concurrent.futures.Future()

    def run_one(self) -> None:
        self.jobs.popleft()()


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.during: Callable[[str], None] = lambda name: None

    def __call__(self, namespace: str, name: str, force: bool) -> str | None:
        self.calls.append((name, force))
        self.during(name)
        return "Ready"


def test_submit_returns_at_once_and_coalesces_until_the_reconcile_runs() -> None:
    pool, log = ManualPool(), Log()
    runner = Runner(log, executor=pool)
    runner.submit("ns", "a", force_apply=False)
    runner.submit("ns", "a", force_apply=True)  # queued already: coalesced, force kept
    assert log.calls == [] and len(pool.jobs) == 1
    pool.run_one()
    assert log.calls == [("a", True)]
    pool.run_one()  # the turn after: nothing pending, the tenant is free again
    assert not pool.jobs
    runner.submit("ns", "a", force_apply=False)
    assert len(pool.jobs) == 1


def test_a_tenant_edited_without_pause_takes_turns_with_the_others() -> None:
    pool, log = ManualPool(), Log()
    runner = Runner(log, executor=pool)
    # Every reconcile of "busy" sees another edit arrive meanwhile.
    log.during = lambda name: runner.submit("ns", "busy", force_apply=False) if name == "busy" else None
    runner.submit("ns", "busy", force_apply=False)
    runner.submit("ns", "calm", force_apply=False)
    for _ in range(3):
        pool.run_one()
    # busy's next turn went to the back of the queue, behind calm's.
    assert [name for name, _ in log.calls] == ["busy", "calm", "busy"]


def test_nothing_submitted_starts_on_a_replica_that_no_longer_leads() -> None:
    pool, log = ManualPool(), Log()
    leading = [True]
    runner = Runner(log, executor=pool)
    runner.may_run = lambda: leading[0]
    runner.submit("ns", "a", force_apply=False)
    leading[0] = False
    pool.run_one()
    assert log.calls == []
    leading[0] = True
    runner.trigger("ns", "a", force_apply=True)  # a new leader's takeover: it was left pending
    assert log.calls == [("a", True)]

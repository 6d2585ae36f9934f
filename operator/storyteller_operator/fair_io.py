"""Slow I/O on a tenant's behalf off the reconcile threads: one call in flight per tenant, a total budget.

A reconcile asks each tenant's pods for their sessions and, for canaries, Prometheus for figures: other
people's servers. A few tenants whose pods accept and never answer, or a slow Prometheus, must not hold the
few reconcile threads every tenant shares. So each such call runs on a pool of its own, at most one per
key (a tenant and what is asked) and at most `limit` in all; the reconcile waits for it at most its budget:
`wait_s`, or `slow_wait_s` for a key whose last call took longer than that (a tenant that keeps its
servers slow pays for it alone). A call that outlives the budget goes on; its answer is what the key's next
request gets, at once, while a new call starts for the one after.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("storyteller.operator.fair_io")

T = TypeVar("T")

WAIT_S = 0.5  # what a reconcile waits for one answer; pods answer in milliseconds
SLOW_WAIT_S = 0.05  # ... for a key whose last call outlived its budget
LIMIT = 64  # calls in flight in all: beyond it, keys get no answer this time


@dataclasses.dataclass
class _Slot(Generic[T]):
    future: concurrent.futures.Future[T] | None = None
    slow: bool = False  # the last call took longer than the budget (wait_s)


class FairCalls(Generic[T]):
    def __init__(
        self,
        name: str,
        *,
        limit: int = LIMIT,
        wait_s: float = WAIT_S,
        slow_wait_s: float = SLOW_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.wait_s, self.slow_wait_s, self.clock = limit, wait_s, slow_wait_s, clock
        self._pool = concurrent.futures.ThreadPoolExecutor(limit, thread_name_prefix=name)
        self._slots: dict[Hashable, _Slot[T]] = {}
        self._in_flight = 0
        self._guard = threading.Lock()

    def call(self, key: Hashable, fn: Callable[[], T]) -> tuple[bool, T | None]:
        """(True, the answer) when one is at hand within the key's budget, else (False, None).

        The answer of a call that outlived an earlier budget is at hand at once; a new call is started then
        too, for the key's next request, so a key that is always late still gets an answer every time, one
        request old. `fn` must bound its own time (its deadline frees the pool's thread)."""
        with self._guard:
            slot = self._slots.setdefault(key, _Slot())
            late = slot.future if slot.future is not None and slot.future.done() else None
            if late is not None:
                slot.future = None
            if slot.future is None and self._in_flight < self.limit:
                slot.future = self._pool.submit(self._timed, slot, fn)
                self._in_flight += 1
            future, wait = slot.future, self.slow_wait_s if slot.slow else self.wait_s
        if late is not None:
            return self._answer(key, late)
        if future is None:
            return False, None  # over the total budget: asked again next time
        try:
            future.result(wait)
        except concurrent.futures.TimeoutError:
            with self._guard:
                slot.slow = True
            return False, None
        except Exception:
            pass  # said by _answer
        with self._guard:
            if slot.future is future:
                slot.future = None
        return self._answer(key, future)

    def _timed(self, slot: _Slot[T], fn: Callable[[], T]) -> T:
        """`fn`, and whether it took longer than the budget: the key's next requests wait accordingly. It
        is in flight until it returns."""
        started = self.clock()
        try:
            return fn()
        finally:
            took = self.clock() - started
            with self._guard:
                slot.slow = took > self.wait_s
                self._in_flight -= 1

    @staticmethod
    def _answer(key: Hashable, future: concurrent.futures.Future[T]) -> tuple[bool, T | None]:
        try:
            return True, future.result()
        except Exception as err:  # fn raised: no answer this time, asked again next time
            log.warning("call failed", extra={"key": str(key), "error": f"{type(err).__name__}: {err}"[:300]})
            return False, None

    def forget(self, key: Hashable) -> None:
        with self._guard:
            self._slots.pop(key, None)

    def ready(self, key: Hashable) -> bool:
        """Whether an answer for `key` is waiting to be taken (a call that outlived its budget ended)."""
        with self._guard:
            slot = self._slots.get(key)
            return slot is not None and slot.future is not None and slot.future.done()

    def slow(self, key: Hashable) -> bool:
        """Whether `key`'s last call took longer than wait_s (its requests now wait slow_wait_s)."""
        with self._guard:
            slot = self._slots.get(key)
            return slot is not None and slot.slow

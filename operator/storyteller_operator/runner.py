"""When reconciles run: one at a time per tenant, triggers coalesced, failed and unready tenants revisited.

Every trigger (a tenant's spec change or first sight, a child Deployment's event, the periodic recheck)
calls `Runner.trigger(namespace, name)` (the caller's thread runs the reconcile) or, for watch events,
`Runner.submit` (the runner's own pool runs it, and the event handler returns at once). Either runs at
most one reconcile per tenant at a time and coalesces triggers arriving meanwhile into a single
follow-up, so a burst of Deployment events costs one extra reconcile and no thread ever waits on
another's lock.

A tenant whose reconcile raised is retried by the periodic recheck after an exponentially growing,
jittered delay (`backoff.py`), reset by a success. Watch events still reconcile it at once: a user fixing
the spec must not wait out the backoff.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable

from storyteller_operator.backoff import Backoff

log = logging.getLogger("storyteller.operator.runner")

Key = tuple[str, str]  # (namespace, name)
# Reconciles one tenant; returns its phase, or None when the tenant is gone.
ReconcileFn = Callable[[str, str, bool], str | None]


@dataclasses.dataclass
class TenantState:
    """What the runner remembers about one tenant between triggers (in memory only)."""

    running: bool = False
    pending: bool = False
    force: bool = False
    failures: int = 0  # consecutive failed reconciles; 0 once one passes
    retry_at: float = 0.0  # the clock time before which the recheck leaves a failing tenant alone
    phase: str = ""
    last_forced: float = -1e12


class Runner:
    def __init__(
        self,
        reconcile: ReconcileFn,
        clock: Callable[[], float] = time.monotonic,
        *,
        rand: Callable[[], float] = random.random,
        backoff: Backoff | None = None,
        workers: int = 8,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._reconcile = reconcile
        self._clock = clock
        self._rand = rand
        # Public: the operator may base it on its recheck interval.
        self.backoff = Backoff() if backoff is None else backoff
        self._states: dict[Key, TenantState] = {}
        self._guard = threading.Lock()
        self.workers = workers  # threads of the pool `submit` runs reconciles on
        # Whether a submitted reconcile may start (the operator: while this replica leads).
        self.may_run: Callable[[], bool] = lambda: True
        self._executor = executor  # made on first use when None

    def _state(self, key: Key) -> TenantState:
        with self._guard:
            return self._states.setdefault(key, TenantState())

    def touch(self, namespace: str, name: str) -> None:
        """Remember a tenant seen in a watch event that needs no reconcile (for the periodic recheck)."""
        self._state((namespace, name))

    def known(self) -> list[Key]:
        with self._guard:
            return list(self._states)

    def drop(self, namespace: str, name: str) -> None:
        """Forget a tenant that is gone (kept while a reconcile of it runs)."""
        with self._guard:
            st = self._states.get((namespace, name))
            if st is not None and not st.running:
                del self._states[(namespace, name)]

    def due(self, resync_seconds: float, *, poll_all: bool) -> list[tuple[Key, bool]]:
        """Tenants the periodic recheck should visit, each with whether to force a full apply.

        Ready tenants hear about their pods through Deployment events, so between full resyncs only the
        ones that are not Ready (a missing Secret, a rollout) are polled; `poll_all` (a session source is
        configured) visits every tenant, cheaply, to read its sessions. A tenant whose last reconcile failed
        is left alone until its backoff has passed, then re-applied in full.
        """
        now = self._clock()
        out = []
        with self._guard:
            for key, st in self._states.items():
                if st.failures:
                    if now >= st.retry_at:
                        out.append((key, True))
                    continue
                force = now - st.last_forced >= resync_seconds
                if force or st.phase != "Ready" or poll_all:
                    out.append((key, force))
        return out

    def submit(self, namespace: str, name: str, *, force_apply: bool) -> None:
        """Like `trigger`, without waiting: the reconcile runs on the runner's own pool. For watch events:
        their caller (kopf) queues every later event of the object until its handler returns, so a tenant
        edited without pause would hold a handler, and its events in memory, for as long as it is edited."""
        key = (namespace, name)
        st = self._claim(key, force_apply)
        if st is not None:  # else running or queued: that run reads the newest state
            self._pool().submit(self._run_once, key, st)

    def _claim(self, key: Key, force_apply: bool) -> TenantState | None:
        """Ask for a reconcile of `key`; its state when the caller is to run it (none was running)."""
        st = self._state(key)
        with self._guard:
            st.pending = True
            st.force = st.force or force_apply
            if st.running:
                return None
            st.running = True
        return st

    def _pool(self) -> concurrent.futures.Executor:
        with self._guard:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix="reconcile"
                )
            return self._executor

    def _run_once(self, key: Key, st: TenantState) -> None:
        """One reconcile of a submitted tenant, then back to the end of the pool's queue to see whether
        another was asked for meanwhile: a tenant edited without pause takes turns with the others instead
        of keeping a thread."""
        if not self.may_run():
            with self._guard:
                st.running = False  # left pending: the next trigger (a new leader's takeover) runs it
            return
        try:
            ran = self._step(key, st)
        except BaseException:
            with self._guard:
                st.running = False
            raise
        if ran:
            self._pool().submit(self._run_once, key, st)

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        """Reconcile now, or, if a reconcile of this tenant is running, once more right after it.

        Also a tenant backing off: the callers are watch events (a spec change, a child's event), and the
        recheck, which only asks for the tenants `due` returns.
        """
        key = (namespace, name)
        st = self._claim(key, force_apply)
        if st is None:
            return
        try:
            while self._step(key, st):
                pass
        except BaseException:
            with self._guard:
                st.running = False
            raise

    def _step(self, key: Key, st: TenantState) -> bool:
        """One reconcile of `key` if one is pending (True); else the tenant stops running (False), in the
        same breath, so a trigger arriving meanwhile is never left to a runner that is leaving."""
        namespace, name = key
        with self._guard:
            if not st.pending:
                st.running = False
                return False
            force, st.pending, st.force = st.force, False, False
        try:
            phase = self._reconcile(namespace, name, force)
        except Exception as err:  # retried by the periodic recheck after the backoff
            with self._guard:
                st.failures += 1
                failures = st.failures
                delay = self.backoff.delay(failures, self._rand)
                st.retry_at = self._clock() + delay
            log.warning(
                "reconcile failed",
                extra={
                    "tenant": name,
                    "namespace": namespace,
                    "error": str(err)[:500],
                    "failures": failures,
                    "retry_in_s": round(delay, 1),
                },
            )
            return True
        with self._guard:
            st.failures, st.retry_at = 0, 0.0
        if force:
            st.last_forced = self._clock()
        if phase is None:  # the tenant is gone
            with self._guard:
                st.running = False
                self._states.pop(key, None)
            return False
        st.phase = phase
        return True

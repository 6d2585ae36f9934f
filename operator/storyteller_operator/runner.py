"""When reconciles run: one at a time per tenant, triggers coalesced, failed and unready tenants revisited.

Every trigger (a tenant's spec change or first sight, a child Deployment's event, the periodic recheck)
calls `Runner.trigger(namespace, name)`, which runs at most one reconcile per tenant at a time and
coalesces triggers arriving meanwhile into a single follow-up, so a burst of Deployment events costs one
extra reconcile and no thread ever waits on another's lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

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
    failed: bool = False
    phase: str = ""
    last_forced: float = -1e12


class Runner:
    def __init__(self, reconcile: ReconcileFn, clock: Callable[[], float] = time.monotonic) -> None:
        self._reconcile = reconcile
        self._clock = clock
        self._states: dict[Key, TenantState] = {}
        self._guard = threading.Lock()

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
        ones that are not Ready (a missing Secret, a rollout, a failed apply) are polled; `poll_all` (a
        session source is configured) visits every tenant, cheaply, to read its sessions.
        """
        now = self._clock()
        out = []
        with self._guard:
            for key, st in self._states.items():
                force = st.failed or now - st.last_forced >= resync_seconds
                if force or st.phase != "Ready" or poll_all:
                    out.append((key, force))
        return out

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        """Reconcile now, or, if a reconcile of this tenant is running, once more right after it."""
        key = (namespace, name)
        st = self._state(key)
        with self._guard:
            st.pending = True
            st.force = st.force or force_apply
            if st.running:
                return
            st.running = True
        try:
            while True:
                with self._guard:
                    if not st.pending:
                        return
                    force, st.pending, st.force = st.force, False, False
                try:
                    phase = self._reconcile(namespace, name, force)
                except Exception as err:  # retried by the periodic recheck; logged with the tenant
                    st.failed = True
                    log.warning(
                        "reconcile failed",
                        extra={"tenant": name, "namespace": namespace, "error": str(err)[:500]},
                    )
                    continue
                st.failed = False
                if force:
                    st.last_forced = self._clock()
                if phase is None:
                    with self._guard:
                        st.running = False
                        self._states.pop(key, None)
                    return
                st.phase = phase
        finally:
            with self._guard:
                st.running = False

"""An AgentServer whose capacity is counted in sessions, including the ones being launched.

While a job is accepted but its process not yet running, the framework estimates its load as
`load_threshold / num_idle_processes`, an estimate meant for CPU-style loads: with
`idleProcesses: 0` a single launching job marks the pod full, with 2 two launching jobs do, whatever
`sessionsPerWorker` says. LiveKit does not retry a dispatch that finds no available worker, so a
call arriving in that window is lost (seen on livekit-server 1.9.12). Here a launching job weighs
exactly one session slot, like a running one.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentServer

from .capacity import LOAD_THRESHOLD, worker_load


class SessionCountingServer(AgentServer):
    def __init__(self, *, sessions_per_worker: int, **kwargs: Any) -> None:
        super().__init__(load_threshold=LOAD_THRESHOLD, **kwargs)
        self.sessions_per_worker = sessions_per_worker
        self.load_fnc = self._session_load

    def _session_load(self) -> float:
        return worker_load(len(self.active_jobs), self.sessions_per_worker)

    def _get_effective_load(self) -> float:
        # Running sessions plus the ones accepted and still launching (the framework's own counter).
        launching = getattr(self, "_reserved_slots", 0)
        return worker_load(len(self.active_jobs) + launching, self.sessions_per_worker)

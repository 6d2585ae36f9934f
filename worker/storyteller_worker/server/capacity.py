"""How full a worker is: sessions, not CPU, including the sessions still being launched.

Voice sessions are mostly waiting on the network, so CPU readings say little about how many more a
pod can take (and spikes mark workers full and lose calls). A pod takes exactly
`sessionsPerWorker` sessions: load is the fraction of those slots in use, and the worker reports
itself full at LOAD_THRESHOLD, that is when every slot is taken.

While a job is accepted but its process not yet running, the framework estimates its load as
`load_threshold / num_idle_processes`, an estimate meant for CPU-style loads: with
`idleProcesses: 0` a single launching job marks the pod full, with 2 two launching jobs do, whatever
`sessionsPerWorker` says. LiveKit does not retry a dispatch that finds no available worker, so a
call arriving in that window is lost (seen on livekit-server 1.9.12). `SessionCountingServer` makes a
launching job weigh exactly one session slot, like a running one.

What the worker reports to LiveKit is that share scaled to `REPORTED_FULL_LOAD`. livekit-server 1.11+
offers a job only to a node whose available workers report less than its `agents.target_load` (default
0.7; `JobRequestAffinity` bids the sum of target - load) and drops the dispatch when every bid is 0: a
pod with 3 of 4 slots taken (0.75) lost its fourth call on a default server. At half the share, every
free slot stays below any target load from 0.5 up.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentServer

from .. import framework

LOAD_THRESHOLD = 1.0  # of worker_load: every slot taken
REPORTED_FULL_LOAD = 0.5  # the load reported to LiveKit for a full pod (see the module's docstring)


def worker_load(active_sessions: int, sessions_per_worker: int) -> float:
    """Fraction of the pod's session slots in use, capped at 1.0."""
    if sessions_per_worker < 1:
        raise ValueError("sessions_per_worker must be at least 1")
    return min(active_sessions / sessions_per_worker, 1.0)


def is_full(active_sessions: int, sessions_per_worker: int) -> bool:
    """True when no session slot is left: the worker refuses further jobs."""
    return worker_load(active_sessions, sessions_per_worker) >= LOAD_THRESHOLD


class SessionCountingServer(AgentServer):
    """An AgentServer whose load is its share of `sessions_per_worker` slots in use."""

    def __init__(self, *, sessions_per_worker: int, **kwargs: Any) -> None:
        super().__init__(load_threshold=LOAD_THRESHOLD * REPORTED_FULL_LOAD, **kwargs)
        self.sessions_per_worker = sessions_per_worker
        self.load_fnc = self.session_load
        framework.replace_effective_load(self, self.effective_load)

    def session_load(self) -> float:
        """Running sessions: the load the framework reports to LiveKit (scaled)."""
        return worker_load(len(self.active_jobs), self.sessions_per_worker) * REPORTED_FULL_LOAD

    def effective_load(self) -> float:
        """Running sessions plus the ones accepted and still launching: what decides "full" (scaled)."""
        launching = framework.launching_jobs(self)
        return worker_load(len(self.active_jobs) + launching, self.sessions_per_worker) * REPORTED_FULL_LOAD

"""How full a worker is: sessions, not CPU.

Voice sessions are mostly waiting on the network, so CPU readings say little about how many more a
pod can take (and spikes mark workers full and lose calls). A pod takes exactly
`sessionsPerWorker` sessions: load is the fraction of those slots in use, and the worker reports
itself full at LOAD_THRESHOLD, that is when every slot is taken.
"""

from __future__ import annotations

LOAD_THRESHOLD = 1.0


def worker_load(active_sessions: int, sessions_per_worker: int) -> float:
    """Fraction of the pod's session slots in use, capped at 1.0."""
    if sessions_per_worker < 1:
        raise ValueError("sessions_per_worker must be at least 1")
    return min(active_sessions / sessions_per_worker, 1.0)


def is_full(active_sessions: int, sessions_per_worker: int) -> bool:
    """True when no session slot is left: the worker refuses further jobs."""
    return worker_load(active_sessions, sessions_per_worker) >= LOAD_THRESHOLD

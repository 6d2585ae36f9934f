"""Pure: the worker container's default resources, and the memory each job process may use.

The sizing rule (README, "Sizing a worker pod"): LiveKit's guidance for voice agents is about 4 cores and
8 GB per 25 concurrent sessions, so 160m CPU per session slot. Memory follows what `bench/memory.py`
measures (smaps_rollup PSS). With the end-of-turn model (spec.turnDetection: model), the worker's main
process, resource tracker and forkserver take about 310Mi together, each prewarmed job process about
145Mi, and each busy one 150-170Mi (a session's process takes an idle one's place and the pool starts
another): 320Mi, 160Mi per idle process and 192Mi per session slot. Without it (vad, stt: its ~245 MiB
of weights are not loaded), about 210Mi, 72Mi and 90-100Mi: 224Mi, 96Mi and 128Mi. LiveKit's 320Mi per
session is for agents in general; ours shares its libraries with the forkserver. Requests cover that
plan, so a pod is never BestEffort (first to be evicted, with no grace period); the memory limit
leaves half again as much headroom; there is no CPU limit (throttling a speech pipeline is heard as
stutter). Anything the tenant sets in spec.worker.resources wins, key by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from storyteller_api.spec import TenantSpec, TurnDetection

MI = 1024 * 1024
CPU_BASE_MILLI = 100
CPU_PER_SESSION_MILLI = 160


@dataclass(frozen=True)
class MemoryPlan:
    """MiB a pod's memory request plans for: the processes every pod runs, each idle job process, each
    session slot."""

    base: int
    per_idle_process: int
    per_session: int


_WITHOUT_THE_MODEL = MemoryPlan(base=224, per_idle_process=96, per_session=128)
# By spec.turnDetection: whether the pod holds the end-of-turn model.
MEMORY_PLANS: dict[TurnDetection, MemoryPlan] = {
    "model": MemoryPlan(base=320, per_idle_process=160, per_session=192),
    "vad": _WITHOUT_THE_MODEL,
    "stt": _WITHOUT_THE_MODEL,
}
MEMORY_LIMIT_HEADROOM = Decimal("1.5")


def _bytes(quantity: str) -> Decimal:
    parsed: Decimal = parse_quantity(quantity)  # type: ignore[no-untyped-call]
    return parsed


def _mi(n: int | Decimal) -> str:
    return f"{int(n)}Mi"


def default_requests(spec: TenantSpec) -> dict[str, str]:
    pool, plan = spec.pool, MEMORY_PLANS[spec.turn_detection]
    cpu = CPU_BASE_MILLI + CPU_PER_SESSION_MILLI * pool.sessions_per_worker
    memory = (
        plan.base + plan.per_idle_process * pool.idle_processes + plan.per_session * pool.sessions_per_worker
    )
    return {"cpu": f"{cpu}m", "memory": _mi(memory)}


def container_resources(spec: TenantSpec) -> dict[str, Any]:
    """requests and limits of the worker container: the defaults, overridden key by key by the spec's."""
    given = spec.worker.resources
    requests: dict[str, int | str] = {**default_requests(spec), **((given and given.requests) or {})}
    limits: dict[str, int | str]
    if given is not None and given.limits is not None:
        limits = dict(given.limits)
    else:
        # Half again the memory request (the tenant's own request when it set one), never below it.
        memory = _bytes(str(requests["memory"])) * MEMORY_LIMIT_HEADROOM / MI
        limits = {"memory": _mi(memory.to_integral_value())}
    return {"requests": requests, "limits": limits}


def job_memory_limit_mb(spec: TenantSpec, resources: dict[str, Any]) -> int:
    """What one job process may use (MiB) before the worker kills it: its share of the pod's memory limit
    once the main process, the forkserver and the idle processes are counted, and never less than one
    session's plan. 0 (no limit) without a memory limit."""
    limit = resources.get("limits", {}).get("memory")
    if limit is None:
        return 0
    pool, plan = spec.pool, MEMORY_PLANS[spec.turn_detection]
    base = (plan.base + plan.per_idle_process * pool.idle_processes) * MI
    share = (_bytes(str(limit)) - base) / pool.sessions_per_worker / MI
    return max(int(share), plan.per_session)

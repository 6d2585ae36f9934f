"""The LiveKit AgentServer of one tenant: prewarmed job processes, explicit dispatch, capacity, drain.

Job processes are separate processes (forkserver), so nothing here is shared with them in memory:
each process loads the tenant config from $STORYTELLER_CONFIG and the Silero VAD once, in `prewarm`,
before any job is assigned to it; `agents.entrypoint` then runs each conversation.
"""

from __future__ import annotations

import logging
import os

from livekit.agents import JobRequest

from storyteller_api import contract
from storyteller_api.spec import WorkerConfig

from .. import framework
from ..agents.entrypoint import entrypoint
from ..telemetry.metrics import record_capacity
from .capacity import SessionCountingServer, is_full
from .prewarm import PRELOAD_MODULE, prewarm
from .readiness import serve_readiness

logger = logging.getLogger("storyteller.worker.server")

HTTP_PORT = contract.HEALTH_PORT  # health (`GET /`) and status (`GET /worker`), probed by the kubelet


def build_server(
    tenant: WorkerConfig,
    *,
    http_port: int = HTTP_PORT,
    ready_port: int | None = None,
    job_memory_limit_mb: int = 0,
) -> SessionCountingServer:
    """The tenant's worker: registered under its agent name, at most `sessionsPerWorker` sessions.

    `ready_port`: where `GET /ready` answers (the pod's readiness probe); None serves none.
    `job_memory_limit_mb`: a job process above it is killed (its session ends, the pod's others go on);
    0: no limit. The framework warns at 80% of it.
    """
    sessions_per_worker = tenant.pool.sessions_per_worker
    if tenant.turn_detection != "model":
        # Nothing uses the end-of-turn model: keep its weights (about 245 MiB) out of the pod.
        framework.skip_local_inference_preload(os.environ)
    memory: dict[str, float] = {}
    if job_memory_limit_mb:
        memory = {"job_memory_limit_mb": job_memory_limit_mb, "job_memory_warn_mb": job_memory_limit_mb * 0.8}
    server = SessionCountingServer(
        sessions_per_worker=sessions_per_worker,
        ws_url=tenant.livekit.url,  # key and secret come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET
        port=http_port,
        num_idle_processes=tenant.pool.idle_processes,
        drain_timeout=tenant.pool.drain_timeout_seconds,
        prometheus_port=tenant.observability.metrics_port,
        setup_fnc=prewarm,
        preload_modules=[PRELOAD_MODULE],
        log_level=tenant.observability.log_level.upper(),
        **memory,
    )

    async def on_request(request: JobRequest) -> None:
        # The load threshold already marks the worker full; this also closes the window between
        # two load reports, so a burst can never put more than sessionsPerWorker on one pod.
        if is_full(len(server.active_jobs), sessions_per_worker):
            logger.info("job refused: worker full", extra={"job_id": request.id})
            await request.reject(terminate=False)  # let the server offer it to another worker
            return
        await request.accept()

    server.rtc_session(entrypoint, agent_name=tenant.agent_name, on_request=on_request)
    # The main process exports the pod's series too, so they exist whatever its job processes do (a
    # killed one is reaped). Not before this event: the framework empties the metrics directory first.
    server.on("worker_started", lambda: record_capacity(tenant))
    if ready_port is not None:
        serve_readiness(server, port=ready_port, health_port=http_port)
    return server

"""The LiveKit AgentServer of one tenant: prewarmed job processes, explicit dispatch, capacity, drain.

Job processes are separate processes (forkserver), so nothing here is shared with them in memory:
each process loads the tenant config from $STORYTELLER_CONFIG and the Silero VAD once, in `prewarm`,
before any job is assigned to it.
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import JobContext, JobProcess, JobRequest
from livekit.agents.voice import room_io
from livekit.plugins import silero

from .agent_server import SessionCountingServer
from .agents import IntroAgent
from .capacity import is_full
from .config import TenantConfig, load_tenant_config
from .metrics import SessionMetrics, record_capacity
from .providers import SessionModels, build_session_models
from .readiness import serve_readiness
from .session import build_session
from .tracing import install_tracing
from .warmup import warm_process

logger = logging.getLogger("storyteller.worker.server")

HTTP_PORT = 8081  # health (`GET /`) and status (`GET /worker`), probed by the kubelet


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before it is idle-ready: what a caller should not wait for.

    A job process serves one session, so the plugin clients built here are that session's own.
    """
    tenant = load_tenant_config()
    warm_process()
    vad = silero.VAD.load()
    proc.userdata.update(tenant=tenant, vad=vad, models=build_session_models(tenant, vad))
    # Telemetry is per process: the tracer provider (framework hook) and this pod's capacity gauge.
    proc.userdata["tracer_provider"] = install_tracing(tenant)
    record_capacity(tenant)


async def entrypoint(ctx: JobContext) -> None:
    """One conversation: the storyteller flow in the dispatched room."""
    tenant: TenantConfig = ctx.proc.userdata["tenant"]
    models: SessionModels = ctx.proc.userdata["models"]
    session = build_session(tenant, vad=ctx.proc.userdata["vad"], models=models.intro)
    session_metrics = SessionMetrics(tenant)
    session_metrics.watch_models(models)
    session_metrics.attach(session)

    async def log_usage() -> None:
        usage = [u.model_dump(exclude_none=True) for u in session.usage.model_usage]
        logger.info("session usage", extra={"tenant": tenant.tenant, "usage": usage})

    ctx.add_shutdown_callback(log_usage)
    if (provider := ctx.proc.userdata.get("tracer_provider")) is not None:
        # The process exits after the job: send the session's last spans before it does.
        ctx.add_shutdown_callback(lambda: asyncio.to_thread(provider.force_flush))
    await session.start(
        agent=IntroAgent(tenant, story_models=models.story),
        room=ctx.room,
        room_options=room_io.RoomOptions(text_output=True),  # transcripts to the room, as the seed
    )


def build_server(
    tenant: TenantConfig, *, http_port: int = HTTP_PORT, ready_port: int | None = None
) -> SessionCountingServer:
    """The tenant's worker: registered under its agent name, at most `sessionsPerWorker` sessions.

    `ready_port`: where `GET /ready` answers (the pod's readiness probe); None serves none.
    """
    sessions_per_worker = tenant.pool.sessions_per_worker
    server = SessionCountingServer(
        sessions_per_worker=sessions_per_worker,
        ws_url=tenant.livekit.url,  # key and secret come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET
        port=http_port,
        num_idle_processes=tenant.pool.idle_processes,
        drain_timeout=tenant.pool.drain_timeout_seconds,
        prometheus_port=tenant.observability.metrics_port,
        setup_fnc=prewarm,
        log_level=tenant.observability.log_level.upper(),
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

"""The job entrypoint: one conversation, the storyteller flow in the dispatched room.

It runs in a job process prepared by `server.prewarm.prewarm`, whose `proc.userdata` holds the tenant
config (`tenant`), the Silero VAD (`vad`) and both phases' models (`models`); the process's tracer
provider, if any, sends its spans as the process exits (`telemetry.tracing.install_tracing`).
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import JobContext
from livekit.agents.voice import room_io

from storyteller_api.spec import WorkerConfig

from ..providers.phases import SessionModels
from ..telemetry.session_metrics import SessionMetrics
from .intro import IntroAgent
from .session import build_session

# The entrypoint was the server module's; its log lines keep that logger.
logger = logging.getLogger("storyteller.worker.server")


async def entrypoint(ctx: JobContext) -> None:
    """One conversation: the storyteller flow in the dispatched room."""
    # Join the room while the session is built and started (the session's own connect then finds it
    # joined): the join is the longest step between the job's start and the greeting.
    joining = asyncio.create_task(ctx.connect(), name="storyteller_connect")
    tenant: WorkerConfig = ctx.proc.userdata["tenant"]
    models: SessionModels = ctx.proc.userdata["models"]
    session = build_session(tenant, vad=ctx.proc.userdata["vad"], models=models.intro)
    session_metrics = SessionMetrics(tenant)
    session_metrics.watch_models(models)
    session_metrics.attach(session)

    async def log_usage() -> None:
        usage = [u.model_dump(exclude_none=True) for u in session.usage.model_usage]
        # Per model (the framework's totals), and per agent: which phase spent what.
        by_agent = session_metrics.usage_by_agent
        logger.info(
            "session usage", extra={"tenant": tenant.tenant, "usage": usage, "usage_by_agent": by_agent}
        )

    ctx.add_shutdown_callback(log_usage)
    await session.start(
        agent=IntroAgent(tenant, story_models=models.story),
        room=ctx.room,
        room_options=room_io.RoomOptions(text_output=True),  # transcripts to the room, as the seed
    )
    await joining

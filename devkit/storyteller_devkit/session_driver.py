"""A job process stand-in: runs storyteller sessions the way the worker's job process does, offline.

It calls the worker's own `prewarm` (tenant config, VAD, models, tracer provider, capacity gauge) and
wires each session exactly as `entrypoint` does (`SessionMetrics(...).attach(session)`), then drives
the conversation in text mode through the real plugins against the local model server: greeting,
name and place (handoff to StoryAgent), "no thanks" (goodbye and hang-up). The agent's replies are
played to a sink that accepts audio at once, so the real TTS plugin synthesizes them.

Metrics go to $PROMETHEUS_MULTIPROC_DIR like a job process's; traces to the OTLP endpoint in the
OTEL_* variables. Several drivers can run at once against one directory, as job processes do.

    python -m storyteller_devkit.session_driver --sessions 3

Needs STORYTELLER_CONFIG, the provider keys and LIVEKIT_URL/KEY/SECRET (for the hang-up) in the
environment. `--no-telemetry` runs the same sessions with no collector and no tracer (for the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any, cast

from livekit import rtc
from livekit.agents.testing import fake_job_context
from livekit.agents.utils import http_context
from livekit.agents.voice import io

logger = logging.getLogger("storyteller.devkit.session_driver")

USER_TURNS = ("Hi! My name is Ada and I live in Lisbon.", "No thanks, that is all.")


class InstantAudioSink(io.AudioOutput):
    """An audio output that "plays" every segment the moment it is flushed, so TTS really runs."""

    def __init__(self) -> None:
        super().__init__(label="instant-sink", capabilities=io.AudioOutputCapabilities(pause=False))
        self._pushed = 0.0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        position, self._pushed = self._pushed, 0.0
        self.on_playback_finished(playback_position=position, interrupted=False)

    def clear_buffer(self) -> None:
        pass


class _Proc:
    """What `prewarm` uses of a JobProcess."""

    def __init__(self) -> None:
        self.userdata: dict[str, Any] = {}


async def run_session(proc: _Proc, *, telemetry: bool) -> None:
    from storyteller_worker.agents.intro import IntroAgent
    from storyteller_worker.agents.session import build_session
    from storyteller_worker.telemetry.session_metrics import SessionMetrics

    tenant = proc.userdata["tenant"]
    models = proc.userdata["models"]
    with fake_job_context(room=rtc.Room()):
        session = build_session(tenant, vad=None, models=models.intro)
        if telemetry:
            SessionMetrics(tenant).attach(session)
        closed = asyncio.Event()
        session.on("close", lambda _ev: closed.set())
        session.output.audio = InstantAudioSink()
        await session.start(IntroAgent(tenant, story_models=models.story))
        for text in USER_TURNS:
            await session.run(user_input=text)
        # story_finished ends the session itself; waiting for it also waits for the close metrics.
        await asyncio.wait_for(closed.wait(), timeout=30)


async def main_async(sessions: int, telemetry: bool) -> None:
    from storyteller_worker.server.prewarm import prewarm

    proc = _Proc()
    if telemetry:
        prewarm(cast(Any, proc))  # a stand-in for the JobProcess: only .userdata is used
    else:
        from livekit.plugins import silero

        from storyteller_worker.config import load_tenant_config
        from storyteller_worker.providers.phases import build_session_models

        tenant = load_tenant_config()
        vad = silero.VAD.load()
        proc.userdata.update(tenant=tenant, vad=vad, models=build_session_models(tenant, vad))
    async with http_context.open():
        for _ in range(sessions):
            await run_session(proc, telemetry=telemetry)
    if (provider := proc.userdata.get("tracer_provider")) is not None:
        provider.shutdown()  # flushes the batch processor: the process exits right after


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--no-telemetry", action="store_true", help="no metrics collector, no tracer")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("DRIVER_LOG_LEVEL", "WARNING"))
    started = time.process_time()
    asyncio.run(main_async(args.sessions, telemetry=not args.no_telemetry))
    # The bench reads this line: CPU time of the sessions in this process.
    print(f"cpu_seconds={time.process_time() - started:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Dispatch latency: request → agent joins → first audio frame, prewarmed pool vs no idle processes.

Two workers of the same tenant shape run side by side on one local `livekit-server --dev`: "warm"
keeps `idleProcesses` job processes ready (VAD, config and model clients loaded), "cold" has
`idleProcesses: 0` and starts a process per call. Sessions alternate between them, one at a time,
in the same run. The caller is a real participant (the `livekit` RTC SDK) in a fresh room each time;
models are the local scripted server (TTS = espeak-ng), so provider latency is not in the figures.
Prints medians, p95 and the ratio; asserts nothing.

    .venv/bin/python bench/dispatch.py [--sessions 50] [--idle 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from livekit import api

from storyteller_devkit.caller import Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess


async def one_call(livekit: LiveKitServer, agent_name: str) -> tuple[float, float]:
    """Seconds from the dispatch request to the agent joining, and to its first voiced audio frame."""
    room = f"bench-{uuid.uuid4().hex[:8]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()  # the caller is already there, as someone who just called in
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        started = time.perf_counter()
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
        try:
            await caller.wait_for("the agent's first audio", lambda: caller.first_voice_at is not None, 60)
        finally:
            await caller.leave()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert caller.agent_joined_at is not None and caller.first_voice_at is not None
    return caller.agent_joined_at - started, caller.first_voice_at - started


def summary(xs: list[float]) -> tuple[float, float]:
    ordered = sorted(xs)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def main(sessions: int, idle: int) -> None:
    models = ThreadedServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="storyteller-bench-"))
    with running_livekit_server() as livekit:
        workers = {}
        for name, idle_processes in (("warm", idle), ("cold", 0)):
            config = tenant_dict(
                models.base_url,
                livekit_url=livekit.url,
                tenant=name,
                agentName=f"{name}-storyteller",
                pool={"sessionsPerWorker": 4, "idleProcesses": idle_processes},
                observability={"metricsPort": free_port()},
            )
            workers[name] = WorkerProcess(config, livekit, workdir).start()
        try:
            for worker in workers.values():
                worker.wait_registered()
            for name, worker in workers.items():  # the warm pool must be ready before the first call
                if name == "warm":
                    worker.wait_log('"process initialized"', 60)
            joins: dict[str, list[float]] = {name: [] for name in workers}
            voices: dict[str, list[float]] = {name: [] for name in workers}
            await one_call(livekit, "warm-storyteller")  # warm-up of the caller's side
            for i in range(sessions):
                for name in ("warm", "cold") if i % 2 == 0 else ("cold", "warm"):
                    join, voice = await one_call(livekit, f"{name}-storyteller")
                    joins[name].append(join)
                    voices[name].append(voice)
                    if name == "warm":
                        await asyncio.sleep(0.5)  # let the pool refill as it would between real calls
        finally:
            for worker in workers.values():
                worker.stop()
    models.stop()

    print(f"dispatch → agent joined / first audio frame, {sessions} sessions each, local livekit-server")
    for name in workers:
        (jm, jp), (vm, vp) = summary(joins[name]), summary(voices[name])
        print(
            f"  {name:4s} (idleProcesses={idle if name == 'warm' else 0}): joined median {jm * 1000:6.0f} ms "
            f"p95 {jp * 1000:6.0f} ms | first audio median {vm * 1000:6.0f} ms p95 {vp * 1000:6.0f} ms"
        )
    ratio_join = summary(joins["cold"])[0] / summary(joins["warm"])[0]
    ratio_voice = summary(voices["cold"])[0] / summary(voices["warm"])[0]
    print(f"  cold/warm median ratio: joined {ratio_join:.2f}x, first audio {ratio_voice:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--idle", type=int, default=2, help="idle processes of the warm worker")
    logging.basicConfig(level=logging.ERROR)
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.idle))

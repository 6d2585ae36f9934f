"""Tenant isolation on one LiveKit server, a worker that drains on SIGTERM, and a job process killed
mid-call whose session stops being counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from livekit import api
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess
from storyteller_worker.server.capacity import REPORTED_FULL_LOAD


@asynccontextmanager
async def dispatched_call(livekit: LiveKitServer, agent_name: str) -> AsyncIterator[tuple[Caller, str]]:
    """Dispatch `agent_name` into a new room and join it as the caller."""
    room = f"call-{uuid.uuid4().hex[:8]}"
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()
    try:
        yield caller, room
    finally:
        await caller.leave()


def _took_job(worker: WorkerProcess, room: str) -> bool:
    return any('"received job request"' in line and room in line for line in worker.log().splitlines())


async def test_each_dispatch_reaches_only_its_own_tenants_workers(
    livekit_server: LiveKitServer,
    model_server: ThreadedServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    other_models = ThreadedServer().start()  # each tenant on its own model endpoint
    try:
        acme = start_worker(model_server.base_url, tenant="acme")
        globex = start_worker(other_models.base_url, tenant="globex")

        for agent_name, own, other, own_models in (
            ("acme-storyteller", acme, globex, model_server),
            ("globex-storyteller", globex, acme, other_models),
        ):
            async with dispatched_call(livekit_server, agent_name) as (caller, room):
                await caller.wait_for(f"{agent_name} to join", lambda: bool(caller.agent_identity), 30)
                await caller.wait_for(f"{agent_name}'s greeting", lambda: caller.voiced_frames >= 20, 30)
                assert caller.agent_name == agent_name
                assert _took_job(own, room) and not _took_job(other, room)
                assert own_models.recorder.chat_requests, f"{agent_name} did not use its own models"
        assert model_server.recorder.chat_requests and other_models.recorder.chat_requests
    finally:
        other_models.stop()


async def test_every_slot_of_a_pod_takes_a_call_on_a_default_livekit_server(
    livekit_server: LiveKitServer,
    model_server: ThreadedServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # livekit-server 1.11+ offers no job to workers at or above its target load (0.7 by default, as here):
    # had the pod reported 3 of 4 slots as 0.75, the fourth call would have been dropped.
    worker = start_worker(model_server.base_url, pool={"sessionsPerWorker": 4, "idleProcesses": 2})
    three = 0.75 * REPORTED_FULL_LOAD
    async with contextlib.AsyncExitStack() as calls:
        for n in range(1, 5):
            if n == 4:  # the server has the load of 3 calls: the worker sends it as it computes it
                await asyncio.to_thread(worker.wait_until, lambda: _reported_load(worker) == three, "3/4", 30)
            caller, _room = await calls.enter_async_context(
                dispatched_call(livekit_server, "acme-storyteller")
            )
            await caller.wait_for(f"an agent in call {n} of 4", lambda c=caller: bool(c.agent_identity), 30)


def _reported_load(worker: WorkerProcess) -> float | None:
    """The load the worker last reported to LiveKit (the framework's gauge, set as it sends it)."""
    for family in text_string_to_metric_families(worker.metrics()):
        for sample in family.samples:
            if sample.name == "lk_agents_worker_load":
                return sample.value
    return None


async def test_sigterm_drains_the_running_session_and_refuses_new_ones(
    livekit_server: LiveKitServer,
    model_server: ThreadedServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Its caller's turns end on pauses (spec.turnDetection: vad; the voice session test has the model's).
    draining = start_worker(model_server.base_url, turnDetection="vad")

    async with dispatched_call(livekit_server, "acme-storyteller") as (caller, room):
        await caller.wait_for(
            "the greeting to end",
            lambda: caller.agent_states[-1:] == ["listening"] and "speaking" in caller.agent_states,
            30,
        )
        assert draining.ready() == (200, "ready")
        draining.sigterm()
        draining.wait_log('"draining worker"')
        # The kubelet's readiness probe sees it at once: a draining pod takes no new calls.
        status, reason = draining.ready()
        assert (status, "draining" in reason) == (503, True), (status, reason)

        # A job dispatched now goes to another worker: the draining one reports itself full.
        fresh = start_worker(model_server.base_url)
        async with dispatched_call(livekit_server, "acme-storyteller") as (second, second_room):
            await second.wait_for("an agent in the second room", lambda: bool(second.agent_identity), 30)
        assert _took_job(fresh, second_room) and not _took_job(draining, second_room)

        # The running conversation goes on to its natural end while the worker drains.
        await caller.say(CALLER_SCRIPT[0])
        await caller.wait_for("the story", lambda: "Once upon a time" in caller.transcript_text(), 60)
        await caller.wait_for(
            "the story to pause",
            lambda: caller.agent_states[-1:] == ["listening"] and caller.agent_states.count("speaking") >= 2,
            60,
        )
        assert draining.proc is not None and draining.proc.poll() is None, "the worker did not wait"
        try:
            await caller.say_until_hang_up(CALLER_SCRIPT[1])
        except AssertionError as err:  # what the caller's speech came back as tells a mishearing apart
            raise AssertionError(f"{err}; speech-to-text heard {model_server.recorder.transcribed}") from None

    assert "Goodbye, Ada" in caller.transcript_text()
    assert draining.wait_exit(timeout=60) == 0
    assert _took_job(draining, room)


def test_a_worker_is_not_ready_until_it_has_registered(
    livekit_server: LiveKitServer, model_server: ThreadedServer, tmp_path: Path
) -> None:
    """Health (8081) answers before registration; readiness must not: LiveKit drops a dispatch that
    finds no worker, so a pod Ready too early loses calls."""
    # A port held open without listening: connections are refused, and no other process can take it.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    unreachable = f"ws://127.0.0.1:{held.getsockname()[1]}"  # the worker never registers
    config = tenant_dict(
        model_server.base_url, livekit_url=unreachable, observability={"metricsPort": free_port()}
    )
    worker = WorkerProcess(config, livekit_server, tmp_path).start()
    try:
        worker.wait_log("readiness endpoint listening", 60)
        assert worker.ready() == (503, "not registered with LiveKit yet")
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/", timeout=5) as resp:
            assert resp.status == 200, "the framework's health answers all the same"
    finally:
        worker.stop()
        held.close()

    registered = WorkerProcess({**config, "livekit": {**config["livekit"], "url": livekit_server.url}},
                               livekit_server, tmp_path).start()  # fmt: skip
    try:
        registered.wait_registered()
        assert registered.ready() == (200, "ready")
    finally:
        registered.stop()


def _sessions_active(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "storyteller_sessions_active":
            return sum(sample.value for sample in family.samples)
    raise AssertionError("storyteller_sessions_active is not exported")


def _pids_counting_a_session(multiproc_dir: Path) -> list[int]:
    """Processes whose live gauge file holds a running session (a job process's)."""
    pids = []
    for path in multiproc_dir.glob("gauge_livesum_*.db"):
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[0] == "storyteller_sessions_active" and value > 0:
                pids.append(int(path.stem.rsplit("_", 1)[1]))
    return pids


async def test_a_job_process_killed_mid_call_stops_counting_its_session(
    livekit_server: LiveKitServer,
    model_server: ThreadedServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(model_server.base_url)
    async with dispatched_call(livekit_server, "acme-storyteller") as (caller, _room):
        await caller.wait_for("the greeting", lambda: caller.voiced_frames >= 20, 30)
        assert _sessions_active(worker.metrics()) == 1
        (job_pid,) = _pids_counting_a_session(worker.multiproc_dir)
        assert worker.proc is not None and job_pid != worker.proc.pid
        os.kill(job_pid, signal.SIGKILL)  # an OOM kill: the session never gets to decrement its gauge
        await asyncio.to_thread(
            worker.wait_until,
            lambda: _sessions_active(worker.metrics()) == 0,
            "the killed job's session to leave storyteller_sessions_active",
            30,
        )
    assert worker.proc.poll() is None  # the worker itself lives on
    assert '"dropped the live gauges of exited job processes"' in worker.log()

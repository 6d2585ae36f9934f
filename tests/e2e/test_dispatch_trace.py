"""A dispatched job's trace: its root span, with the dispatch timeline, reaches the collector.

The framework stamps each dispatch stage (job received, accepted, assigned, process assigned, entrypoint
started) on the job's root span, `job_entrypoint`, and ends that span only after the session's shutdown
callbacks, as the job process exits. `bench/dispatch.py` reads the timeline from these spans.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from livekit import api

from storyteller_devkit.caller import Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.otlp_receiver import OtlpReceiver
from storyteller_devkit.worker_process import WorkerProcess

STAGES = ("job_received", "job_accepted", "job_assigned", "process_assigned", "entrypoint_started")


async def test_the_jobs_root_span_carries_the_dispatch_timeline(
    livekit_server: LiveKitServer,
    model_server: ThreadedServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    receiver = OtlpReceiver().start()
    try:
        start_worker(
            model_server.base_url,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
            observability={"tracing": {"sampleRatio": 1.0}},
        )
        room = f"trace-{uuid.uuid4().hex[:8]}"
        caller = Caller(
            livekit_server.url, caller_token(livekit_server.api_key, livekit_server.api_secret, room)
        )
        await caller.join()
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            requested = time.time()
            dispatch = await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name="acme-storyteller", room=room)
            )
            try:
                await caller.wait_for("the greeting's audio", lambda: caller.voiced_frames >= 10, 30)
            finally:
                await caller.leave()
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))

        # Sent as the job process exits, after the session has closed.
        (job,) = receiver.wait_for("job_entrypoint", 60)
        assert job.attributes["lk.dispatch_id"] == dispatch.id
        assert job.attributes["lk.agent_name"] == "acme-storyteller"
        instants = [job.event_times[stage] for stage in STAGES]
        assert instants == sorted(instants), job.event_times
        assert requested < instants[0] and instants[-1] < job.end_s
        # The room's join and the shutdown belong to the same trace.
        traced = {s.name for s in receiver.spans if s.trace_id == job.trace_id}
        assert {"room_connect", "agent_session", "job_shutdown"} <= traced, traced
    finally:
        receiver.stop()


def test_job_processes_share_the_jobs_code_imported_once_in_the_forkserver(
    model_server: ThreadedServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    # The forkserver skips a preload module that fails to import without a word: each job process says
    # whether it inherited `server.preload` (12-15 MiB of its own memory less when it did).
    worker = start_worker(model_server.base_url, pool={"sessionsPerWorker": 2, "idleProcesses": 2})
    worker.wait_until(lambda: worker.log().count('"process initialized"') >= 2, "2 idle processes", 60)
    warming = [json.loads(line) for line in worker.log().splitlines() if '"job process warming"' in line]
    assert len(warming) >= 2 and all(w["shared_from_forkserver"] is True for w in warming), warming

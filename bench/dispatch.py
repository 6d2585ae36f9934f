"""Dispatch latency, phase by phase: request → job offered → accepted → assigned → job process → room
joined → track → first audio, for a prewarmed pool and for one with no idle process.

Two workers of the same tenant shape run side by side on a local `livekit-server --dev`: "warm" keeps
`idleProcesses` job processes ready (VAD, config and model clients loaded), "cold" has `idleProcesses: 0`
and starts a process per call. Calls alternate between them, one at a time. The caller is a real
participant (the `livekit` RTC SDK) already in a fresh room; models are the local scripted server (TTS =
espeak-ng), so no provider latency is in the figures.

Where each instant comes from, all on this machine's clock: the dispatch request, the agent joining, its
audio track and its first voiced audio frame from the caller; job received, accepted, assigned, process
assigned and entrypoint started from the framework's dispatch timeline on the job's root span
(`job_entrypoint`, exported over OTLP to a local receiver); room connected from the `room_connect` span.

`--before CHECKOUT` (and/or `--before-livekit BINARY`) also runs another tree's worker (on another
livekit-server build), calls alternating with this one's, and prints both side by side. Prints medians
and p95; asserts nothing.

    .venv/bin/python bench/dispatch.py [--sessions 30] [--idle 2] [--before DIR] [--before-livekit BIN]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from livekit import api

from storyteller_devkit.caller import Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.otlp_receiver import OtlpReceiver, ReceivedSpan
from storyteller_devkit.process import WaitFailed, free_port, wait_until
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess

DISPATCH_ATTR = "lk.dispatch_id"  # on the framework's job span (livekit.agents.telemetry.trace_types)


@dataclass
class Call:
    """One dispatch's instants, Unix seconds on this machine's clock (the worker's and the caller's)."""

    dispatch_id: str
    request: float
    joined: float
    track: float
    first_audio: float
    worker: dict[str, float] = field(default_factory=dict)  # from the job's spans, filled in later

    def instants(self) -> dict[str, float]:
        caller = {"request": self.request, "agent_joined": self.joined, "track_subscribed": self.track}
        return {**caller, **self.worker, "first_audio": self.first_audio}


# Phase name, from instant, to instant. The worker's instants are the framework's dispatch timeline (events
# on the job's root span, `job_entrypoint`) and its `room_connect` span; the others are the caller's.
PHASES = (
    ("request → offered to the worker", "request", "job_received"),
    ("offered → accepted", "job_received", "job_accepted"),
    ("accepted → assigned", "job_accepted", "job_assigned"),
    ("assigned → job process", "job_assigned", "process_assigned"),
    ("job process → entrypoint", "process_assigned", "entrypoint_started"),
    ("entrypoint → room connected", "entrypoint_started", "room_connected"),
    ("room connected → track subscribed", "room_connected", "track_subscribed"),
    ("track subscribed → first audio", "track_subscribed", "first_audio"),
)
TOTALS = (
    ("request → accepted", "request", "job_accepted"),
    ("request → agent joined", "request", "agent_joined"),
    ("request → first audio", "request", "first_audio"),
)


def worker_instants(spans: list[ReceivedSpan], dispatch_id: str) -> dict[str, float]:
    """The dispatch stages the worker stamped for the job of `dispatch_id`; {} until its spans arrived."""
    job = next(
        (s for s in spans if s.name == "job_entrypoint" and s.attributes.get(DISPATCH_ATTR) == dispatch_id),
        None,
    )
    if job is None:
        return {}
    connect = next((s for s in spans if s.name == "room_connect" and s.trace_id == job.trace_id), None)
    stages = ("job_received", "job_accepted", "job_assigned", "process_assigned", "entrypoint_started")
    instants = {stage: job.event_times[stage] for stage in stages if stage in job.event_times}
    if connect is not None:
        instants["room_connected"] = connect.end_s
    return instants


async def one_call(livekit: LiveKitServer, agent_name: str) -> Call:
    room = f"bench-{uuid.uuid4().hex[:8]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()  # the caller is already there, as someone who just called in
    # The caller's instants are perf_counter readings: this puts them on the Unix clock the worker uses.
    unix_offset = time.time() - time.perf_counter()
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        requested = time.perf_counter()
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
        try:
            await caller.wait_for("the agent's first audio", lambda: caller.first_voice_at is not None, 60)
        finally:
            await caller.leave()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert caller.agent_joined_at and caller.agent_track_at and caller.first_voice_at
    return Call(
        dispatch_id=dispatch.id,
        request=requested + unix_offset,
        joined=caller.agent_joined_at + unix_offset,
        track=caller.agent_track_at + unix_offset,
        first_audio=caller.first_voice_at + unix_offset,
    )


def summary(xs: list[float]) -> tuple[float, float]:
    ordered = sorted(xs)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def cell(calls: list[Call], since: str, until: str) -> str:
    gaps = [t[until] - t[since] for t in (c.instants() for c in calls) if since in t and until in t]
    if not gaps:
        return "-"
    median, p95 = summary(gaps)
    return f"{median * 1000:5.0f} / {p95 * 1000:5.0f}"


def print_table(columns: dict[str, list[Call]]) -> None:
    """One row per phase, one column per variant and pool: median / p95 in ms."""
    width = max(15, *(len(name) for name in columns))
    print(f"  {'phase (median / p95 ms)':36s}" + "".join(f"  {name:>{width}s}" for name in columns))
    for label, since, until in (*PHASES, *TOTALS):
        if label == TOTALS[0][0]:
            print("  " + "-" * (36 + (width + 2) * len(columns)))
        print(f"  {label:36s}" + "".join(f"  {cell(c, since, until):>{width}s}" for c in columns.values()))
    print(
        "  calls with the worker's spans: "
        + ", ".join(f"{name} {sum(1 for c in cs if c.worker)}/{len(cs)}" for name, cs in columns.items())
    )


@dataclass(frozen=True)
class Variant:
    """What runs: the worker's source tree (None: this one) on a livekit-server binary (None: the cached
    default version)."""

    name: str
    worker_src: Path | None = None
    livekit_binary: Path | None = None

    def env(self) -> dict[str, str]:
        if self.worker_src is None:
            return {}
        # The other tree's packages shadow this one's (the venv installs them as editable paths).
        packages = ("worker", "api")
        return {"PYTHONPATH": ":".join(str(self.worker_src / p) for p in packages)}


async def run_variant(
    variant: Variant, stack: contextlib.ExitStack, traces: OtlpReceiver, models: ThreadedServer, idle: int
) -> tuple[LiveKitServer, dict[str, WorkerProcess]]:
    livekit = stack.enter_context(running_livekit_server(binary=variant.livekit_binary))
    workdir = Path(tempfile.mkdtemp(prefix=f"storyteller-bench-{variant.name}-"))
    workers = {}
    for pool, idle_processes in (("warm", idle), ("cold", 0)):
        config = tenant_dict(
            models.base_url,
            livekit_url=livekit.url,
            tenant=f"{variant.name}-{pool}",
            agentName=f"{pool}-storyteller",
            pool={"sessionsPerWorker": 4, "idleProcesses": idle_processes},
            observability={"metricsPort": free_port(), "tracing": {"sampleRatio": 1.0}},
        )
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": traces.endpoint, **variant.env()}
        workers[pool] = WorkerProcess(config, livekit, workdir, extra_env=env).start()
        stack.callback(workers[pool].stop)
    for worker in workers.values():
        worker.wait_registered()
    workers["warm"].wait_log('"process initialized"', 60)  # the warm pool is ready before the first call
    await one_call(livekit, "warm-storyteller")  # warm-up of the caller's side
    return livekit, workers


async def main(sessions: int, idle: int, variants: list[Variant]) -> None:
    models = ThreadedServer().start()
    traces = OtlpReceiver().start()
    columns: dict[str, list[Call]] = {f"{v.name} {pool}": [] for pool in ("warm", "cold") for v in variants}
    with contextlib.ExitStack() as stack:
        servers = {v.name: (await run_variant(v, stack, traces, models, idle))[0] for v in variants}
        # Calls alternate between variants and pools, one at a time, so load and noise fall on all alike.
        order = [(v.name, pool) for v in variants for pool in ("warm", "cold")]
        for i in range(sessions):
            for name, pool in order if i % 2 == 0 else order[::-1]:
                columns[f"{name} {pool}"].append(await one_call(servers[name], f"{pool}-storyteller"))
                if pool == "warm":
                    await asyncio.sleep(0.5)  # let the pool refill as it would between real calls
        # Each job process sends its spans as it exits, after its session: wait for the last ones.
        every = [c for calls in columns.values() for c in calls]
        with contextlib.suppress(WaitFailed):
            wait_until(
                "every job's spans",
                lambda: all(worker_instants(traces.spans, c.dispatch_id) for c in every),
                30,
            )
        for call in every:
            call.worker = worker_instants(traces.spans, call.dispatch_id)
    models.stop()
    traces.stop()

    print(f"dispatch timeline, {sessions} calls per column (warm: idleProcesses={idle}, cold: 0)")
    for v in variants:
        server = v.livekit_binary or "the default version"
        print(f"  {v.name}: worker from {v.worker_src or 'this tree'}, livekit-server {server}")
    print_table(columns)
    for v in variants:
        warm, cold = columns[f"{v.name} warm"], columns[f"{v.name} cold"]
        ratios = []
        for label, since, until in TOTALS[1:]:
            w = summary([c.instants()[until] - c.instants()[since] for c in warm])[0]
            c_ = summary([c.instants()[until] - c.instants()[since] for c in cold])[0]
            ratios.append(f"{label.split(' → ')[1]} {c_ / w:.2f}x")
        print(f"  {v.name}: cold/warm median ratio: " + ", ".join(ratios))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=30, help="calls per column")
    parser.add_argument("--idle", type=int, default=2, help="idle processes of the warm worker")
    parser.add_argument("--before", type=Path, help="another checkout whose worker runs as 'before'")
    parser.add_argument("--before-livekit", type=Path, help="the livekit-server binary 'before' runs on")
    logging.basicConfig(level=logging.ERROR)
    args = parser.parse_args()
    variants = [Variant("now")]
    if args.before or args.before_livekit:
        variants.insert(0, Variant("before", args.before, args.before_livekit))
    asyncio.run(main(args.sessions, args.idle, variants))

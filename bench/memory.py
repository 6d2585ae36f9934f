"""Memory per pod shape: unique (USS) and proportional (PSS) memory of each of the worker's processes.

A real worker (`python -m storyteller_worker start`) runs on a local `livekit-server --dev` with the models
on the local scripted server, once per pod shape (`--idle`, each with `--sessions-per-worker` slots), one
worker at a time so no other worker shares its pages. Its processes are found by walking the /proc children
of the worker's PID and reading their command lines: the main process, the multiprocessing forkserver (when
the framework uses one; its job processes are forked from it and are its children), the resource tracker,
and each job process; a job process is busy when its log lines name a room the bench called, idle otherwise.
Memory comes from /proc/PID/smaps_rollup: USS = Private_Clean + Private_Dirty (what the process alone
holds: what killing it frees), PSS = each page divided by the number of processes that map it (sums to the
pod's real use; RSS counts shared pages once per process and is shown only for reference).

Each shape is measured idle, `--settle` seconds after its idle processes are initialized (with
`idleProcesses: 0` there is no forkserver yet: multiprocessing starts it with the first job process). Then
busy, while calls are in progress: every shape with 1 call, the last one also with `--calls` concurrent
calls; each call is a real RTC caller (the `livekit` SDK) that waits for the greeting, says its name and
city and waits for the story to start (STT, LLM, TTS, VAD and turn detection have all run by then). Last,
idle again once the calls' processes have exited and the pool has refilled (what stays: the forkserver).
Printed per snapshot: each process, the pod total, and the total per session slot (pod total /
sessionsPerWorker); for busy snapshots, each busy job process's increase over an idle one (USS; PSS only
within one snapshot, as a shared page's share depends on how many processes map it at that moment), and
the pod projected with every slot busy (no idle process left: the framework stops refilling the pool when
no slot is free). In MiB; asserts nothing. Library pages that other processes on the machine also map
(this bench's own, other workers') lower the worker's PSS a little: run it on a quiet machine.

    .venv/bin/python bench/memory.py [--idle 0 2] [--sessions-per-worker 4] [--calls 2] [--settle 3]
        [--turn-detection model|vad|stt] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from livekit import api

from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess

STORY_START = "Once upon a time"
MAIN, FORKSERVER, TRACKER, JOB_IDLE, JOB_BUSY, OTHER = (
    "main",
    "forkserver",
    "resource tracker",
    "job (idle)",
    "job (busy)",
    "other",
)


@dataclass(frozen=True)
class ProcMemory:
    """One process's memory (MiB) from its smaps_rollup."""

    pid: int
    role: str
    rss: float
    pss: float
    uss: float


@dataclass(frozen=True)
class Snapshot:
    label: str
    sessions_per_worker: int
    procs: list[ProcMemory]

    def of(self, role: str) -> list[ProcMemory]:
        return [p for p in self.procs if p.role == role]

    @property
    def pss(self) -> float:
        return sum(p.pss for p in self.procs)

    @property
    def uss(self) -> float:
        return sum(p.uss for p in self.procs)


# -- /proc ------------------------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """Direct children of `pid` (of any of its threads)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def smaps_rollup_kb(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup ({} once the process is gone)."""
    fields: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except (FileNotFoundError, ProcessLookupError):
        return fields
    for line in lines:
        key, _, rest = line.partition(":")
        value = rest.split()
        if value and value[-1] == "kB":
            fields[key] = int(value[0])
    return fields


def worker_tree(main_pid: int) -> list[tuple[int, str]]:
    """The worker's processes with their role: children of the main process, then the forkserver's.

    Under `forkserver` the job processes are forked by the forkserver (its children, same command line);
    under `spawn` they are the main process's children running `multiprocessing.spawn`.
    """
    tree: list[tuple[int, str]] = [(main_pid, MAIN)]
    for child in children(main_pid):
        line = cmdline(child)
        if "multiprocessing.forkserver" in line:
            tree.append((child, FORKSERVER))
            tree += [(grandchild, JOB_IDLE) for grandchild in children(child)]
        elif "multiprocessing.resource_tracker" in line:
            tree.append((child, TRACKER))
        elif "multiprocessing.spawn" in line:
            tree.append((child, JOB_IDLE))
        elif line:
            tree.append((child, OTHER))
    return tree


def job_pids(main_pid: int) -> list[int]:
    return [pid for pid, role in worker_tree(main_pid) if role == JOB_IDLE]


def busy_pids(worker: WorkerProcess, rooms: set[str]) -> set[int]:
    """Job processes whose log lines name one of `rooms` (the framework adds the room to a job's lines)."""
    pids: set[int] = set()
    for line in worker.log().splitlines():
        if not line.startswith("{") or '"room"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("room") in rooms and isinstance(record.get("pid"), int):
                pids.add(record["pid"])
    return pids


def snapshot(label: str, worker: WorkerProcess, rooms: set[str], sessions_per_worker: int) -> Snapshot:
    assert worker.proc is not None
    busy = busy_pids(worker, rooms) if rooms else set()
    procs: list[ProcMemory] = []
    for pid, role in worker_tree(worker.proc.pid):
        kb = smaps_rollup_kb(pid)
        if not kb:
            continue  # exited in between
        if role == JOB_IDLE and pid in busy:
            role = JOB_BUSY
        procs.append(
            ProcMemory(
                pid=pid,
                role=role,
                rss=kb.get("Rss", 0) / 1024,
                pss=kb.get("Pss", 0) / 1024,
                uss=(kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024,
            )
        )
    return Snapshot(label, sessions_per_worker, procs)


# -- calls ------------------------------------------------------------------------------------------------
@dataclass
class Call:
    room: str
    caller: Caller


async def start_call(livekit: LiveKitServer, agent_name: str, calls: list[Call]) -> None:
    """Dispatch a call and return once its story has started; the call stays open (`end_calls`).

    A call whose story has not started within the deadline (a 2-core machine with several calls, the
    model server and livekit-server on it can fall behind real time) is measured as it is, with a note.
    """
    room = f"bench-{uuid.uuid4().hex[:8]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    calls.append(Call(room, caller))
    await caller.join()
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
    await caller.wait_for(
        "the greeting to end",
        lambda: caller.agent_states.count("speaking") >= 1 and caller.agent_states[-1] == "listening",
        90,
    )
    await caller.say(CALLER_SCRIPT[0])
    try:
        await caller.wait_for(
            "the story", lambda: any(t.startswith(STORY_START) for t in caller.transcripts), 60
        )
    except AssertionError as err:
        print(f"  (measured without its story: {err})")


async def end_calls(livekit: LiveKitServer, calls: list[Call]) -> None:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        for call in calls:
            with contextlib.suppress(Exception):
                await call.caller.leave()
            with contextlib.suppress(Exception):
                await lk.room.delete_room(api.DeleteRoomRequest(room=call.room))


async def busy_snapshot(
    livekit: LiveKitServer, worker: WorkerProcess, n_calls: int, sessions_per_worker: int
) -> Snapshot:
    calls: list[Call] = []
    try:
        await asyncio.gather(
            *(start_call(livekit, worker.config["agentName"], calls) for _ in range(n_calls))
        )
        rooms = {call.room for call in calls}
        label = f"{n_calls} call{'s' if n_calls > 1 else ''} in progress"
        return await asyncio.to_thread(snapshot, label, worker, rooms, sessions_per_worker)
    finally:
        await end_calls(livekit, calls)


def initialized_pids(worker: WorkerProcess) -> set[int]:
    """Job processes that logged "process initialized" (their setup_fnc, the prewarm, has run)."""
    pids: set[int] = set()
    for line in worker.log().splitlines():
        if '"process initialized"' in line:
            with contextlib.suppress(ValueError):
                pid = json.loads(line).get("pid")
                if isinstance(pid, int):
                    pids.add(pid)
    return pids


def wait_pool(worker: WorkerProcess, idle: int, settle_s: float) -> None:
    """Wait until the worker has exactly `idle` job processes, all initialized, then `settle_s` more."""
    assert worker.proc is not None
    main_pid = worker.proc.pid

    def ready() -> bool:
        pids = job_pids(main_pid)
        return len(pids) == idle and set(pids) <= initialized_pids(worker)

    worker.wait_until(ready, f"{idle} initialized idle job processes", 120)
    time.sleep(settle_s)


# -- report -----------------------------------------------------------------------------------------------
def mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else 0.0


def print_snapshot(snap: Snapshot, idle_job_uss: float) -> None:
    """`idle_job_uss`: an idle job process's USS in this worker's idle snapshot, for busy ones to compare
    with when this snapshot has no idle job (PSS is compared within a snapshot only: a shared page's
    share depends on how many processes map it at that moment)."""
    print(f"  {snap.label}")
    print(f"    {'process':18s} {'pid':>8s} {'USS':>8s} {'PSS':>8s} {'RSS':>8s}")
    idle_here = snap.of(JOB_IDLE)
    base_uss = mean([p.uss for p in idle_here]) if idle_here else idle_job_uss
    base_pss = mean([p.pss for p in idle_here]) if idle_here else None
    for p in snap.procs:
        extra = ""
        if p.role == JOB_BUSY and base_uss:
            extra = f"   {p.uss - base_uss:+.1f} USS"
            extra += f", {p.pss - base_pss:+.1f} PSS" if base_pss is not None else ""
            extra += " over an idle job"
        print(f"    {p.role:18s} {p.pid:8d} {p.uss:8.1f} {p.pss:8.1f} {p.rss:8.1f}{extra}")
    spw = snap.sessions_per_worker
    print(f"    {'pod total':18s} {'':8s} {snap.uss:8.1f} {snap.pss:8.1f}")
    print(f"    {f'per slot (/{spw})':18s} {'':8s} {snap.uss / spw:8.1f} {snap.pss / spw:8.1f}")
    busy = snap.of(JOB_BUSY)
    if busy:
        # Every slot busy: the idle processes are gone (no free slot, no refill), each missing session
        # adds what a busy job process holds alone (its shared pages are already counted).
        full = (
            snap.pss - sum(p.uss for p in snap.of(JOB_IDLE)) + (spw - len(busy)) * mean([p.uss for p in busy])
        )
        print(
            f"    projected with all {spw} slots busy: pod {full:.1f} PSS, per slot {full / spw:.1f} "
            "(idle jobs' USS removed, a busy job's USS per missing session)"
        )


def print_summary(shapes: list[tuple[str, list[Snapshot]]]) -> None:
    print()
    print("summary (MiB, USS/PSS; job columns: mean per process)")
    header = (
        f"  {'pod shape':28s} {'snapshot':22s} {'main':>13s} {'forkserver':>13s} {'idle job':>13s} "
        f"{'busy job':>13s} {'pod PSS':>8s} {'per slot':>8s}"
    )
    print(header)

    def pair(procs: list[ProcMemory]) -> str:
        if not procs:
            return f"{'-':>13s}"
        return f"{mean([p.uss for p in procs]):6.1f}/{mean([p.pss for p in procs]):6.1f}"

    for shape, snaps in shapes:
        for snap in snaps:
            print(
                f"  {shape:28s} {snap.label:22s} {pair(snap.of(MAIN))} {pair(snap.of(FORKSERVER))} "
                f"{pair(snap.of(JOB_IDLE))} {pair(snap.of(JOB_BUSY))} {snap.pss:8.1f} "
                f"{snap.pss / snap.sessions_per_worker:8.1f}"
            )


# -- main -------------------------------------------------------------------------------------------------
async def measure_shape(
    livekit: LiveKitServer,
    base_url: str,
    workdir: Path,
    idle: int,
    sessions_per_worker: int,
    busy_calls: list[int],
    settle_s: float,
    extra_env: dict[str, str],
    turn_detection: str,
) -> list[Snapshot]:
    name = f"mem{idle}"
    config = tenant_dict(
        base_url,
        livekit_url=livekit.url,
        tenant=name,
        agentName=f"{name}-storyteller",
        pool={"sessionsPerWorker": sessions_per_worker, "idleProcesses": idle},
        observability={"metricsPort": free_port()},
        turnDetection=turn_detection,
    )
    worker = WorkerProcess(config, livekit, workdir, extra_env=extra_env).start()
    snaps: list[Snapshot] = []
    try:
        await asyncio.to_thread(worker.wait_registered, 90)
        await asyncio.to_thread(wait_pool, worker, idle, settle_s)
        assert worker.proc is not None
        idle_snap = await asyncio.to_thread(snapshot, "idle", worker, set(), sessions_per_worker)
        snaps.append(idle_snap)
        print("  processes (command lines):")
        for proc in idle_snap.procs:
            print(f"    {proc.role:18s} {proc.pid:8d}  {cmdline(proc.pid)[:120]}")
        if not idle_snap.of(FORKSERVER):
            print("  (no forkserver yet: multiprocessing starts it with the first job process)")
        for n in busy_calls:
            snaps.append(await busy_snapshot(livekit, worker, n, sessions_per_worker))
            # The finished jobs' processes exit; the pool refills to `idle` before the next measurement.
            await asyncio.to_thread(wait_pool, worker, idle, settle_s)
        if busy_calls:  # what stays after calls: the forkserver of an `idleProcesses: 0` pod, say
            snaps.append(
                await asyncio.to_thread(snapshot, "idle after the calls", worker, set(), sessions_per_worker)
            )
    finally:
        worker.stop()
    return snaps


async def main(
    idles: list[int],
    sessions_per_worker: int,
    calls: int,
    settle_s: float,
    extra_env: dict[str, str],
    turn_detection: str,
) -> None:
    models = ThreadedServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="storyteller-bench-"))
    shapes: list[tuple[str, list[Snapshot]]] = []
    started = time.perf_counter()
    try:
        with running_livekit_server() as livekit:
            for i, idle in enumerate(idles):
                # Every shape takes one call; the last one also `calls` at once.
                busy = sorted({1, calls} if i == len(idles) - 1 and calls > 0 else {1})
                shape = f"idleProcesses={idle}, spw={sessions_per_worker}"
                print(f"pod shape {shape}")
                snaps = await measure_shape(
                    livekit,
                    models.base_url,
                    workdir,
                    idle,
                    sessions_per_worker,
                    busy,
                    settle_s,
                    extra_env,
                    turn_detection,
                )
                idle_uss = mean([p.uss for p in snaps[0].of(JOB_IDLE)])
                for snap in snaps:
                    print_snapshot(snap, idle_uss)
                shapes.append((shape, snaps))
    finally:
        models.stop()
    print_summary(shapes)
    print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=int, nargs="+", default=[0, 2], help="idleProcesses of each pod shape")
    parser.add_argument("--sessions-per-worker", type=int, default=4)
    parser.add_argument("--calls", type=int, default=2, help="concurrent calls of the last shape's busy run")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before each measurement")
    parser.add_argument(
        "--turn-detection",
        choices=("model", "vad", "stt"),
        default="model",
        help="the tenant's spec.turnDetection (vad and stt load no end-of-turn model)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the workers (repeatable), e.g. LIVEKIT_LOG_LEVEL=debug",
    )
    logging.basicConfig(level=logging.ERROR)
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    if env:
        print("worker environment: " + " ".join(f"{k}={v}" for k, v in env.items()))
    print(f"turnDetection: {args.turn_detection}")
    asyncio.run(main(args.idle, args.sessions_per_worker, args.calls, args.settle, env, args.turn_detection))

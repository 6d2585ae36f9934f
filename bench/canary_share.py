"""The share of new sessions a canary gets, for the pod counts the operator gives a canary weight.

The operator sizes a canary at round(stable pods × weight / (100 − weight)) pods, at least one
(rollout.canary_replicas), and registers them under the stable pool's agent name: livekit-server then
offers each call to one available worker picked at random, weighted by how free it is
(`selectWorkerWeightedByLoad`: weight 1 − load). This runs that on a local livekit-server with real workers
(the stable ones reporting revision 1, the canary's revision 2, as the operator's pods do), places calls
(a real participant in a fresh room, then the dispatch) and counts where each went from the workers'
`storyteller_sessions_started_total{revision}`.

`--overlap N` keeps up to N calls open at once (held for `--hold` seconds), so the workers' loads differ
when a call is placed, as in a busy pool; the default places them one at a time (every worker idle).
Prints the share per layout; asserts nothing.

    .venv/bin/python bench/canary_share.py [--calls 60] [--layout 4:1 --layout 2:1] [--overlap 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import uuid
from pathlib import Path

from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from storyteller_api import contract, metric_names
from storyteller_devkit.caller import Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess
from storyteller_operator.rollout import canary_replicas

AGENT = "share-storyteller"
STABLE, CANARY = "1", "2"


def started_by_revision(worker: WorkerProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(worker.metrics()):
        for sample in family.samples:
            if sample.name == metric_names.SESSIONS_STARTED:
                revision = sample.labels.get("revision", "")
                out[revision] = out.get(revision, 0.0) + sample.value
    return out


async def one_call(livekit: LiveKitServer, hold_s: float) -> None:
    room = f"share-{uuid.uuid4().hex[:8]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=AGENT, room=room))
        try:
            await caller.wait_for("the agent", lambda: bool(caller.agent_identity), 60)
            await asyncio.sleep(hold_s)  # the call goes on: its worker is busier meanwhile
        finally:
            await caller.leave()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def measure(stable: int, canary: int, calls: int, overlap: int, hold_s: float) -> tuple[int, int]:
    """(calls the canary got, calls counted) for `stable` + `canary` workers."""
    models = ThreadedServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="storyteller-share-"))
    workers: list[WorkerProcess] = []
    try:
        with running_livekit_server() as livekit:
            for i, revision in enumerate([STABLE] * stable + [CANARY] * canary):
                config = tenant_dict(
                    models.base_url,
                    livekit_url=livekit.url,
                    tenant="share",
                    agentName=AGENT,
                    turnDetection="vad",
                    pool={"sessionsPerWorker": 4, "idleProcesses": 1},
                    observability={"metricsPort": free_port()},
                )
                env = {contract.REVISION_ENV: revision}
                workers.append(WorkerProcess(config, livekit, workdir / str(i), extra_env=env).start())
            for worker in workers:
                worker.wait_registered()
                worker.wait_log('"process initialized"', 90)
            limit = asyncio.Semaphore(overlap)

            async def placed() -> None:
                async with limit:
                    await one_call(livekit, hold_s)

            await asyncio.gather(*(placed() for _ in range(calls)))
            totals: dict[str, float] = {}
            for worker in workers:
                for revision, n in started_by_revision(worker).items():
                    totals[revision] = totals.get(revision, 0.0) + n
    finally:
        for worker in workers:
            worker.stop()
        models.stop()
    return round(totals.get(CANARY, 0.0)), round(sum(totals.values()))


async def main(calls: int, layouts: list[tuple[int, int]], overlap: int, hold_s: float) -> None:
    print(f"{calls} calls per layout, up to {overlap} at once (held {hold_s:g} s)")
    print(f"{'stable:canary pods':>18}  {'pod share':>9}  {'canary got':>10}  weights giving this layout")
    for stable, canary in layouts:
        got, counted = await measure(stable, canary, calls, overlap, hold_s)
        weights = [w for w in range(1, 51) if canary_replicas(stable, w) == canary]
        span = f"{weights[0]}-{weights[-1]} %" if weights else "-"
        print(
            f"{f'{stable}:{canary}':>18}  {canary / (stable + canary):>9.0%}  "
            f"{got / max(counted, 1):>10.0%}  {span} ({got} of {counted})"
        )


def layout(text: str) -> tuple[int, int]:
    stable, canary = text.split(":")
    return int(stable), int(canary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=60, help="calls per layout")
    parser.add_argument(
        "--layout", type=layout, action="append", help="stable:canary workers (default 4:1, 2:1, 1:1)"
    )
    parser.add_argument("--overlap", type=int, default=1, help="calls open at once")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds each call stays open")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.calls, args.layout or [(4, 1), (2, 1), (1, 1)], args.overlap, args.hold))

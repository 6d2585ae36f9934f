"""Readiness that means "this worker can take a call": `GET :8082/ready`, the pod's readiness probe.

The framework's `GET /` on 8081 answers 200 as soon as its HTTP server starts, before the worker has
registered with LiveKit, and LiveKit does not retry a dispatch that finds no available worker. A pod
marked Ready that early (a rollout's new pod once the old one drains, a tenant that just became Ready)
loses the calls dispatched in between: seen on the real node, where a call placed right after the
tenant turned Ready never got its agent. This endpoint answers 200 only while the worker is
registered, not draining, and the framework's own health check passes (503 once the LiveKit connection
is lost); otherwise 503 with the reason.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from livekit.agents import AgentServer

from storyteller_api import contract

from .. import framework

logger = logging.getLogger("storyteller.worker.readiness")

READY_PORT = contract.READY_PORT
READY_PATH = contract.READY_PATH


async def readiness_answer(
    server: AgentServer, health_url: str, http: aiohttp.ClientSession
) -> tuple[int, str]:
    """(status, reason) of the readiness endpoint for the worker's state right now."""
    if not framework.is_registered(server):
        return 503, "not registered with LiveKit yet"
    if server.draining:
        return 503, "draining: takes no new calls"
    try:
        async with http.get(health_url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            if resp.status != 200:
                return 503, f"health check: {resp.status} {await resp.text()}"
    except (aiohttp.ClientError, TimeoutError) as err:
        return 503, f"health check unanswered: {err!r}"
    return 200, "ready"


def readiness_app(server: AgentServer, health_url: str) -> web.Application:
    app = web.Application()

    async def open_client(app: web.Application) -> None:
        app["http"] = aiohttp.ClientSession()

    async def close_client(app: web.Application) -> None:
        await app["http"].close()

    async def ready(request: web.Request) -> web.Response:
        status, reason = await readiness_answer(server, health_url, request.app["http"])
        return web.Response(status=status, text=reason)

    app.on_startup.append(open_client)
    app.on_cleanup.append(close_client)
    app.router.add_get(READY_PATH, ready)
    return app


def serve_readiness(server: AgentServer, *, port: int, health_port: int) -> None:
    """Serve the endpoint from the worker's own event loop once it runs (its `worker_started` event)."""
    tasks: set[asyncio.Task[None]] = set()

    async def start() -> None:
        runner = web.AppRunner(readiness_app(server, f"http://127.0.0.1:{health_port}/"), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port).start()
        logger.info("readiness endpoint listening", extra={"port": port, "path": READY_PATH})

    def on_started() -> None:
        task = asyncio.get_running_loop().create_task(start())
        tasks.add(task)  # keep a reference until it has run
        task.add_done_callback(tasks.discard)

    server.on("worker_started", on_started)

"""Fixtures for the voice path: a tenant worker process on a real LiveKit server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess


@pytest.fixture
def start_worker(livekit_server: LiveKitServer, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a worker for a tenant whose models are on `base_url`; every one is stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(
        base_url: str, tenant: str = "acme", *, env: dict[str, str] | None = None, **overrides: Any
    ) -> WorkerProcess:
        observability = {"metricsPort": free_port(), **overrides.pop("observability", {})}
        config = tenant_dict(
            base_url,
            livekit_url=livekit_server.url,
            tenant=tenant,
            namespace=tenant,
            agentName=f"{tenant}-storyteller",
            observability=observability,
            **overrides,
        )
        worker = WorkerProcess(config, livekit_server, tmp_path, extra_env=env or {}).start()
        started.append(worker)
        worker.wait_registered()
        return worker

    yield start
    for worker in started:
        worker.stop()

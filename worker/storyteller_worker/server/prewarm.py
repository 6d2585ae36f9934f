"""What a job process does once, before it is idle-ready: what a caller should not wait for.

`prewarm` loads the tenant config, the Silero VAD and both phases' model clients, and installs the
process's telemetry. `warm_process` moves work from the first call's event loop into prewarm: the
framework's loop monitor showed each of these stalling a fresh session's event loop for 100-200 ms
(delaying the greeting's audio): the TLS context of the shared HTTP session, and imports that the
plugins' HTTP clients make lazily on first use.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from livekit.agents import JobProcess
from livekit.plugins import silero

from .. import framework
from ..config import load_tenant_config
from ..providers.phases import build_session_models
from ..telemetry.metrics import record_capacity
from ..telemetry.tracing import install_tracing

logger = logging.getLogger("storyteller.worker.warmup")

# Imported once in the forkserver, shared by every job process (see that module); named here, not
# imported: its import is the preload itself.
PRELOAD_MODULE = "storyteller_worker.server.preload"

_LAZY_IMPORTS = (
    "anyio._backends._asyncio",  # httpx's async backend, imported on the first request
    "openai.types.chat.completions",
)


def warm_process() -> None:
    for module in _LAZY_IMPORTS:
        importlib.import_module(module)
    # Cached per process by the framework: the session created in the job then reuses it.
    if not framework.prewarm_tls_context():  # renamed upstream: the session still works, only slower to start
        logger.warning("livekit-agents has no http_context._create_ssl_context; TLS not prewarmed")


def _shared_from_forkserver() -> bool:
    """Whether this process inherited `server.preload` from the forkserver rather than importing it."""
    preload = sys.modules.get(PRELOAD_MODULE)
    return preload is not None and getattr(preload, "PRELOADED_IN", os.getpid()) != os.getpid()


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before it is idle-ready (the AgentServer's `setup_fnc`).

    A job process serves one session, so the plugin clients built here are that session's own. What
    it leaves in `proc.userdata` is what `agents.entrypoint` reads.
    """
    tenant = load_tenant_config()
    warm_process()  # done already where the forkserver preloaded `server.preload`: then a no-op
    logger.info("job process warming", extra={"shared_from_forkserver": _shared_from_forkserver()})
    vad = silero.VAD.load()
    proc.userdata.update(tenant=tenant, vad=vad, models=build_session_models(tenant, vad))
    # Telemetry is per process: the tracer provider (framework hook) and this pod's capacity gauge.
    install_tracing(tenant)
    record_capacity(tenant)

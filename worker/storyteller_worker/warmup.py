"""Work a job process does once, moved from the first call's event loop into prewarm.

The framework's loop monitor showed each of these stalling a fresh session's event loop for
100-200 ms (delaying the greeting's audio): the TLS context of the shared HTTP session, and imports
that the plugins' HTTP clients make lazily on first use.
"""

from __future__ import annotations

import importlib
import logging

from livekit.agents.utils import http_context

logger = logging.getLogger("storyteller.worker.warmup")

_LAZY_IMPORTS = (
    "anyio._backends._asyncio",  # httpx's async backend, imported on the first request
    "openai.types.chat.completions",
)


def warm_process() -> None:
    for module in _LAZY_IMPORTS:
        importlib.import_module(module)
    # Cached per process by the framework: the session created in the job then reuses it.
    create = getattr(http_context, "_create_ssl_context", None)
    if create is not None:
        create()
    else:  # a framework upgrade renamed it: the session still works, only slower to start
        logger.warning("livekit-agents has no http_context._create_ssl_context; TLS not prewarmed")

"""Side-effect module: what every job process would import and build for itself, done once in the forkserver.

`build_server` lists it in the AgentServer's `preload_modules`. The framework imports it in the
multiprocessing forkserver ahead of its own `gc.freeze()`, so every job process forked from there shares
these modules' objects copy-on-write instead of importing them into its own heap: 12-15 MiB less per job
process, idle or busy (`bench/memory.py`). Fork-safe: imports and a cached TLS context, no thread, no loop.

`PRELOADED_IN` is the PID of the process that imported it: in a job process it is the forkserver's when
the preload took effect. The forkserver skips a preload module that fails to import without a word, so
`server.prewarm` logs whether it did (`shared_from_forkserver`).
"""

from __future__ import annotations

import os

from ..agents import entrypoint as _entrypoint  # noqa: F401  (the job's code, with the plugins it imports)
from . import prewarm

PRELOADED_IN = os.getpid()
prewarm.warm_process()

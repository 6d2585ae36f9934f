"""The only module that reaches into livekit-agents' private API: the rest of the worker calls its functions.

Checked against livekit-agents 1.8.9 (`CHECKED_AGAINST`, the pin in worker/pyproject.toml). Each private
is used because the public API has no equivalent. `tests/unit/test_worker_framework.py` fails, naming the
private, when the installed framework no longer has it in the shape used here: on every upgrade re-read
the framework source it names, then bump `CHECKED_AGAINST`.

- `AgentServer._get_effective_load()` (livekit/agents/worker.py): the load the server compares with its
  `load_threshold` before it says it is available for a job (`_is_available`) and when it reports its
  status (`_update_worker_status`). Its own estimate weighs a job still launching as
  `load_threshold / num_idle_processes`, which with sessions as the unit marks a pod full while it has
  free slots (LiveKit does not retry such a dispatch: the call is lost). Replaced per server by
  `replace_effective_load`.
- `AgentServer._reserved_slots` (worker.py, created in `run()`): jobs the server said it was available
  for whose request handler has not finished (accepted and waiting for assignment or launching), read by
  `launching_jobs`.
- The worker id `"unregistered"` (worker.py, `AgentServer.__init__`): not underscore-prefixed but not
  documented either; `AgentServer.id` holds it until LiveKit answers the registration. `is_registered`.
- `utils.http_context._create_ssl_context()`: the TLS context of the job's shared HTTP session, built once
  per process and cached (`_ssl_context_for`); `prewarm_tls_context` builds it before the first call.
- `llm.FallbackAdapter._llm_instances`, `stt.FallbackAdapter._stt_instances`,
  `tts.FallbackAdapter._tts_instances`: the models an adapter tries, in order (for the STT adapter, a
  non-streaming engine appears wrapped in an `stt.StreamAdapter`); `fallback_instances`.
- `voice.agent_activity._AgentActivityContextVar`: the activity (one per agent) whose speech task runs the
  calling code; the tasks a speech starts (a model's stream and its metrics, the tool reply) inherit it.
  After a handoff tool the old agent still speaks its reply to the tool output while the session's
  `current_agent` is already the new one; `running_agent` tells them apart.
- `ipc._preload.ENV_PRELOAD_LOCAL_INFERENCE` (`LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE`): whether the
  forkserver loads the local inference models (the end-of-turn model's ~245 MiB of weights) for its job
  processes; a tenant that does not use that model sets it off (`skip_local_inference_preload`).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from livekit.agents import AgentServer
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents.utils import http_context
from livekit.agents.voice import agent_activity

CHECKED_AGAINST = "1.8.9"

UNREGISTERED_ID = "unregistered"
# Read by livekit/agents/ipc/_preload.py, a side-effect module: importing it here would load the models.
ENV_PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"

# Each fallback adapter type and the attribute that holds its models.
_FALLBACK_INSTANCES: tuple[tuple[type, str], ...] = (
    (lk_llm.FallbackAdapter, "_llm_instances"),
    (lk_stt.FallbackAdapter, "_stt_instances"),
    (lk_tts.FallbackAdapter, "_tts_instances"),
)


def launching_jobs(server: AgentServer) -> int:
    """Jobs accepted (or being offered to the request handler) that are not running yet.

    0 before the server runs: the framework creates the counter in `run()`.
    """
    return int(getattr(server, "_reserved_slots", 0))


def replace_effective_load(server: AgentServer, effective_load: Callable[[], float]) -> None:
    """Make `effective_load()` the load `server` checks against its threshold and reports as its status."""
    # An instance attribute shadows the method for the framework's own `self._get_effective_load()` calls.
    server._get_effective_load = effective_load  # type: ignore[method-assign]


def skip_local_inference_preload(environ: MutableMapping[str, str]) -> None:
    """Tell the framework (before its server starts) not to load its local inference models in the
    forkserver; a value already set wins."""
    environ.setdefault(ENV_PRELOAD_LOCAL_INFERENCE, "0")


def is_registered(server: AgentServer) -> bool:
    """True once LiveKit has answered the worker's registration (its id is then LiveKit's)."""
    return server.id != UNREGISTERED_ID


def prewarm_tls_context() -> bool:
    """Build the TLS context the job's HTTP session will use (cached per process by the framework).

    False when the framework no longer has the function: the session still works, only its first
    request parses the CA bundle.
    """
    create: Callable[[], object] | None = getattr(http_context, "_create_ssl_context", None)
    if create is None:
        return False
    create()
    return True


def fallback_instances(model: object) -> list[Any]:
    """The models a fallback adapter tries, in order; [] for anything else.

    Also [] should an upgrade rename the adapter's list: callers then treat the adapter as one model.
    """
    for adapter_type, attr in _FALLBACK_INSTANCES:
        if isinstance(model, adapter_type):
            instances = getattr(model, attr, None)
            if isinstance(instances, list):
                return list(instances)
    return []


def running_agent() -> object | None:
    """The agent whose activity runs the calling code (its speech, a model request it started, that
    request's usage report); None outside any, or should an upgrade remove the context variable."""
    var = getattr(agent_activity, "_AgentActivityContextVar", None)
    activity = var.get(None) if var is not None else None
    return getattr(activity, "agent", None)

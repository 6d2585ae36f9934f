"""The livekit-agents privates behind `storyteller_worker.framework` still exist in the shape it uses.

Each failure names the private and what to re-check: read it in the installed framework's source
(`.venv/lib/python3.11/site-packages/livekit/agents/`), adapt framework.py, then its `CHECKED_AGAINST`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
import ssl
import tomllib
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentServer, JobContext, JobRequest
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents.utils import http_context
from livekit.plugins import deepgram, openai, silero
from livekit.protocol import agent as lk_agent

from storyteller_worker import framework
from storyteller_worker.server.capacity import REPORTED_FULL_LOAD, SessionCountingServer

WORKER_PYPROJECT = Path(__file__).resolve().parents[2] / "worker" / "pyproject.toml"
INSTALLED = importlib.metadata.version("livekit-agents")
_MISSING = object()


def _recheck(private: str, problem: str, relied_on: str) -> str:
    return (
        f"livekit-agents {INSTALLED}: {private} {problem}. storyteller_worker/framework.py relies on it "
        f"({relied_on}): re-read it in the framework's source and adapt framework.py."
    )


def _private(owner: Any, name: str, owner_name: str, relied_on: str) -> Any:
    """`owner.name` without running descriptors; fails naming the private when it is gone."""
    value = inspect.getattr_static(owner, name, _MISSING)
    assert value is not _MISSING, _recheck(f"{owner_name}.{name}", "does not exist", relied_on)
    return value


def _calls(function: Any, call: str, private: str, relied_on: str) -> None:
    source = inspect.getsource(function)
    assert call in source, _recheck(
        private, f"is no longer called as `{call}` in {function.__qualname__}", relied_on
    )


def _pinned_version() -> str:
    dependencies = tomllib.loads(WORKER_PYPROJECT.read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in dependencies if (m := re.fullmatch(r"livekit-agents==(\S+)", d))]
    assert len(pins) == 1, f"worker/pyproject.toml should pin livekit-agents exactly once: {dependencies}"
    return pins[0]


def test_framework_module_was_checked_against_the_pinned_version() -> None:
    pinned = _pinned_version()
    assert pinned == framework.CHECKED_AGAINST, (
        f"worker/pyproject.toml pins livekit-agents {pinned}, framework.py was checked against "
        f"{framework.CHECKED_AGAINST}: re-check every private its docstring lists in {pinned}'s source, "
        "then update CHECKED_AGAINST and the docstring."
    )
    assert f"livekit-agents {pinned}" in (framework.__doc__ or ""), (
        "framework.py's docstring names another version"
    )
    assert pinned == INSTALLED, (
        f"installed livekit-agents {INSTALLED} is not the pinned {pinned}: reinstall the venv"
    )


# --- AgentServer._get_effective_load and AgentServer._reserved_slots ---------------------------------

EFFECTIVE_LOAD = "AgentServer._get_effective_load"
EFFECTIVE_LOAD_USE = "SessionCountingServer replaces it so a launching job weighs one session slot"
RESERVED_SLOTS = "AgentServer._reserved_slots"
RESERVED_SLOTS_USE = "launching_jobs(): jobs accepted and not yet running, counted as session slots"


def test_effective_load_is_a_method_the_availability_check_and_status_report_call() -> None:
    method = _private(AgentServer, "_get_effective_load", "AgentServer", EFFECTIVE_LOAD_USE)
    assert inspect.isfunction(method), _recheck(
        EFFECTIVE_LOAD, "is no longer a plain method", EFFECTIVE_LOAD_USE
    )
    assert list(inspect.signature(method).parameters) == ["self"], _recheck(
        EFFECTIVE_LOAD, f"now takes {inspect.signature(method)}, not (self)", EFFECTIVE_LOAD_USE
    )
    is_available = _private(AgentServer, "_is_available", "AgentServer", EFFECTIVE_LOAD_USE)
    _calls(is_available, "self._get_effective_load()", EFFECTIVE_LOAD, EFFECTIVE_LOAD_USE)
    update_status = _private(AgentServer, "_update_worker_status", "AgentServer", EFFECTIVE_LOAD_USE)
    _calls(update_status, "self._get_effective_load()", EFFECTIVE_LOAD, EFFECTIVE_LOAD_USE)


def test_session_counting_server_is_what_the_framework_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    server = SessionCountingServer(sessions_per_worker=4, num_idle_processes=0)
    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: []))
    assert framework.launching_jobs(server) == 0  # before run(): the framework has not made the counter yet
    server._reserved_slots = 1  # what the framework's availability answer does
    assert server._get_effective_load() == 0.25 * REPORTED_FULL_LOAD, _recheck(
        EFFECTIVE_LOAD, "is not our replacement", EFFECTIVE_LOAD_USE
    )
    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: [object()] * 2))
    server._reserved_slots = 2
    assert server._get_effective_load() == REPORTED_FULL_LOAD  # 2 running + 2 launching = full


async def test_reserved_slots_count_offered_jobs_and_decide_availability_through_the_replaced_load() -> None:
    """On a real (unregistered) server: the framework counts a job from its availability answer until
    its request handler returns, and consults the replaced load, not its own estimate, before offering
    the next one."""
    answer_availability = _private(AgentServer, "_answer_availability", "AgentServer", RESERVED_SLOTS_USE)
    assert "msg" in inspect.signature(answer_availability).parameters, _recheck(
        "AgentServer._answer_availability",
        "no longer takes the AvailabilityRequest as `msg`",
        RESERVED_SLOTS_USE,
    )
    server = AgentServer(
        load_threshold=1.0,
        num_idle_processes=0,  # the framework's own estimate: one launching job = a full pod
        port=0,
        load_fnc=lambda: 0.0,
        ws_url="ws://127.0.0.1:1",
        api_key="key",
        api_secret="secret",
    )
    offered: list[tuple[str, int]] = []
    release = asyncio.Event()

    async def on_request(request: JobRequest) -> None:
        offered.append((request.id, framework.launching_jobs(server)))
        await release.wait()
        await request.reject(terminate=False)

    async def entrypoint(_ctx: JobContext) -> None:
        raise AssertionError("no job is assigned in this test")

    server.rtc_session(entrypoint, agent_name="framework-fence", on_request=on_request)
    framework.replace_effective_load(server, lambda: 0.5 * framework.launching_jobs(server))  # 2 slots
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(unregistered=True))
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert isinstance(vars(server).get("_reserved_slots", _MISSING), int), _recheck(
            RESERVED_SLOTS, "is not an int attribute once the server runs", RESERVED_SLOTS_USE
        )

        async def offer(job_id: str) -> None:
            await server._answer_availability(lk_agent.AvailabilityRequest(job=lk_agent.Job(id=job_id)))
            for _ in range(50):  # the request handler runs in a task of its own
                if any(seen == job_id for seen, _ in offered):
                    return
                await asyncio.sleep(0.01)

        await offer("job-1")
        await offer("job-2")  # one slot launching of two: still available with the replaced load
        await offer("job-3")  # both launching: full
        assert offered == [("job-1", 1), ("job-2", 2)], _recheck(
            f"{RESERVED_SLOTS} / {EFFECTIVE_LOAD}",
            f"did not count offered jobs or decide availability as expected (handler saw {offered})",
            RESERVED_SLOTS_USE,
        )
        release.set()
        for _ in range(100):
            if framework.launching_jobs(server) == 0:
                break
            await asyncio.sleep(0.01)
        assert framework.launching_jobs(server) == 0, _recheck(
            RESERVED_SLOTS, "is not released when the request handler returns", RESERVED_SLOTS_USE
        )
    finally:
        release.set()
        await server.aclose()
        await asyncio.wait_for(run, 10)


# --- the unregistered worker id ----------------------------------------------------------------------

UNREGISTERED_USE = "is_registered(): the readiness endpoint answers 503 until LiveKit registered the worker"


def test_worker_id_is_unregistered_until_livekit_answers_the_registration() -> None:
    server = AgentServer()
    assert server.id == framework.UNREGISTERED_ID, _recheck(
        "AgentServer.id", f"starts as {server.id!r}, not {framework.UNREGISTERED_ID!r}", UNREGISTERED_USE
    )
    assert not framework.is_registered(server)
    handle_register = _private(AgentServer, "_handle_register", "AgentServer", UNREGISTERED_USE)
    handle_register(server, lk_agent.RegisterWorkerResponse(worker_id="AW_fence"))
    assert server.id == "AW_fence" and framework.is_registered(server), _recheck(
        "AgentServer.id", "does not take the id LiveKit assigns at registration", UNREGISTERED_USE
    )


# --- utils.http_context._create_ssl_context ----------------------------------------------------------

SSL_CONTEXT = "livekit.agents.utils.http_context._create_ssl_context"
SSL_CONTEXT_USE = "prewarm_tls_context(): the CA bundle is parsed in prewarm, not during the first call"


def test_ssl_context_is_built_once_per_process_and_used_by_the_job_http_session() -> None:
    create = _private(
        http_context, "_create_ssl_context", "livekit.agents.utils.http_context", SSL_CONTEXT_USE
    )
    assert callable(create) and not inspect.signature(create).parameters, _recheck(
        SSL_CONTEXT, f"is not a function of no arguments: {inspect.signature(create)}", SSL_CONTEXT_USE
    )
    first = create()
    assert isinstance(first, ssl.SSLContext), _recheck(SSL_CONTEXT, f"returns {type(first)}", SSL_CONTEXT_USE)
    assert create() is first, _recheck(
        SSL_CONTEXT, "no longer caches its context per process", SSL_CONTEXT_USE
    )
    _calls(http_context._new_session_ctx, "_create_ssl_context()", SSL_CONTEXT, SSL_CONTEXT_USE)
    assert framework.prewarm_tls_context()


# --- the fallback adapters' model lists --------------------------------------------------------------

FALLBACK_USE = "fallback_instances(): each model's own `error` event counts the failures of fallbacks too"


@pytest.fixture
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")


def _instances(adapter: Any, attr: str) -> list[Any]:
    private = f"{type(adapter).__module__}.FallbackAdapter.{attr}"
    instances = getattr(adapter, attr, _MISSING)
    assert isinstance(instances, list), _recheck(private, f"is {type(instances)}, not a list", FALLBACK_USE)
    return instances


@pytest.mark.usefixtures("_keys")
def test_fallback_adapters_keep_their_models_in_order() -> None:
    base = "http://127.0.0.1:9/v1"
    llms = [openai.LLM(model="gpt-4o-mini", base_url=base), openai.LLM(model="gpt-4o", base_url=base)]
    llm = lk_llm.FallbackAdapter(llms)  # type: ignore[arg-type]
    assert _instances(llm, "_llm_instances") == llms
    assert framework.fallback_instances(llm) == llms

    ttss = [openai.TTS(model="tts-1", base_url=base), deepgram.TTS(model="aura-2-andromeda-en")]
    tts = lk_tts.FallbackAdapter(ttss)  # type: ignore[arg-type]
    assert _instances(tts, "_tts_instances") == ttss
    assert framework.fallback_instances(tts) == ttss

    streaming, batch = deepgram.STT(model="nova-3"), openai.STT(model="whisper-1", base_url=base)
    stt = lk_stt.FallbackAdapter([streaming, batch], vad=silero.VAD.load())  # type: ignore[list-item]
    first, second = _instances(stt, "_stt_instances")
    assert framework.fallback_instances(stt) == [first, second]
    assert first is streaming
    # A non-streaming engine is wrapped; the metrics read its model name and listen to its errors there.
    assert isinstance(second, lk_stt.StreamAdapter) and second.wrapped_stt is batch, _recheck(
        "livekit.agents.stt.FallbackAdapter._stt_instances",
        f"holds {type(second).__name__} for a non-streaming engine, not an stt.StreamAdapter over it",
        FALLBACK_USE,
    )
    assert second.model == "whisper-1"

    assert framework.fallback_instances(llms[0]) == []  # not an adapter


# --- voice.agent_activity._AgentActivityContextVar ----------------------------------------------------

ACTIVITY_VAR = "livekit.agents.voice.agent_activity._AgentActivityContextVar"
ACTIVITY_VAR_USE = "running_agent(): usage and latency labelled with the agent that spoke, not the next one"


def test_the_running_agent_is_the_activity_that_started_the_task() -> None:
    import contextvars

    from livekit.agents.voice import agent_activity

    var = _private(agent_activity, "_AgentActivityContextVar", "agent_activity", ACTIVITY_VAR_USE)
    assert isinstance(var, contextvars.ContextVar), _recheck(
        ACTIVITY_VAR, "is no longer a ContextVar", ACTIVITY_VAR_USE
    )
    create = _private(agent_activity.AgentActivity, "_create_speech_task", "AgentActivity", ACTIVITY_VAR_USE)
    _calls(create, "_AgentActivityContextVar.set(self)", ACTIVITY_VAR, ACTIVITY_VAR_USE)
    assert isinstance(inspect.getattr_static(agent_activity.AgentActivity, "agent", None), property), (
        _recheck("AgentActivity.agent", "is no longer a property", ACTIVITY_VAR_USE)
    )

    class Activity:
        agent = "the intro agent"

    assert framework.running_agent() is None
    token = var.set(Activity())
    try:
        assert framework.running_agent() == "the intro agent"
    finally:
        var.reset(token)


def test_the_local_inference_preload_reads_the_variable_we_set() -> None:
    # Read as text: the module's import loads the models (the main process must never import it).
    import livekit.agents.ipc

    source = (Path(livekit.agents.ipc.__file__).parent / "_preload.py").read_text()
    assert f'ENV_PRELOAD_LOCAL_INFERENCE = "{framework.ENV_PRELOAD_LOCAL_INFERENCE}"' in source, _recheck(
        "ipc._preload.ENV_PRELOAD_LOCAL_INFERENCE",
        "is not the variable we set",
        "skip_local_inference_preload",
    )
    assert "os.environ.get(ENV_PRELOAD_LOCAL_INFERENCE)" in source

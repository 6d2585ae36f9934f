"""The whole voice path on a real LiveKit server: dispatch, greeting, handoff, story, hang-up.

The tenant's intro LLM is an outage ("broken-*" always fails) with a working fallback, so the same
call also proves the fallback adapters and the provider-error metrics. Debian's Prometheus scrapes
the worker during the call; afterwards the dashboard queries that need a caller's voice or a failing
provider (tests/panel_queries.py) must return data.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.worker_process import WorkerProcess
from storyteller_operator import render
from storyteller_operator.sessions import PrometheusSessionSource
from storyteller_operator.tenant import Tenant
from tests.panel_queries import DASHBOARDS, assert_has_data, panel_queries, substitute


def _listening_after_speaking(caller: Caller, speeches: int) -> Callable[[], bool]:
    """The agent has finished its `speeches`-th turn and waits for the caller."""
    return lambda: (
        caller.agent_states.count("speaking") >= speeches and caller.agent_states[-1] == "listening"
    )


def _samples(metrics_text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name
    }


async def test_dispatched_agent_greets_hands_off_tells_the_story_and_hangs_up(
    livekit_server: LiveKitServer,
    model_server: ThreadedServer,
    start_worker: Callable[..., WorkerProcess],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    model_server.recorder.stt_script.extend(CALLER_SCRIPT)
    base = model_server.base_url
    intro = {
        "llm": {
            "provider": "openai",
            "model": "broken-primary",
            "baseURL": base,
            "fallbacks": [{"provider": "openai", "model": "gpt-4o-mini", "baseURL": base}],
        },
        "stt": {"provider": "deepgram", "model": "nova-3", "language": "en", "baseURL": base},
        "tts": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "echo", "baseURL": base},
    }
    worker = start_worker(base, intro=intro)
    prometheus = prometheus_factory(
        {"storyteller-worker": [(f"127.0.0.1:{worker.metrics_port}", {"namespace": "acme", "pod": "w-0"})]},
        rule_files=(DASHBOARDS / "rules.yaml",),
    )
    prometheus.wait_for('up{job="storyteller-worker"}', lambda r: bool(r) and r[0]["value"][1] == "1")
    room = f"story-{uuid.uuid4().hex[:8]}"

    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="acme-storyteller", room=room)
        )
        caller = Caller(
            livekit_server.url, caller_token(livekit_server.api_key, livekit_server.api_secret, room)
        )
        await caller.join()
        try:
            await caller.wait_for("the agent to join", lambda: bool(caller.agent_identity), 30)
            await caller.wait_for("the greeting's audio", lambda: caller.voiced_frames >= 50, 30)
            await caller.wait_for("the greeting to end", _listening_after_speaking(caller, 1), 30)
            assert "What is your name" in caller.transcript_text()

            await caller.say(CALLER_SCRIPT[0])
            await caller.wait_for(
                "the StoryAgent's story",
                lambda: "Once upon a time in Lisbon, Ada" in caller.transcript_text(),
                60,
            )
            story_frames = caller.voiced_frames
            # Mid-call, the KEDA trigger's query (autoscaler: keda) sees this session plus the 2 spare slots.
            acme = Tenant.from_object(
                {
                    "metadata": {"name": "acme", "namespace": "acme"},
                    "spec": {
                        "livekit": {"url": livekit_server.url, "credentialsSecret": "livekit"},
                        "pool": {"spareSessions": 2},
                    },
                }
            )
            keda_query = render.sessions_query(acme)
            await asyncio.to_thread(  # off the event loop: the caller keeps receiving audio meanwhile
                prometheus.wait_for, keda_query, lambda r: bool(r) and float(r[0]["value"][1]) == 3
            )
            # ...and so does the operator's --sessions-source prometheus, on the worker's pod.
            worker_pod = {"metadata": {"name": "w-0", "namespace": "acme"}}
            assert PrometheusSessionSource(prometheus.url).active_sessions([worker_pod]) == {"w-0": 1}
            await caller.wait_for(
                "the story to pause for the caller", _listening_after_speaking(caller, 2), 60
            )
            assert caller.voiced_frames > story_frames, "the story was transcribed but not heard"

            await caller.say(CALLER_SCRIPT[1])
            await caller.wait_for("the room to be deleted", caller.disconnected.is_set, 60)
        finally:
            await caller.leave()

        assert "Goodbye, Ada" in caller.transcript_text()
        assert model_server.recorder.transcribed == CALLER_SCRIPT
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        assert not listed.rooms, "story_finished did not delete the room"

    requests = model_server.recorder.chat_requests
    # The primary failed and the fallback answered; the StoryAgent asked its own model.
    assert any(r["model"] == "broken-primary" for r in requests)
    assert any(r["model"] == "gpt-4o-mini" for r in requests)
    story_requests = [
        r for r in requests if any(t["function"]["name"] == "story_finished" for t in r.get("tools", []))
    ]
    assert story_requests and all(r["model"] == "gpt-4o" for r in story_requests)
    assert worker.status()["agent_name"] == "acme-storyteller"

    # The usage summary, logged when the session has ended.
    worker.wait_log('"session usage"')
    usage = next(json.loads(line) for line in worker.log().splitlines() if '"session usage"' in line)
    by_type = {u["type"]: u for u in usage["usage"]}
    assert by_type["llm_usage"]["input_tokens"] > 0
    assert by_type["tts_usage"]["characters_count"] > 0
    assert by_type["stt_usage"]["audio_duration"] > 0

    # The worker's /metrics counted this one session and one handoff, and the provider's failures.
    text = worker.metrics()
    assert _samples(text, "storyteller_sessions_started_total") == {(("tenant", "acme"),): 1.0}
    assert _samples(text, "storyteller_handoffs_total") == {
        (("from_agent", "IntroAgent"), ("tenant", "acme"), ("to_agent", "StoryAgent")): 1.0
    }
    errors = _samples(text, "storyteller_provider_errors_total")
    assert any(
        dict(k)["model"] == "broken-primary" and dict(k)["kind"] == "llm" and v >= 1
        for k, v in errors.items()
    )

    # Every dashboard query that needs a voice (STT, end of utterance) or a failing provider has data.
    stt_seen = 'sum(storyteller_stt_audio_seconds_total{tenant="acme"})'
    prometheus.wait_for(stt_seen, lambda r: bool(r) and float(r[0]["value"][1]) > 0)
    for query_id, expr in panel_queries("voice"):
        result = prometheus.query(substitute(expr, "acme", "acme"))
        assert_has_data(result, f"{query_id}: {expr}")

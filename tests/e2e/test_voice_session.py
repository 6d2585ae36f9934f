"""The whole voice path on a real LiveKit server: dispatch, greeting, handoff, story, hang-up.

The tenant is the example's shape: the intro on a chat model with Deepgram speech-to-text and OpenAI
text-to-speech, the story on `openai-realtime` (gpt-realtime, voice echo) with no TTS, through the real
plugin's Realtime API client against the local server's websocket. The caller's words are recognised from
their audio (PocketSphinx) by the Deepgram endpoint and by the realtime server. The intro LLM is an outage
("broken-*" always fails) with a working fallback, so the same call also proves the fallback adapters and
the provider-error metrics. Debian's Prometheus scrapes
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

from storyteller_api import contract
from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.worker_process import WorkerProcess
from storyteller_operator import render
from storyteller_operator.sessions import PrometheusSessionSource
from storyteller_operator.tenant import Tenant
from tests.panel_queries import DASHBOARDS, assert_has_data, panel_queries, substitute

OPEN_THE_DOOR = "Open the door"
REVISION = "5"  # as the operator would number what the pod runs


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
    story = {
        "llm": {"provider": "openai-realtime", "model": "gpt-realtime", "voice": "echo", "baseURL": base},
        "carryChatContext": False,
    }
    # As the operator starts it: its series carry the revision it runs.
    worker = start_worker(base, intro=intro, story=story, env={contract.REVISION_ENV: REVISION})
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
            # Its transcript is a text stream of its own, read to its end: it may complete after the state
            # attribute says "listening" (seen on a loaded machine).
            await caller.wait_for(
                "the greeting's transcript", lambda: "What is your name" in caller.transcript_text(), 30
            )

            await caller.say(CALLER_SCRIPT[0])
            await caller.wait_for(
                "the StoryAgent's story",
                lambda: "Once upon a time in Lisbon, Ada" in caller.transcript_text(),
                60,
            )
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
                "the story to pause for the caller", lambda: caller.agent_states[-1] == "listening", 60
            )
            # Its transcript's stream opened as its audio started playing: the voice went on after that.
            story_at = next(t for t, text in caller.transcript_times if text.startswith("Once upon a time"))
            assert any(end > story_at + 1.0 for _, end in caller.speech), (
                "the story was transcribed but not heard"
            )

            # The realtime model hears the caller's answer and the story goes on from it.
            await caller.say(OPEN_THE_DOOR)
            await caller.wait_for(
                "the story's next part", lambda: "Ada opened the door" in caller.transcript_text(), 60
            )
            await caller.wait_for(
                "the story to pause again",
                lambda: (
                    caller.agent_states[-1] == "listening" and caller.transcript_text().endswith("go on?")
                ),
                60,
            )
            await caller.say(CALLER_SCRIPT[1])
            await caller.wait_for("the room to be deleted", caller.disconnected.is_set, 60)
        finally:
            await caller.leave()

        assert "Goodbye, Ada" in caller.transcript_text()
        # Heard from the caller's audio: the name by the intro's Deepgram, the rest by the realtime model.
        recorder = model_server.recorder
        assert recorder.transcribed == [CALLER_SCRIPT[0] + "."]
        assert recorder.realtime.heard == [OPEN_THE_DOOR + ".", CALLER_SCRIPT[1] + "."]
        await livekit_server.wait_room_gone(room)  # story_finished deleted it

    requests = recorder.chat_requests
    # The primary failed and the fallback answered; the story never asked a chat model.
    assert any(r["model"] == "broken-primary" for r in requests)
    assert any(r["model"] == "gpt-4o-mini" for r in requests)
    assert not any(
        any(t["function"]["name"] == "story_finished" for t in r.get("tools", [])) for r in requests
    )
    # The StoryAgent ran on the realtime model: it told the story and called story_finished, which deleted
    # the room; every realtime answer was spoken by the model itself (no TTS request for it).
    assert [model for _, model in recorder.realtime.sessions_opened] == ["gpt-realtime"]
    assert ("story_finished", "{}") in recorder.realtime.function_calls
    assert any(text.startswith("Once upon a time in Lisbon, Ada") for text in recorder.realtime.spoken)
    assert not any(text.startswith("Once upon a time") for text in recorder.spoken)
    assert worker.status()["agent_name"] == "acme-storyteller"

    # The usage summary, logged when the session has ended.
    worker.wait_log('"session usage"')
    usage = next(json.loads(line) for line in worker.log().splitlines() if '"session usage"' in line)
    by_model = {(u["type"], u["model"]): u for u in usage["usage"]}
    assert by_model[("llm_usage", "gpt-4o-mini")]["input_tokens"] > 0
    assert by_model[("llm_usage", "gpt-realtime")]["input_audio_tokens"] > 0
    assert by_model[("tts_usage", "gpt-4o-mini-tts")]["characters_count"] > 0
    assert by_model[("stt_usage", "nova-3")]["audio_duration"] > 0
    # Per agent: the realtime model's text and audio tokens are the StoryAgent's, the speech the intro's.
    by_agent = usage["usage_by_agent"]
    (realtime,) = [u for key, u in by_agent["StoryAgent"].items() if key.endswith(" gpt-realtime")]
    assert realtime["input_audio_tokens"] > 0 and realtime["output_audio_tokens"] > 0
    assert realtime["output_tokens"] > realtime["output_audio_tokens"]  # the transcript's text tokens too
    assert not any(key.startswith("tts ") for key in by_agent["StoryAgent"])
    assert any(key.startswith("tts ") for key in by_agent["IntroAgent"])

    # The worker's /metrics counted this one session and one handoff, and the provider's failures.
    text = worker.metrics()
    revision = ("revision", REVISION)
    assert _samples(text, "storyteller_sessions_started_total") == {(revision, ("tenant", "acme")): 1.0}
    assert _samples(text, "storyteller_handoffs_total") == {
        (("from_agent", "IntroAgent"), revision, ("tenant", "acme"), ("to_agent", "StoryAgent")): 1.0
    }
    # It ended once, as the story meant it to (the hang-up: the user's or the room's close), not by an error.
    ended = _samples(text, "storyteller_sessions_ended_total")
    assert sum(ended.values()) == 1.0, ended
    assert ended[(("reason", "error"), revision, ("tenant", "acme"))] == 0.0
    story_model = (
        ("agent", "StoryAgent"),
        ("model", "gpt-realtime"),
        ("provider", "openai-realtime"),
        revision,
        ("tenant", "acme"),
    )
    assert _samples(text, "storyteller_llm_output_audio_tokens_total")[story_model] > 0
    # Two story parts and the goodbye (the story_finished call itself has no audio to be first).
    assert _samples(text, "storyteller_llm_ttft_seconds_count")[story_model] == 3
    first_audio = _samples(text, "storyteller_time_to_first_audio_seconds_count")
    assert first_audio[(("agent", "StoryAgent"), revision, ("tenant", "acme"))] >= 1
    assert first_audio[(("agent", "IntroAgent"), revision, ("tenant", "acme"))] >= 1
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

"""Model blocks become the real plugin objects; fallbacks use the framework's adapters."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import deepgram, openai

from storyteller_api.spec import LLMSpec, STTSpec, TTSSpec
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker import framework
from storyteller_worker.agents.story import StoryAgent
from storyteller_worker.config import parse_tenant_config
from storyteller_worker.providers.plugins import build_llm, build_stt, build_tts


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")


def test_plain_blocks_build_the_named_plugins() -> None:
    llm = build_llm(LLMSpec(provider="openai", model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1"))
    assert isinstance(llm, openai.LLM) and llm.model == "gpt-4o-mini"
    assert isinstance(build_stt(STTSpec(provider="deepgram", model="nova-3"), None), deepgram.STT)
    assert isinstance(build_stt(STTSpec(provider="openai", model="gpt-4o-mini-transcribe"), None), openai.STT)
    assert isinstance(build_tts(TTSSpec(provider="deepgram", model="aura-2-andromeda-en")), deepgram.TTS)
    assert isinstance(
        build_llm(LLMSpec(provider="openai-realtime", model="gpt-realtime")), lk_llm.RealtimeModel
    )


def test_fallbacks_wrap_primary_and_fallbacks_in_order() -> None:
    spec: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "fallbacks": [{"provider": "openai", "model": "gpt-4o", "baseURL": "http://127.0.0.1:9/v1"}],
    }
    llm = build_llm(LLMSpec.model_validate(spec))
    assert isinstance(llm, lk_llm.FallbackAdapter)
    assert [m.model for m in framework.fallback_instances(llm)] == ["gpt-4o-mini", "gpt-4o"]

    tts = build_tts(
        TTSSpec.model_validate(
            {
                "provider": "openai",
                "model": "tts-1",
                "fallbacks": [{"provider": "deepgram", "model": "aura-2"}],
            }
        )
    )
    assert isinstance(tts, lk_tts.FallbackAdapter) and len(framework.fallback_instances(tts)) == 2

    stt = build_stt(
        STTSpec.model_validate(
            {
                "provider": "deepgram",
                "model": "nova-3",
                "fallbacks": [{"provider": "openai", "model": "whisper-1"}],
            }
        ),
        vad=None,
    )
    assert isinstance(stt, lk_stt.FallbackAdapter)


def test_story_agent_builds_only_what_differs_and_realtime_has_no_tts() -> None:
    same = parse_tenant_config(
        tenant_dict(
            "http://127.0.0.1:9/v1",
            story={"llm": {"provider": "openai", "model": "gpt-4o-mini", "baseURL": "http://127.0.0.1:9/v1"}},
        )
    )
    agent = StoryAgent(same, "Ada", "Lisbon")
    assert agent.llm is NOT_GIVEN and agent.tts is NOT_GIVEN  # inherited from the session

    realtime = parse_tenant_config(
        tenant_dict(
            "http://127.0.0.1:9/v1", story={"llm": {"provider": "openai-realtime", "model": "gpt-realtime"}}
        )
    )
    agent = StoryAgent(realtime, "Ada", "Lisbon")
    assert isinstance(agent.llm, lk_llm.RealtimeModel)
    assert agent.tts is None
    # It transcribes the caller itself: the session's (intro's) STT is not kept streaming and billed.
    assert agent.stt is None

"""One model block of the tenant config → the real LiveKit plugin object, with fallback adapters.

Keys are not passed here: each plugin reads its own environment variable (OPENAI_API_KEY,
DEEPGRAM_API_KEY), so a key never travels through our code. `baseURL` is the API base
(`https://api.openai.com/v1`, `https://api.deepgram.com/v1`), so self-hosted endpoints work too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad
from livekit.plugins import deepgram, openai, silero

from storyteller_api.spec import LLMFallback, LLMSpec, STTFallback, STTSpec, TTSFallback, TTSSpec


def _common(spec: LLMSpec | LLMFallback | STTSpec | STTFallback | TTSSpec | TTSFallback) -> dict[str, Any]:
    """Keyword arguments every openai plugin takes the same way."""
    kwargs: dict[str, Any] = {"model": spec.model}
    if spec.base_url:
        kwargs["base_url"] = spec.base_url
    return kwargs


class ObservedRealtimeModel(openai.realtime.RealtimeModel):
    """The plugin's realtime model, handing each live session it opens to `session_observers` first.

    A realtime model reports its usage and time to first audio on the session (one per agent activity)
    that the framework opens, not on the model: observers subscribe there (`telemetry.session_metrics`).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session_observers: list[Callable[[lk_llm.RealtimeSession[Any]], None]] = []

    def session(self, **kwargs: Any) -> openai.realtime.RealtimeSession:
        live = super().session(**kwargs)
        for observe in self.session_observers:
            observe(live)
        return live


def _one_llm(spec: LLMSpec | LLMFallback) -> lk_llm.LLM[Any] | lk_llm.RealtimeModel:
    kwargs = _common(spec)
    if spec.temperature is not None:
        kwargs["temperature"] = spec.temperature
    if spec.provider == "openai-realtime":
        if spec.voice:
            kwargs["voice"] = spec.voice
        return ObservedRealtimeModel(**kwargs)
    return openai.LLM(**kwargs)


def build_llm(spec: LLMSpec) -> lk_llm.LLM[Any] | lk_llm.RealtimeModel:
    """The phase's LLM; with fallbacks, a FallbackAdapter that tries them in order."""
    primary = _one_llm(spec)
    if not spec.fallbacks:
        return primary
    assert isinstance(primary, lk_llm.LLM)  # realtime models take no fallbacks (config validates it)
    others = [_one_llm(f) for f in spec.fallbacks]
    return lk_llm.FallbackAdapter([primary, *others])  # type: ignore[list-item]


def _one_stt(spec: STTSpec | STTFallback) -> lk_stt.STT[Any]:
    if spec.provider == "deepgram":
        kwargs: dict[str, Any] = {"model": spec.model}
        if spec.language:
            kwargs["language"] = spec.language
        if spec.base_url:
            kwargs["base_url"] = spec.base_url.rstrip("/") + "/listen"
        return deepgram.STT(**kwargs)
    kwargs = _common(spec)
    if spec.language:
        kwargs["language"] = spec.language
    return openai.STT(**kwargs)


def build_stt(spec: STTSpec, vad: lk_vad.VAD | None) -> lk_stt.STT[Any]:
    """The phase's STT; fallbacks share the VAD so non-streaming engines can stand in."""
    primary = _one_stt(spec)
    if not spec.fallbacks:
        return primary
    engines = [primary, *(_one_stt(f) for f in spec.fallbacks)]
    if vad is None and not all(e.capabilities.streaming for e in engines):
        # The adapter segments audio for non-streaming engines with a VAD; the session's is not
        # at hand (text-only sessions), so load one: Silero ships in the wheel and loads in ~0.1 s.
        vad = silero.VAD.load()
    return lk_stt.FallbackAdapter(engines, vad=vad)


def _one_tts(spec: TTSSpec | TTSFallback) -> lk_tts.TTS[Any]:
    if spec.provider == "deepgram":
        # Deepgram names the voice in the model ("aura-2-andromeda-en"); `voice` is not used.
        kwargs: dict[str, Any] = {"model": spec.model}
        if spec.base_url:
            kwargs["base_url"] = spec.base_url.rstrip("/") + "/speak"
        return deepgram.TTS(**kwargs)
    kwargs = _common(spec)
    if spec.voice:
        kwargs["voice"] = spec.voice
    return openai.TTS(**kwargs)


def build_tts(spec: TTSSpec) -> lk_tts.TTS[Any]:
    """The phase's TTS; with fallbacks, a FallbackAdapter (resampling to the primary's rate)."""
    primary = _one_tts(spec)
    if not spec.fallbacks:
        return primary
    return lk_tts.FallbackAdapter([primary, *(_one_tts(f) for f in spec.fallbacks)])

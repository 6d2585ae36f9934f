"""Which models each conversation phase runs on, built from the tenant config ahead of the session.

The intro's models are the session's; the story builds only what differs from the intro's stack and
inherits the rest (NOT_GIVEN). Both are built in the job process's prewarm (`build_session_models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from storyteller_api.spec import WorkerConfig

from .plugins import build_llm, build_stt, build_tts


@dataclass(frozen=True)
class PhaseModels:
    """One phase's models; NOT_GIVEN inherits the session's, a None tts means the llm speaks itself and a
    None stt that it hears for itself (a realtime model)."""

    llm: NotGivenOr[lk_llm.LLM[Any] | lk_llm.RealtimeModel] = NOT_GIVEN
    stt: NotGivenOr[lk_stt.STT[Any] | None] = NOT_GIVEN
    tts: NotGivenOr[lk_tts.TTS[Any] | None] = NOT_GIVEN


@dataclass(frozen=True)
class SessionModels:
    """Both phases' models, built before the session needs them (in the job process's prewarm):
    constructing a plugin client costs tens of milliseconds that a handoff should not wait for."""

    intro: PhaseModels
    story: PhaseModels


def build_intro_models(tenant: WorkerConfig, vad: lk_vad.VAD | None) -> PhaseModels:
    intro = tenant.intro
    return PhaseModels(
        llm=build_llm(intro.llm),
        stt=build_stt(intro.stt, vad),
        tts=build_tts(intro.tts) if intro.tts is not None else None,
    )


def build_story_models(tenant: WorkerConfig, vad: lk_vad.VAD | None) -> PhaseModels:
    """Only what differs from the intro's stack is built; the rest is inherited from the session."""
    story, intro = tenant.story, tenant.intro
    tts: NotGivenOr[lk_tts.TTS[Any] | None] = NOT_GIVEN
    stt: NotGivenOr[lk_stt.STT[Any] | None] = NOT_GIVEN
    if story.llm.realtime:
        tts = None  # the realtime model speaks itself
    elif story.tts is not None and story.tts != intro.tts:
        tts = build_tts(story.tts)
    if story.stt is not None and story.stt != intro.stt:
        stt = build_stt(story.stt, vad)
    elif story.llm.realtime and story.stt is None:
        # It transcribes what it hears itself: the intro's STT would be billed for audio nobody reads.
        stt = None
    return PhaseModels(
        llm=build_llm(story.llm) if story.llm != intro.llm else NOT_GIVEN,
        stt=stt,
        tts=tts,
    )


def build_session_models(tenant: WorkerConfig, vad: lk_vad.VAD | None) -> SessionModels:
    return SessionModels(intro=build_intro_models(tenant, vad), story=build_story_models(tenant, vad))

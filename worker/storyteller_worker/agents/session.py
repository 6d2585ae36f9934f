"""The AgentSession of one conversation, built from the tenant config on the intro phase's models."""

from __future__ import annotations

from livekit.agents import AgentSession
from livekit.agents import vad as lk_vad
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice.turn import TurnHandlingOptions

from storyteller_api.spec import WorkerConfig

from ..providers.phases import PhaseModels, build_intro_models
from .userdata import StoryData


def turn_handling(tenant: WorkerConfig) -> TurnHandlingOptions:
    """The session's turn handling: "model" leaves the framework its default (its end-of-turn model);
    "vad" and "stt" are the framework's own modes of those names."""
    if tenant.turn_detection == "model":
        return {}
    return {"turn_detection": tenant.turn_detection}


def build_session(
    tenant: WorkerConfig, vad: lk_vad.VAD | None, *, models: PhaseModels | None = None
) -> AgentSession[StoryData]:
    """A session on the intro phase's models with empty `StoryData`; StoryAgent overrides what differs.

    `vad` is the prewarmed Silero VAD of the job process (None in text-only tests); `models` the
    intro's models when built ahead (`providers.phases.build_session_models`), else built here.
    """
    models = models or build_intro_models(tenant, vad)
    return AgentSession[StoryData](
        vad=vad,
        llm=models.llm,
        stt=models.stt if models.stt is not None else NOT_GIVEN,  # None: a realtime llm hears itself
        tts=models.tts if models.tts is not None else NOT_GIVEN,  # None: a realtime llm speaks itself
        turn_handling=turn_handling(tenant),
        userdata=StoryData(),
    )

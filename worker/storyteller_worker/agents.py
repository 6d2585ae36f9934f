"""The storyteller flow: one agent class per conversation phase, sharing typed `StoryData` userdata.

IntroAgent asks for the user's name and location; its `information_gathered` tool stores them and
hands off to StoryAgent, which may run on its own model stack (for example a realtime model that
speaks for itself). StoryAgent's `story_finished` says goodbye and deletes the room. The tools'
docstrings are what the LLM reads: they are the contract with the model, keep them precise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from livekit import api
from livekit.agents import Agent, ChatContext, RunContext, function_tool, get_job_context
from livekit.agents import vad as lk_vad

from .config import TenantConfig
from .metrics import record_handoff
from .providers import PhaseModels, build_story_models
from .tracing import record_handoff_span

logger = logging.getLogger("storyteller.worker.agents")


@dataclass
class StoryData:
    """What the intro learns and the story uses; shared by every agent of one session."""

    name: str | None = None
    location: str | None = None


class IntroAgent(Agent):
    """Greets the user and gathers their name and location; runs on the session's (intro) models."""

    def __init__(self, tenant: TenantConfig, *, story_models: PhaseModels | None = None) -> None:
        """`story_models` are the StoryAgent's, built ahead (prewarm); else built at the handoff."""
        super().__init__(instructions=f"{tenant.persona} {tenant.intro.instructions}")
        self.tenant = tenant
        self._story_models = story_models

    async def on_enter(self) -> None:
        # The greeting is generated from the instructions, so each tenant's persona speaks first.
        self.session.generate_reply()

    @function_tool
    async def information_gathered(
        self, context: RunContext[StoryData], name: str, location: str
    ) -> tuple[Agent, str]:
        """Called when the user has provided the information needed to make the story
        personalized and engaging.

        Args:
            name: The name of the user
            location: The location of the user
        """
        context.userdata.name = name
        context.userdata.location = location
        carried = self.chat_ctx if self.tenant.story.carry_chat_context else None
        story = StoryAgent(
            self.tenant, name, location, models=self._story_models, chat_ctx=carried, vad=context.session.vad
        )
        logger.info(
            "handoff",
            extra={"from_agent": "IntroAgent", "to_agent": "StoryAgent", "tenant": self.tenant.tenant},
        )
        record_handoff(self.tenant.tenant, "IntroAgent", "StoryAgent")
        record_handoff_span(self.tenant.tenant, "IntroAgent", "StoryAgent")
        return story, "Let's start the story!"


class StoryAgent(Agent):
    """Tells the personalized, interactive story; may use its own LLM, STT and TTS."""

    def __init__(
        self,
        tenant: TenantConfig,
        name: str,
        location: str,
        *,
        models: PhaseModels | None = None,
        chat_ctx: ChatContext | None = None,
        vad: lk_vad.VAD | None = None,
    ) -> None:
        models = models or build_story_models(tenant, vad)
        super().__init__(
            instructions=(
                f"{tenant.persona} {tenant.story.instructions} The user's name is {name}, from {location}."
            ),
            llm=models.llm,
            stt=models.stt,
            tts=models.tts,
            chat_ctx=chat_ctx,
        )
        self.tenant = tenant

    async def on_enter(self) -> None:
        self.session.generate_reply()

    @function_tool
    async def story_finished(self, context: RunContext[StoryData]) -> None:
        """When you are finished telling the story (and the user confirms they don't
        want anymore), call this function to end the conversation."""
        # Stop whatever is being said, then a goodbye the user cannot talk over.
        self.session.interrupt()
        await self.session.generate_reply(
            instructions=f"say goodbye to {context.userdata.name}", allow_interruptions=False
        )
        await hang_up()
        self.session.shutdown()


async def hang_up() -> None:
    """Delete the session's room through the LiveKit server API, which disconnects everyone.

    The framework's `JobContext.delete_room` does nothing for console (fake) jobs, so this calls
    the API itself: the room is really deleted wherever a LiveKit server is configured.
    """
    job_ctx = get_job_context()
    room_name = job_ctx.room.name or job_ctx.job.room.name
    try:
        await job_ctx.api.room.delete_room(api.DeleteRoomRequest(room=room_name))
    except api.TwirpError as err:
        if err.code != api.TwirpErrorCode.NOT_FOUND:  # already gone is what we wanted
            raise
    logger.info("room deleted", extra={"job_id": job_ctx.job.id})

"""The story phase: `StoryAgent` tells the personalized, interactive story, then ends the call.

Its `story_finished` tool says goodbye and deletes the room (`hang_up`). The tool's docstring is what the
LLM reads: it is the contract with the model, keep it precise.
"""

from __future__ import annotations

import logging

from livekit import api
from livekit.agents import Agent, ChatContext, RunContext, function_tool, get_job_context
from livekit.agents import vad as lk_vad

from storyteller_api.spec import WorkerConfig

from ..providers.phases import PhaseModels, build_story_models
from .bridge import BridgeAudio, start_with_bridge
from .userdata import StoryData

logger = logging.getLogger("storyteller.worker.agents")


class StoryAgent(Agent):
    """Tells the personalized, interactive story; may use its own LLM, STT and TTS."""

    def __init__(
        self,
        tenant: WorkerConfig,
        name: str,
        location: str,
        *,
        models: PhaseModels | None = None,
        chat_ctx: ChatContext | None = None,
        vad: lk_vad.VAD | None = None,
        bridge: BridgeAudio | None = None,
    ) -> None:
        """`bridge`: the intro's rendered bridge, to play first (spec.intro.handoff.mode overlapping)."""
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
        self._bridge = bridge

    async def on_enter(self) -> None:
        if self._bridge is not None:
            await start_with_bridge(self, self._bridge)
        else:
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

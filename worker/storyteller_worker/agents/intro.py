"""The intro phase: `IntroAgent` greets the user, gathers their name and location, and hands off.

Its `information_gathered` tool stores them in `StoryData` and hands off to `StoryAgent`, which may run on
its own model stack (for example a realtime model that speaks for itself). The tool's docstring is what
the LLM reads: it is the contract with the model, keep it precise.
"""

from __future__ import annotations

import logging

from livekit.agents import Agent, RunContext, function_tool

from storyteller_api.spec import WorkerConfig

from ..providers.phases import PhaseModels
from ..telemetry.metrics import record_handoff
from ..telemetry.tracing import record_handoff_span
from .bridge import BridgeAudio
from .story import StoryAgent
from .userdata import StoryData

logger = logging.getLogger("storyteller.worker.agents")


class IntroAgent(Agent):
    """Greets the user and gathers their name and location; runs on the session's (intro) models."""

    def __init__(self, tenant: WorkerConfig, *, story_models: PhaseModels | None = None) -> None:
        """`story_models` are the StoryAgent's, built ahead (prewarm); else built at the handoff."""
        super().__init__(instructions=f"{tenant.persona} {tenant.intro.instructions}")
        self.tenant = tenant
        self._story_models = story_models
        self._bridge: BridgeAudio | None = None

    async def on_enter(self) -> None:
        # The greeting is generated from the instructions, so each tenant's persona speaks first.
        self.session.generate_reply()
        handoff = self.tenant.intro.handoff
        if handoff.mode == "overlapping" and self.session.tts is not None:
            # Rendered now, in this agent's voice, while the caller is still giving their name.
            self._bridge = BridgeAudio(handoff.bridge, self.session.tts)

    async def on_exit(self) -> None:
        if self._bridge is not None and self.session.current_agent is self:
            self._bridge.close()  # the call ends here: no story will play it

    @function_tool
    async def information_gathered(
        self, context: RunContext[StoryData], name: str, location: str
    ) -> tuple[Agent, str | None]:
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
            self.tenant,
            name,
            location,
            models=self._story_models,
            chat_ctx=carried,
            vad=context.session.vad,
            bridge=self._bridge,
        )
        logger.info(
            "handoff",
            extra={"from_agent": "IntroAgent", "to_agent": "StoryAgent", "tenant": self.tenant.tenant},
        )
        record_handoff(self.tenant, "IntroAgent", "StoryAgent")
        record_handoff_span(self.tenant.tenant, "IntroAgent", "StoryAgent")
        if self._bridge is not None:
            return story, None  # the story agent plays the rendered bridge: no reply of this agent's
        # The intro's model answers the bridge and its reply plays before the story starts.
        return story, self.tenant.intro.handoff.bridge

"""Handoff latency: user's turn → the StoryAgent's first reply, ours vs the seed's bare flow.

Both run in text mode through the real openai plugin against the same local zero-latency model
server, interleaved in one run, so the difference is what our worker adds (config-built model
stacks, typed userdata, logging). Prints figures; asserts nothing.

    .venv/bin/python bench/handoff.py [--sessions 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from livekit.agents import Agent, AgentSession, RunContext, function_tool
from livekit.agents.utils import http_context
from livekit.plugins import deepgram, openai

from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker.agents.intro import IntroAgent
from storyteller_worker.agents.session import build_session
from storyteller_worker.config import parse_tenant_config
from storyteller_worker.providers.phases import build_session_models

USER_TURN = "My name is Ada and I live in Lisbon"


# --- the seed's bare flow, as the original example wrote it (text-only models) ---------------
@dataclass
class SeedData:
    name: str | None = None
    location: str | None = None


class SeedIntro(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="Your name is Echo. Ask the user for their name and where they are from."
        )

    async def on_enter(self) -> None:
        self.session.generate_reply()

    @function_tool
    async def information_gathered(
        self, context: RunContext[SeedData], name: str, location: str
    ) -> tuple[Agent, str]:
        """Called when the user has provided the information needed to make the story
        personalized and engaging.

        Args:
            name: The name of the user
            location: The location of the user
        """
        context.userdata.name, context.userdata.location = name, location
        return SeedStory(name, location), "Let's start the story!"


class SeedStory(Agent):
    def __init__(self, name: str, location: str) -> None:
        super().__init__(instructions=f"You are a storyteller. The user's name is {name}, from {location}.")

    async def on_enter(self) -> None:
        self.session.generate_reply()

    @function_tool
    async def story_finished(self, context: RunContext[SeedData]) -> None:
        """Call when the story is finished."""


async def _time_one(make: Callable[[], tuple[AgentSession[object], Agent]]) -> float:
    session, agent = make()
    first_story_reply = asyncio.Event()
    started = 0.0

    def on_item(ev: object) -> None:
        item = getattr(ev, "item", None)
        if getattr(item, "role", "") == "assistant" and "Once upon a time" in (item.text_content or ""):  # type: ignore[union-attr]
            first_story_reply.set()

    session.on("conversation_item_added", on_item)
    async with session:
        await session.start(agent)
        started = time.perf_counter()
        run = session.run(user_input=USER_TURN)
        await asyncio.wait_for(first_story_reply.wait(), timeout=30)
        elapsed = time.perf_counter() - started
        await run
    return elapsed


def _summary(xs: list[float]) -> tuple[float, float]:
    ordered = sorted(xs)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def main(sessions: int) -> None:
    server = ThreadedServer().start()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    os.environ.setdefault("DEEPGRAM_API_KEY", "dg-bench")
    tenant = parse_tenant_config(tenant_dict(server.base_url))

    def ours() -> tuple[AgentSession[object], Agent]:
        # As a job process does: the models are built in prewarm, before the session is timed.
        models = build_session_models(tenant, vad=None)
        session = build_session(tenant, vad=None, models=models.intro)
        return session, IntroAgent(tenant, story_models=models.story)  # type: ignore[return-value]

    def seed() -> tuple[AgentSession[object], Agent]:
        # The seed's stack (deepgram STT, openai LLM and TTS), on the same local server.
        session = AgentSession[SeedData](
            llm=openai.LLM(model="gpt-4o-mini", base_url=server.base_url),
            stt=deepgram.STT(model="nova-3", base_url=f"{server.base_url}/listen"),
            tts=openai.TTS(voice="echo", base_url=server.base_url),
            userdata=SeedData(),
        )
        return session, SeedIntro()  # type: ignore[return-value]

    results: dict[str, list[float]] = {"storyteller": [], "seed": []}
    async with http_context.open():
        for _ in range(2):  # warm-up: imports, connection pools
            await _time_one(ours)
            await _time_one(seed)
        for _ in range(sessions):
            results["storyteller"].append(await _time_one(ours))
            results["seed"].append(await _time_one(seed))
    server.stop()

    print(f"user turn -> StoryAgent's first reply, {sessions} sessions each, zero-latency local model")
    for name, xs in results.items():
        med, p95 = _summary(xs)
        print(f"  {name:12s} median {med * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms")
    (om, op), (sm, sp) = _summary(results["storyteller"]), _summary(results["seed"])
    print(f"  ratio storyteller/seed: median {om / sm:.2f}x   p95 {op / sp:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=50)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(parser.parse_args().sessions))

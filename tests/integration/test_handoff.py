"""The storyteller flow in text mode through the real openai plugin and a local model server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context
from livekit.agents.utils import http_context

from storyteller_devkit.model_server import ThreadedServer
from storyteller_worker.agents.intro import IntroAgent
from storyteller_worker.agents.session import build_session
from storyteller_worker.agents.story import StoryAgent
from storyteller_worker.agents.userdata import StoryData
from storyteller_worker.config import parse_tenant_config
from storyteller_worker.telemetry.session_metrics import SessionMetrics


def _tool_names(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools", [])]


def _system_text(request: dict[str, Any]) -> str:
    return " ".join(
        str(m.get("content")) for m in request["messages"] if m["role"] in ("system", "developer")
    )


async def test_intro_gathers_name_and_location_then_hands_off_to_story(
    model_server: ThreadedServer, tenant_data: dict[str, Any], provider_env: dict[str, str]
) -> None:
    tenant = parse_tenant_config(tenant_data)
    async with http_context.open():
        session: AgentSession[StoryData]
        async with build_session(tenant, vad=None) as session:
            await session.start(IntroAgent(tenant))
            result = await session.run(user_input="Hi! My name is Ada and I live in Lisbon.")

            result.expect.contains_function_call(
                name="information_gathered", arguments={"name": "Ada", "location": "Lisbon"}
            )
            result.expect.contains_agent_handoff(new_agent_type=StoryAgent)

            assert session.userdata == StoryData(name="Ada", location="Lisbon")
            story = session.current_agent
            assert isinstance(story, StoryAgent)
            assert "Ada" in story.instructions and "Lisbon" in story.instructions
            assert tenant.persona in story.instructions

    requests = model_server.recorder.chat_requests
    # The intro's greeting: the first request offers only the intro's tool, on the intro's model.
    assert _tool_names(requests[0]) == ["information_gathered"]
    assert requests[0]["model"] == "gpt-4o-mini"
    # The story phase runs on its own model and offers its own tool, with the user's data.
    story_requests = [r for r in requests if "story_finished" in _tool_names(r)]
    assert story_requests, "the StoryAgent never asked its model"
    assert all(r["model"] == "gpt-4o" for r in story_requests)
    assert "Ada" in _system_text(story_requests[0]) and "Lisbon" in _system_text(story_requests[0])
    # Without carryChatContext the story starts fresh: the intro's exchange is not sent again.
    assert not any("My name is Ada" in str(m.get("content")) for m in story_requests[0]["messages"])


async def test_the_intro_bridge_reply_is_counted_under_the_intro(
    model_server: ThreadedServer, tenant_data: dict[str, Any], provider_env: dict[str, str]
) -> None:
    """The handoff tool's reply ("Let's start the story!") is the IntroAgent's, spoken after the session's
    current agent became the StoryAgent. With one model for both agents only the reply's own agent can
    tell: the StoryAgent's share of the model's tokens is exactly its story."""
    tenant_data["story"]["llm"] = tenant_data["intro"]["llm"]
    tenant = parse_tenant_config(tenant_data)
    collected = SessionMetrics(tenant)
    async with http_context.open(), build_session(tenant, vad=None) as session:
        collected.attach(session)
        await session.start(IntroAgent(tenant))
        result = await session.run(user_input="My name is Ada and I live in Lisbon")
        result.expect.contains_agent_handoff(new_agent_type=StoryAgent)
        said = [
            e.item.text_content for e in result.events if e.type == "message" and e.item.role == "assistant"
        ]
        assert said[0] == "Let's start the story!"
        story = said[1]
        assert story and story.startswith("Once upon a time")

    def output_tokens(agent: str) -> float:
        (usage,) = [u for key, u in collected.usage_by_agent[agent].items() if key.startswith("llm ")]
        return usage["output_tokens"]

    # The local server counts a reply's tokens as 4 characters a token, plus one.
    assert output_tokens("StoryAgent") == len(story) // 4 + 1
    assert output_tokens("IntroAgent") >= len("Let's start the story!") // 4 + 1


async def test_an_overlapping_bridge_is_rendered_ahead_and_played_by_the_story(
    model_server: ThreadedServer, tenant_data: dict[str, Any], provider_env: dict[str, str]
) -> None:
    """spec.intro.handoff.mode overlapping: the bridge is spoken as written in the intro's voice (rendered
    before the handoff), the intro's model is not asked to answer the handoff, and the story's first reply
    follows the bridge."""
    tenant_data["intro"]["handoff"] = {"mode": "overlapping", "bridge": "Off we go, then!"}
    tenant = parse_tenant_config(tenant_data)
    recorder = model_server.recorder
    async with http_context.open(), build_session(tenant, vad=None) as session:
        await session.start(IntroAgent(tenant))
        await _until("the bridge rendered ahead", lambda: "Off we go, then!" in recorder.spoken)
        result = await session.run(user_input="My name is Ada and I live in Lisbon")
        result.expect.contains_agent_handoff(new_agent_type=StoryAgent)
        said = [
            e.item.text_content for e in result.events if e.type == "message" and e.item.role == "assistant"
        ]
        assert said[0] == "Off we go, then!"
        assert said[1].startswith("Once upon a time in Lisbon, Ada")

    # The handoff tool's output was never sent back to the intro's model for a reply.
    assert not any(r["messages"][-1]["role"] == "tool" for r in recorder.chat_requests)
    assert recorder.spoken.count("Off we go, then!") == 1


async def _until(what: str, condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_carry_chat_context_passes_the_intro_conversation_to_the_story(
    model_server: ThreadedServer, tenant_data: dict[str, Any], provider_env: dict[str, str]
) -> None:
    tenant_data["story"]["carryChatContext"] = True
    tenant = parse_tenant_config(tenant_data)
    async with http_context.open(), build_session(tenant, vad=None) as session:
        await session.start(IntroAgent(tenant))
        result = await session.run(user_input="My name is Ada and I live in Lisbon")
        result.expect.contains_agent_handoff(new_agent_type=StoryAgent)

    story_requests = [r for r in model_server.recorder.chat_requests if "story_finished" in _tool_names(r)]
    assert any("My name is Ada" in str(m.get("content")) for m in story_requests[0]["messages"])


async def test_story_finished_says_goodbye_deletes_the_room_and_ends_the_session(
    model_server: ThreadedServer, tenant_data: dict[str, Any], provider_env: dict[str, str]
) -> None:
    tenant = parse_tenant_config(tenant_data)
    room = rtc.Room()  # never connected: the fake job only needs its name
    async with http_context.open():
        with fake_job_context(room=room) as job_ctx:
            session = build_session(tenant, vad=None)
            closed = asyncio.Event()
            session.on("close", lambda _ev: closed.set())
            await session.start(IntroAgent(tenant))
            await session.run(user_input="My name is Ada and I live in Lisbon")
            result = await session.run(user_input="No thanks, that is all.")

            result.expect.contains_function_call(name="story_finished")
            goodbye = [
                e.item.text_content
                for e in result.events
                if e.type == "message" and e.item.role == "assistant"
            ]
            assert any("Goodbye, Ada" in (text or "") for text in goodbye), goodbye
            # The tool itself ends the session: nobody else closes it here.
            await asyncio.wait_for(closed.wait(), timeout=10)

    assert model_server.recorder.deleted_rooms == [job_ctx.job.room.name]

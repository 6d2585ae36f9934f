"""The local Realtime API endpoint under the real `livekit-plugins-openai` realtime client.

The plugin's `RealtimeModel` connects to the server on loopback and its protocol engine runs as it
would against OpenAI: answers stream as audio with their transcript, pushed espeak speech is detected,
heard and answered with a function call, usage becomes metrics, a cancelled or talked-over answer
stops, malformed events get errors, a dropped connection is reconnected with the chat replayed, and an
`AgentSession` runs a turn with a tool on it. Every server event the plugin received is checked
against the `openai` package's `RealtimeServerEvent` types.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import Agent, AgentSession, APIError, RunContext, function_tool, llm
from livekit.agents.metrics import RealtimeModelMetrics
from livekit.plugins.openai.realtime import RealtimeModel, RealtimeSession
from openai.types import realtime as rt
from pydantic import TypeAdapter

from storyteller_devkit import model_script
from storyteller_devkit.model_script import Reply
from storyteller_devkit.realtime_server import RealtimeRecorder, add_realtime_routes
from storyteller_devkit.speech import synthesize

Json = dict[str, Any]

RATE = 24000
UTTERANCE = "My name is Ada and I live in Lisbon"
HEARD = "My name is Ada and I live in Lisbon."  # what the stub recognizer hears in any audio
INSTRUCTIONS = "You are Echo, a storyteller."
TIMEOUT = 10.0
SERVER_EVENT = TypeAdapter(rt.RealtimeServerEvent)


@dataclass
class Ear:
    """A stub recognizer: remembers the audio it was given and hears `HEARD` in it."""

    calls: list[tuple[int, int]] = field(default_factory=list)  # (bytes of pcm, sample rate)

    def __call__(self, pcm: bytes, sample_rate: int) -> str:
        self.calls.append((len(pcm), sample_rate))
        return HEARD


@dataclass
class Harness:
    base_url: str
    recorder: RealtimeRecorder
    ear: Ear
    replies: list[tuple[list[Json], list[str]]]  # what the scripted model was asked
    session: RealtimeSession
    received: list[Json]  # every server event the plugin received, raw

    def assert_api_shaped(self) -> None:
        """Every event the plugin received validates as the API's server event of its type."""
        assert self.received
        for event in self.received:
            parsed = SERVER_EVENT.validate_python(event)
            assert parsed.type == event["type"]


@asynccontextmanager
async def serve(pace: float = 0.0) -> AsyncIterator[tuple[str, RealtimeRecorder, Ear, list[Any]]]:
    recorder, ear, replies = RealtimeRecorder(), Ear(), []

    def reply(messages: list[Json], tools: list[str]) -> Reply:
        replies.append((messages, tools))
        return model_script.reply(messages, tools)

    app = web.Application()
    add_realtime_routes(app, reply=reply, hear=ear, synthesize=synthesize, recorder=recorder, pace=pace)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", recorder, ear, replies
    finally:
        await runner.cleanup()


@asynccontextmanager
async def harness_for(pace: float = 0.0, **session_kwargs: Any) -> AsyncIterator[Harness]:
    async with serve(pace) as (base_url, recorder, ear, replies), aiohttp.ClientSession() as http:
        model = RealtimeModel(
            base_url=base_url, api_key="sk-test", model="gpt-realtime", voice="echo", http_session=http
        )
        session = model.session(**session_kwargs)
        received: list[Json] = []
        session.on("openai_server_event_received", received.append)
        try:
            yield Harness(base_url, recorder, ear, replies, session, received)
        finally:
            await session.aclose()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with harness_for() as h:
        yield h


def next_event(
    emitter: Any, name: str, accept: Callable[[Any], bool] = lambda _: True
) -> asyncio.Future[Any]:
    """A future for the next `name` event the emitter emits that `accept`s."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on(event: Any) -> None:
        if not fut.done() and accept(event):
            fut.set_result(event)

    emitter.on(name, on)
    fut.add_done_callback(lambda _: emitter.off(name, on))
    return fut


def server_event(h: Harness, type_: str) -> asyncio.Future[Any]:
    return next_event(h.session, "openai_server_event_received", lambda e: e["type"] == type_)


def response_metrics(h: Harness) -> asyncio.Future[Any]:
    # The plugin also reports the connection's set-up time as a RealtimeModelMetrics, with no request.
    def accept(m: Any) -> bool:
        return isinstance(m, RealtimeModelMetrics) and bool(m.request_id)

    return next_event(h.session, "metrics_collected", accept)


async def within(awaitable: Any, seconds: float = TIMEOUT) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


@dataclass
class Generated:
    text: str = ""
    message_ids: list[str] = field(default_factory=list)
    frames: list[rtc.AudioFrame] = field(default_factory=list)
    calls: list[llm.FunctionCall] = field(default_factory=list)

    @property
    def pcm(self) -> bytes:
        return b"".join(f.data.tobytes() for f in self.frames)


async def collect(gen: llm.GenerationCreatedEvent) -> Generated:
    """Everything a generation streams: its messages' text and audio, and its function calls."""
    out = Generated()

    async def read_messages() -> None:
        async for msg in gen.message_stream:
            out.message_ids.append(msg.message_id)

            async def text(m: llm.MessageGeneration = msg) -> None:
                async for delta in m.text_stream:
                    out.text += delta

            async def audio(m: llm.MessageGeneration = msg) -> None:
                async for frame in m.audio_stream:
                    out.frames.append(frame)

            await asyncio.gather(text(), audio())

    async def read_calls() -> None:
        async for call in gen.function_stream:
            out.calls.append(call)

    await within(asyncio.gather(read_messages(), read_calls()))
    return out


async def reply_to(h: Harness, **kwargs: Any) -> Generated:
    gen = await within(h.session.generate_reply(**kwargs))
    return await collect(gen)


def frames_of(pcm: bytes, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    size = RATE * 2 * frame_ms // 1000
    return [
        rtc.AudioFrame(
            data=pcm[i : i + size], sample_rate=RATE, num_channels=1, samples_per_channel=size // 2
        )
        for i in range(0, len(pcm) - size + 1, size)
    ]


async def test_generate_reply_streams_speech_with_its_transcript(harness: Harness) -> None:
    h = harness
    await h.session.update_instructions(INSTRUCTIONS)
    metrics_fut = response_metrics(h)

    gen = await within(h.session.generate_reply())
    assert gen.user_initiated
    out = await collect(gen)

    # The scripted model greets (no user turn yet); its words and its espeak audio reach the plugin.
    assert out.text == model_script.GREETING
    assert out.calls == []
    assert {(f.sample_rate, f.num_channels) for f in out.frames} == {(RATE, 1)}
    assert len(out.frames) > 10  # streamed in chunks, not in one piece
    assert out.pcm == synthesize(model_script.GREETING, RATE)
    assert h.recorder.spoken == [model_script.GREETING]
    assert h.recorder.response_instructions == [INSTRUCTIONS]
    assert h.replies[-1] == ([{"role": "system", "content": INSTRUCTIONS}], [])

    metrics: RealtimeModelMetrics = await within(metrics_fut)
    audio_ms = len(out.pcm) // 48
    assert not metrics.cancelled
    assert 0 < metrics.ttft < metrics.duration
    assert metrics.output_token_details.audio_tokens == audio_ms * 20 // 1000 > 0
    assert metrics.output_token_details.text_tokens == math.ceil(len(model_script.GREETING) / 4)
    assert metrics.input_token_details.text_tokens == math.ceil(len(INSTRUCTIONS) / 4)
    assert metrics.input_token_details.audio_tokens == 0
    assert metrics.input_tokens + metrics.output_tokens == metrics.total_tokens
    # The greeting is the assistant's item in the plugin's mirror of the conversation.
    assert [(i.role, i.text_content) for i in h.session.chat_ctx.messages()] == [
        ("assistant", model_script.GREETING)
    ]

    # Response instructions replace the session's; the plugin sends both, joined.
    metrics_fut = response_metrics(h)
    out = await reply_to(h, instructions="Now say goodbye to Ada")
    joined = f"{INSTRUCTIONS}\nNow say goodbye to Ada"
    asked = [{"role": "system", "content": joined}, {"role": "assistant", "content": model_script.GREETING}]
    assert h.replies[-1] == (asked, [])
    assert h.recorder.response_instructions[-1] == joined
    assert out.text == model_script.reply(asked, []).text != model_script.GREETING
    metrics = await within(metrics_fut)
    # The greeting is audio in the context now; what the last response read is cached.
    assert metrics.input_token_details.audio_tokens == audio_ms * 10 // 1000 > 0
    assert metrics.input_token_details.cached_tokens == math.ceil(len(INSTRUCTIONS) / 4)
    h.assert_api_shaped()


async def test_spoken_name_is_heard_and_answered_with_a_function_call(harness: Harness) -> None:
    h = harness

    @llm.function_tool
    async def information_gathered(name: str, location: str) -> str:
        """Called once the user has said their name and where they live."""
        return "ok"

    await h.session.update_instructions(INSTRUCTIONS)
    await h.session.update_tools([information_gathered])
    started = next_event(h.session, "input_speech_started")
    transcribed = next_event(h.session, "input_audio_transcription_completed", lambda e: e.is_final)
    generated = next_event(h.session, "generation_created")
    metrics_fut = response_metrics(h)

    speech = synthesize(UTTERANCE, RATE)
    for frame in frames_of(speech + bytes(RATE * 2)):  # the utterance, then a second of silence
        h.session.push_audio(frame)

    await within(started)
    transcript: llm.InputTranscriptionCompleted = await within(transcribed)
    assert transcript.transcript == HEARD
    assert h.recorder.heard == [HEARD]
    # The recognizer got the utterance at 24 kHz: all of it, but not the silence before the VAD's end.
    [(heard_bytes, heard_rate)] = h.ear.calls
    assert heard_rate == RATE
    assert len(speech) * 0.8 < heard_bytes < len(speech) + RATE * 2

    # Server VAD answered the turn by itself, with the tool the scripted model picks for a name.
    gen: llm.GenerationCreatedEvent = await within(generated)
    assert not gen.user_initiated
    out = await collect(gen)
    assert out.text == "" and out.frames == []
    [call] = out.calls
    assert call.name == "information_gathered"
    assert json.loads(call.arguments) == {"name": "Ada", "location": "Lisbon"}
    assert h.recorder.function_calls == [("information_gathered", call.arguments)]
    messages, tools = h.replies[-1]
    assert tools == ["information_gathered"]
    assert messages[-1] == {"role": "user", "content": HEARD}
    metrics: RealtimeModelMetrics = await within(metrics_fut)
    assert metrics.input_token_details.audio_tokens > 20  # the user's ~2.5 s of audio
    assert metrics.output_token_details.text_tokens > 0
    assert metrics.output_token_details.audio_tokens == 0

    # The tool's output goes back into the conversation; the next answer follows from it.
    chat_ctx = h.session.chat_ctx.copy()
    chat_ctx.items.append(llm.FunctionCallOutput(call_id=call.call_id, output="Ada, Lisbon", is_error=False))
    await within(h.session.update_chat_ctx(chat_ctx))
    assert h.recorder.function_outputs == [(call.call_id, "Ada, Lisbon")]
    out = await reply_to(h)
    tool_call = {"name": "information_gathered", "arguments": call.arguments}
    asked: list[Json] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": HEARD},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.call_id, "type": "function", "function": tool_call}],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "Ada, Lisbon"},
    ]
    assert h.replies[-1] == (asked, ["information_gathered"])
    assert out.text == model_script.reply(asked, ["information_gathered"]).text
    assert out.text and out.frames
    h.assert_api_shaped()


async def test_manual_commit_without_server_vad() -> None:
    async with harness_for(turn_detection_disabled=True) as h:
        committed = server_event(h, "input_audio_buffer.committed")
        for frame in frames_of(synthesize(UTTERANCE, RATE)):
            h.session.push_audio(frame)
        h.session.commit_audio()
        await within(committed)
        # The reply asked right after the commit answers what the commit heard.
        out = await reply_to(h)
        assert out.text == model_script.ASK_AGAIN
        assert h.replies[-1][0] == [{"role": "user", "content": HEARD}]
        assert [s["type"] for s in h.received].count("input_audio_buffer.speech_started") == 0
        assert h.recorder.session_updates[0]["audio"]["input"]["turn_detection"] is None
        h.assert_api_shaped()


async def test_cancelled_answer_stops_and_can_be_truncated() -> None:
    async with harness_for(pace=1.0) as h:  # real time, so the answer is still going when cancelled
        metrics_fut = response_metrics(h)
        gen = await within(h.session.generate_reply())
        msg: llm.MessageGeneration = await within(anext(aiter(gen.message_stream)))
        await within(anext(aiter(msg.audio_stream)))
        h.session.interrupt()
        metrics: RealtimeModelMetrics = await within(metrics_fut)
        assert metrics.cancelled
        done = next(e for e in h.received if e["type"] == "response.done")
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        [said] = h.recorder.spoken
        assert len(said) < len(model_script.GREETING) and model_script.GREETING.startswith(said)

        truncated = server_event(h, "conversation.item.truncated")
        h.session.truncate(message_id=msg.message_id, modalities=["audio", "text"], audio_end_ms=50)
        event = await within(truncated)
        assert (event["item_id"], event["audio_end_ms"]) == (msg.message_id, 50)
        assert h.recorder.truncations == [(msg.message_id, 50)]
        # Nothing is active any more: a second cancel is refused, as the API refuses it.
        refused = server_event(h, "error")
        h.session.send_event({"type": "response.cancel"})
        assert (await within(refused))["error"]["message"].startswith("Cancellation failed")
        h.assert_api_shaped()


async def test_user_speech_interrupts_the_answer() -> None:
    async with harness_for(pace=1.0) as h:
        metrics_fut = response_metrics(h)
        gen = await within(h.session.generate_reply())
        msg: llm.MessageGeneration = await within(anext(aiter(gen.message_stream)))
        await within(anext(aiter(msg.audio_stream)))

        # The user talks over the answer: server VAD cancels it, then answers the user's turn.
        started = next_event(h.session, "input_speech_started")
        answered = next_event(h.session, "generation_created")
        for frame in frames_of(synthesize(UTTERANCE, RATE) + bytes(RATE * 2)):
            h.session.push_audio(frame)
        await within(started)
        metrics: RealtimeModelMetrics = await within(metrics_fut)
        assert metrics.cancelled
        done = next(e for e in h.received if e["type"] == "response.done")
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        second: llm.GenerationCreatedEvent = await within(answered)
        assert not second.user_initiated
        assert h.replies[-1][0][-1] == {"role": "user", "content": HEARD}
        metrics_fut = response_metrics(h)
        h.session.interrupt()
        assert (await within(metrics_fut)).cancelled
        h.assert_api_shaped()


async def test_malformed_event_gets_an_error_and_the_session_goes_on(harness: Harness) -> None:
    h = harness
    errors = next_event(h.session, "error")
    bad = {"type": "message", "role": "wizard", "content": []}
    h.session.send_event({"type": "conversation.item.create", "event_id": "evt_bad", "item": bad})
    error: llm.RealtimeModelError = await within(errors)
    assert error.recoverable
    assert isinstance(error.error, APIError)
    body: Any = error.error.body  # the error event's `error`
    assert (body.type, body.event_id) == ("invalid_request_error", "evt_bad")
    assert "item" in body.message

    out = await reply_to(h)
    assert out.text == model_script.GREETING
    assert len(h.recorder.sessions_opened) == 1 and h.recorder.dropped == 0
    h.assert_api_shaped()


async def test_raw_client_gets_errors_for_malformed_events() -> None:
    async with serve() as (base_url, recorder, _, _), aiohttp.ClientSession() as http:
        url = base_url.replace("http", "ws", 1) + "/realtime?model=gpt-realtime"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 401

        async with http.ws_connect(url, headers={"Authorization": "Bearer sk-test"}) as ws:
            created = await within(ws.receive_json())
            assert created["type"] == "session.created"
            assert created["session"]["model"] == "gpt-realtime"
            sent: list[str | Json] = [
                "not json",
                {"type": "session.nonsense"},
                {"type": "input_audio_buffer.append"},
                {"type": "input_audio_buffer.append", "audio": "not base64!"},
                {"type": "input_audio_buffer.commit", "event_id": "evt_commit"},
                {"type": "conversation.item.delete", "item_id": "item_nope"},
            ]
            for event in sent:
                await (ws.send_str(event) if isinstance(event, str) else ws.send_json(event))
            replies = [await within(ws.receive_json()) for _ in sent]
            assert [r["type"] for r in replies] == ["error"] * len(sent)
            assert {r["error"]["type"] for r in replies} == {"invalid_request_error"}
            assert [r["error"]["param"] for r in replies[1:4]] == ["type", "audio", "audio"]
            assert replies[4]["error"]["code"] == "input_audio_buffer_commit_empty"
            assert replies[4]["error"]["event_id"] == "evt_commit"
            assert "item_nope" in replies[5]["error"]["message"]

            # The connection stays open and keeps working.
            await ws.send_json(
                {"type": "session.update", "session": {"type": "realtime", "instructions": "Hi"}}
            )
            updated = await within(ws.receive_json())
            assert updated["type"] == "session.updated"
            assert updated["session"]["instructions"] == "Hi"
            assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
            for event in [created, *replies, updated]:
                SERVER_EVENT.validate_python(event)
        assert len(recorder.errors) == len(sent)


async def test_dropped_connection_is_reconnected_with_the_chat_replayed(harness: Harness) -> None:
    h = harness
    await h.session.update_instructions(INSTRUCTIONS)
    assert (await reply_to(h)).text == model_script.GREETING

    reconnected = next_event(h.session, "session_reconnected")
    h.recorder.drop_next()
    doomed = h.session.generate_reply()  # its response.create is lost with the connection
    with pytest.raises(llm.RealtimeError):
        await within(doomed)
    await within(reconnected)
    assert h.recorder.dropped == 1
    assert len(h.recorder.sessions_opened) == 2

    # The new connection got the session and the conversation again.
    assert h.recorder.session_updates[-1].get("instructions") == INSTRUCTIONS
    [replayed] = h.recorder.items_created
    assert replayed["role"] == "assistant"
    assert replayed["content"] == [{"type": "output_text", "text": model_script.GREETING}]

    out = await reply_to(h)
    assert out.text == model_script.GREETING and out.frames
    assert h.replies[-1][0] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "assistant", "content": model_script.GREETING},
    ]
    h.assert_api_shaped()


class Intro(Agent):
    def __init__(self) -> None:
        super().__init__(instructions=INSTRUCTIONS)

    @function_tool
    async def information_gathered(self, context: RunContext[None], name: str, location: str) -> str:
        """Called once the user has said their name and where they live."""
        return f"Noted: {name} from {location}."


async def test_agent_session_runs_a_turn_with_a_tool_on_the_realtime_model() -> None:
    async with serve() as (base_url, recorder, _, replies), aiohttp.ClientSession() as http:
        model = RealtimeModel(
            base_url=base_url, api_key="sk-test", model="gpt-realtime", voice="echo", http_session=http
        )
        async with AgentSession(llm=model) as session:
            await session.start(Intro())
            result = await within(session.run(user_input=UTTERANCE), 20)

        args = {"name": "Ada", "location": "Lisbon"}
        result.expect.next_event().is_function_call(name="information_gathered", arguments=args)
        result.expect.next_event().is_function_call_output(output="Noted: Ada from Lisbon.")
        said = result.expect.next_event().is_message(role="assistant").event().item.text_content
        result.expect.no_more_events()

        # The typed turn reached the server as a user item; the tool's output came back to it.
        [call] = recorder.function_calls
        assert json.loads(call[1]) == args
        [(call_id, output)] = recorder.function_outputs
        assert output == "Noted: Ada from Lisbon."
        messages, tools = replies[-1]
        assert tools == ["information_gathered"]
        assert messages[:2] == [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": UTTERANCE},
        ]
        assert messages[-1] == {"role": "tool", "tool_call_id": call_id, "content": output}
        assert said == model_script.reply(messages, tools).text == recorder.spoken[-1]
        assert recorder.errors == []

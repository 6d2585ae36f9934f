"""A local OpenAI Realtime API (GA events) websocket, for tests, demos and benches: `GET /v1/realtime`.

The real `livekit-plugins-openai` realtime client, `RealtimeModel(base_url="http://host:port/v1")`,
connects to `ws://host:port/v1/realtime?model=...` and runs its whole protocol engine against it:
session, instruction and tool updates, chat context sync (and its replay after a reconnection),
server VAD on pushed audio, input transcription, streamed audio answers with their transcript,
function calls, cancellation, truncation and usage. Only the "model" is scripted:

- `reply(messages, tool_names)` answers chat-completions-style messages (`model_script.reply`);
- `hear(pcm, sample_rate)` turns committed input audio into text (a recognizer, or a test's stub);
- `synthesize(text, sample_rate)` speaks the answers (`speech.synthesize`, espeak-ng).

Use it on any aiohttp app::

    recorder = RealtimeRecorder()
    add_realtime_routes(app, reply=model_script.reply, hear=recognizer, synthesize=speech.synthesize,
                        recorder=recorder)

`recorder` keeps what the server was told and what it did, and can cut a connection (`drop_next()`)
so the client's reconnection runs. The pure functions (`*_item`, `response_object`, `usage`,
`chat_messages`, `stream_pieces`, ...) build the API's shapes; `_Connection` does the websocket I/O.

Audio is mono pcm16 at 24 kHz both ways, as the plugin sets it; g711 formats are accepted in a
`session.update` but their audio is read as pcm16. Server VAD is `speech.UtteranceDetector` (an
energy detector), for both `server_vad` and `semantic_vad`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import functools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from openai.types import realtime as rt
from pydantic import BaseModel, ValidationError

from storyteller_devkit.model_script import Reply, words
from storyteller_devkit.speech import UtteranceDetector

logger = logging.getLogger("storyteller.devkit.realtime_server")

Json = dict[str, Any]
ReplyFn = Callable[[list[Json], list[str]], Reply]
HearFn = Callable[[bytes, int], str]
SynthesizeFn = Callable[[str, int], bytes]

PATH = "/v1/realtime"
SAMPLE_RATE = 24000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # mono pcm16
CHUNK_MS = 100  # audio deltas of 100 ms, like the API's
MIN_COMMIT_MS = 100  # the API refuses to commit less
PREFIX_PADDING_MS = 300  # audio kept before the detected start of speech
IDLE_BUFFER_MS = 1000  # input audio kept while nobody speaks: enough for the padding above
CHARS_PER_TOKEN = 4
AUDIO_IN_TOKENS_PER_S = 10  # the API bills input audio at a token per 100 ms
AUDIO_OUT_TOKENS_PER_S = 20  # and output audio at a token per 50 ms
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
PCM_FORMAT: Json = {"type": "audio/pcm", "rate": SAMPLE_RATE}

# The models that check each client event, as the API checks them before acting.
_CLIENT_EVENTS: dict[str, type[BaseModel]] = {
    "session.update": rt.SessionUpdateEvent,
    "input_audio_buffer.append": rt.InputAudioBufferAppendEvent,
    "input_audio_buffer.commit": rt.InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": rt.InputAudioBufferClearEvent,
    "output_audio_buffer.clear": rt.OutputAudioBufferClearEvent,
    "conversation.item.create": rt.ConversationItemCreateEvent,
    "conversation.item.retrieve": rt.ConversationItemRetrieveEvent,
    "conversation.item.truncate": rt.ConversationItemTruncateEvent,
    "conversation.item.delete": rt.ConversationItemDeleteEvent,
    "response.create": rt.ResponseCreateEvent,
    "response.cancel": rt.ResponseCancelEvent,
}


@dataclass
class RealtimeRecorder:
    """What the endpoint was told and did, over all its connections; and a knob to cut one.

    Appends are atomic under the GIL, so a test on another thread can read them.
    """

    sessions_opened: list[tuple[str, str]] = field(default_factory=list)  # (session id, model asked)
    session_updates: list[Json] = field(default_factory=list)  # the `session` of each session.update
    response_instructions: list[str] = field(default_factory=list)  # what each response was told
    heard: list[str] = field(default_factory=list)  # transcripts of the committed input audio
    spoken: list[str] = field(default_factory=list)  # what the assistant said (as far as it got)
    function_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments)
    function_outputs: list[tuple[str, str]] = field(default_factory=list)  # (call_id, output)
    items_created: list[Json] = field(default_factory=list)  # by the client; a replay shows here
    truncations: list[tuple[str, int]] = field(default_factory=list)  # (item id, audio_end_ms)
    errors: list[Json] = field(default_factory=list)  # the `error` of every error event sent
    dropped: int = 0  # connections cut by the knob below
    # Cut the connection that receives the Nth client event from now (the event is lost with it).
    drop_after_events: int | None = None

    def drop_next(self) -> None:
        """Cut the connection that receives the next client event, without a close frame."""
        self.drop_after_events = 1

    def count_event(self) -> bool:
        """Counts a received client event; True when its connection is to be cut."""
        if self.drop_after_events is None:
            return False
        self.drop_after_events -= 1
        if self.drop_after_events > 0:
            return False
        self.drop_after_events = None
        self.dropped += 1
        return True

    def reset(self) -> None:
        """Forget everything, for the next test on a shared server."""
        for value in vars(self).values():
            if isinstance(value, list):
                value.clear()
        self.dropped = 0
        self.drop_after_events = None


# ---- the API's shapes: pure functions ----


def new_id(prefix: str) -> str:
    """An id shaped like the API's (`item_…`, `resp_…`, `call_…`): short enough for any id field."""
    return f"{prefix}_{secrets.token_hex(10)}"


def server_event(type_: str, **fields: Any) -> Json:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    client_event_id: str | None = None,
    type_: str = "invalid_request_error",
) -> Json:
    # `event_id` inside the error names the client event it answers: the plugin fails that request.
    error = {"type": type_, "code": code, "message": message, "param": param, "event_id": client_event_id}
    return server_event("error", error=error)


def turn_detection_with_defaults(turn_detection: Json | None) -> Json | None:
    """A turn detection config with the fields the API fills in when a client leaves them out."""
    if turn_detection is None:
        return None
    if turn_detection.get("type") == "server_vad":
        defaults: Json = {
            "threshold": 0.5,
            "prefix_padding_ms": PREFIX_PADDING_MS,
            "silence_duration_ms": 200,
            "idle_timeout_ms": None,
        }
    else:
        defaults = {"eagerness": "auto"}
    defaults |= {"create_response": True, "interrupt_response": True}
    given = {k: v for k, v in turn_detection.items() if v is not None}
    return {"type": turn_detection.get("type"), **defaults, **given}


def default_session(session_id: str, model: str) -> Json:
    """The session a new connection starts with (what `session.created` shows)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {
                "format": dict(PCM_FORMAT),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": turn_detection_with_defaults({"type": "server_vad"}),
            },
            "output": {"format": dict(PCM_FORMAT), "voice": DEFAULT_VOICE, "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "expires_at": int(time.time()) + 3600,
    }


_MERGED_FIELDS = {("audio",), ("audio", "input"), ("audio", "output")}


def merge_session(current: Json, update: Json) -> Json:
    """`current` with what `update` sets. `audio`, `audio.input` and `audio.output` merge field by
    field; every other field (turn_detection, transcription, tools, ...) is replaced whole, and a
    null clears it (turn_detection: null turns server VAD off)."""

    def merge(cur: Json, upd: Json, path: tuple[str, ...]) -> Json:
        out = dict(cur)
        for key, value in upd.items():
            if (*path, key) in _MERGED_FIELDS:
                # A null here changes nothing: the audio config always has its parts.
                out[key] = merge(cur.get(key) or {}, value or {}, (*path, key))
            else:
                out[key] = value
        return out

    merged = merge(copy.deepcopy(current), update, ())
    audio_in = merged["audio"].setdefault("input", {})
    audio_in["turn_detection"] = turn_detection_with_defaults(audio_in.get("turn_detection"))
    # What a session is stays the server's to say.
    merged.update(type="realtime", object="realtime.session", id=current["id"])
    return merged


def message_item(item_id: str, role: str, content: list[Json], status: str = "completed") -> Json:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": role,
        "content": content,
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def item_text(item: Json) -> str:
    """What a message says: its text parts, and the transcripts of its audio parts."""
    said = []
    for part in item.get("content") or []:
        text = part.get("text") if part.get("type") in ("input_text", "output_text", "text") else None
        text = text or part.get("transcript")
        if text:
            said.append(text)
    return " ".join(said)


def written_text(item: Json) -> str:
    """The text of an item that is not audio (audio is counted by its length instead)."""
    if item["type"] == "function_call":
        return f"{item.get('name', '')}{item.get('arguments', '')}"
    if item["type"] == "function_call_output":
        return str(item.get("output", ""))
    parts = item.get("content") or []
    return " ".join(p.get("text") or "" for p in parts if p.get("type") in ("input_text", "output_text"))


def chat_messages(instructions: str, items: list[Json]) -> list[Json]:
    """The conversation as chat-completions messages, the instructions first as the system message."""
    messages: list[Json] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": item_text(item)})
        elif item["type"] == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            tool_call = {"id": item["call_id"], "type": "function", "function": call}
            messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        elif item["type"] == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def offered_tools(tools: list[Json], tool_choice: Any) -> list[str]:
    """The names of the functions the model may call under `tool_choice`."""
    names = [t["name"] for t in tools if t.get("type", "function") == "function" and t.get("name")]
    if tool_choice == "none":
        return []
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        return [name for name in names if name == tool_choice.get("name")]
    return names


def text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def audio_tokens(ms: int, per_s: int) -> int:
    return ms * per_s // 1000


def input_tokens(instructions: str, items: list[Json], audio_ms: dict[str, int]) -> tuple[int, int]:
    """(text, audio) tokens of a response's input: instructions and items, audio by its length."""
    text = text_tokens(instructions) + sum(text_tokens(written_text(item)) for item in items)
    audio = sum(audio_tokens(audio_ms.get(item["id"], 0), AUDIO_IN_TOKENS_PER_S) for item in items)
    return text, audio


def usage(
    *,
    input_text: int,
    input_audio: int,
    cached_text: int,
    cached_audio: int,
    output_text: int,
    output_audio: int,
) -> Json:
    """A response's usage; cached tokens are a part of the input tokens, as the API counts them."""
    input_total, output_total = input_text + input_audio, output_text + output_audio
    return {
        "total_tokens": input_total + output_total,
        "input_tokens": input_total,
        "output_tokens": output_total,
        "input_token_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }


def transcription_usage(model: str, audio_ms: int, transcript: str) -> Json:
    """Usage of an input transcription: whisper bills by duration, the gpt-4o models by tokens."""
    if model.startswith("whisper"):
        return {"type": "duration", "seconds": audio_ms / 1000}
    audio, text = audio_tokens(audio_ms, AUDIO_IN_TOKENS_PER_S), text_tokens(transcript)
    return {
        "type": "tokens",
        "input_tokens": audio,
        "output_tokens": text,
        "total_tokens": audio + text,
        "input_token_details": {"audio_tokens": audio, "text_tokens": 0},
    }


def response_object(
    response_id: str,
    *,
    status: str,
    output: list[Json],
    modalities: list[str],
    voice: str,
    metadata: Json | None,
    conversation_id: str | None,
    max_output_tokens: Any,
    usage: Json | None = None,
    status_details: Json | None = None,
) -> Json:
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": status_details,
        "output": output,
        "conversation_id": conversation_id,
        "output_modalities": modalities,
        "max_output_tokens": max_output_tokens,
        "audio": {"output": {"format": dict(PCM_FORMAT), "voice": voice}},
        "usage": usage,
        # The plugin finds the `generate_reply` a response answers by the metadata it sent.
        "metadata": metadata,
    }


@dataclass(frozen=True)
class ResponsePlan:
    """How a response is to be made: the session's settings, with the response's own over them."""

    instructions: str
    tools: list[str]  # names of the functions it may call
    modalities: list[str]
    in_conversation: bool  # False for an out-of-band response (`conversation: "none"`)
    input: list[Json] | None  # the items to answer instead of the conversation, if given
    voice: str
    metadata: Json | None
    max_output_tokens: Any


def plan_response(session: Json, params: Json) -> ResponsePlan:
    instructions = params.get("instructions")
    if instructions is None:
        instructions = session.get("instructions") or ""
    tools = params["tools"] if params.get("tools") is not None else session.get("tools") or []
    tool_choice = params.get("tool_choice") or session.get("tool_choice") or "auto"
    given = params.get("input")
    return ResponsePlan(
        # Response instructions replace the session's, as the API's do (the plugin sends both joined).
        instructions=instructions,
        tools=offered_tools(tools, tool_choice),
        modalities=params.get("output_modalities") or session["output_modalities"],
        in_conversation=params.get("conversation", "auto") != "none",
        input=None if given is None else [stored_item(i, i.get("id") or new_id("item"))[0] for i in given],
        voice=session["audio"]["output"].get("voice") or DEFAULT_VOICE,
        metadata=params.get("metadata"),
        max_output_tokens=params.get("max_output_tokens") or session.get("max_output_tokens"),
    )


def final_status(cancel_reason: str | None, error: Json | None) -> tuple[str, Json | None]:
    """A finished response's status and status_details."""
    if error is not None:
        return "failed", {"type": "failed", "error": error}
    if cancel_reason is not None:
        return "cancelled", {"type": "cancelled", "reason": cancel_reason}
    return "completed", None


@dataclass(frozen=True)
class Piece:
    """One delta of a streamed answer: a word of its transcript, or a chunk of its audio."""

    transcript: str = ""
    audio: bytes = b""


def stream_pieces(text: str, pcm: bytes, chunk_ms: int = CHUNK_MS) -> list[Piece]:
    """The answer's words interleaved with its audio chunks.

    Each word goes just before the chunk in which it starts, its start placed by its position in the
    text, so the transcript runs a little ahead of the audio, as the API's does.
    """
    pieces_of_text = [w for w in words(text) if w]
    chunk = chunk_ms * BYTES_PER_MS
    chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
    starts, offset = [], 0
    for word in pieces_of_text:
        starts.append(offset / max(len(text), 1))
        offset += len(word)
    pieces: list[Piece] = []
    next_word = 0
    for index, audio in enumerate(chunks):
        end = (index + 1) / len(chunks)
        while next_word < len(pieces_of_text) and starts[next_word] < end:
            pieces.append(Piece(transcript=pieces_of_text[next_word]))
            next_word += 1
        pieces.append(Piece(audio=audio))
    pieces.extend(Piece(transcript=w) for w in pieces_of_text[next_word:])
    return pieces


def truncated_transcript(transcript: str, audio_ms: int, end_ms: int) -> str:
    """The words of `transcript` that start in the first `end_ms` of its `audio_ms` of audio:
    the API drops the text the user did not hear."""
    if audio_ms <= 0 or not transcript:
        return ""
    kept, offset = [], 0
    for word in words(transcript):
        if offset / len(transcript) >= end_ms / audio_ms:
            break
        kept.append(word)
        offset += len(word)
    return "".join(kept).rstrip()


def decoded_audio(data: str) -> bytes | None:
    """Base64 pcm16, or None when it is not base64."""
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return pcm[: len(pcm) - len(pcm) % 2]


def stored_item(item: Json, item_id: str) -> tuple[Json, int]:
    """A client's item as the conversation keeps it (status, object and ids set, audio data left
    out of it as the API's events leave it out), and the length of its audio in ms."""
    stored = {**item, "id": item_id, "object": "realtime.item", "status": "completed"}
    audio_ms = 0
    if item["type"] == "message":
        content = []
        for part in item.get("content") or []:
            part = dict(part)
            if part.get("type") == "input_audio":
                audio_ms += len(decoded_audio(part.pop("audio", None) or "") or b"") // BYTES_PER_MS
                part.setdefault("transcript", None)
            content.append(part)
        stored["content"] = content
    elif item["type"] == "function_call":
        stored.setdefault("call_id", new_id("call"))
    return stored, audio_ms


def validation_problem(error: ValidationError) -> tuple[str, str]:
    """(message, param) of a client event's first invalid field, with what each shape it could take
    (an item is one of several) wants there."""

    def where(problem: Any) -> str:
        # The names of union members (the model classes) are pydantic's, not the event's.
        return ".".join(str(p) for p in problem["loc"] if not (isinstance(p, str) and p[:1].isupper()))

    problems = error.errors()
    param = where(problems[0])
    wanted = dict.fromkeys(p["msg"] for p in problems if where(p) == param)
    return f"Invalid value for '{param}': {' or '.join(wanted)}", param


# ---- a connection: the websocket I/O ----


@dataclass
class _Deps:
    reply: ReplyFn
    hear: HearFn
    synthesize: SynthesizeFn
    recorder: RealtimeRecorder
    pace: float
    first_audio_s: float


@dataclass
class _Response:
    id: str
    cancel_reason: str | None = None  # set by response.cancel, or by the user starting to speak


@dataclass
class _Output:
    item: Json
    text_tokens: int
    audio_tokens: int
    error: Json | None = None


class _Connection:
    """One websocket: its session, conversation and input audio buffer.

    The reader handles each client event in order and at once; slow work (hearing committed audio,
    generating a response) goes to one worker per connection, in order, so a response asked for
    right after a commit answers the transcript of that commit.
    """

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, deps: _Deps, model: str) -> None:
        self.ws, self.request, self.deps = ws, request, deps
        self.session = default_session(new_id("sess"), model)
        self.conversation_id = new_id("conv")
        self.items: list[Json] = []
        self.audio_ms: dict[str, int] = {}  # length of the audio of each item that has audio
        self.buffer = bytearray()  # input audio not committed yet
        self.heard_ms = 0.0  # input audio received; VAD times count from its start, as the API's
        self.detector: UtteranceDetector | None = None
        self.speech: tuple[str, int] | None = None  # (item id, audio_start_ms) while the user speaks
        self.active: _Response | None = None
        self.last_input = (0, 0)  # the previous response's input tokens: what this one finds cached
        self.jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self.send_lock = asyncio.Lock()
        self.handlers: dict[str, Callable[[Json, str | None], Awaitable[None]]] = {
            "session.update": self.on_session_update,
            "input_audio_buffer.append": self.on_append,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
            "output_audio_buffer.clear": self.on_output_clear,
            "conversation.item.create": self.on_item_create,
            "conversation.item.retrieve": self.on_item_retrieve,
            "conversation.item.truncate": self.on_item_truncate,
            "conversation.item.delete": self.on_item_delete,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
        }
        self.new_detector()

    # -- plumbing --

    async def run(self) -> None:
        worker = asyncio.create_task(self.work(), name="realtime-worker")
        try:
            await self.send(server_event("session.created", session=self.session))
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    await self.error(
                        "Only text frames carrying JSON events are accepted", code="invalid_frame"
                    )
                    continue
                if self.deps.recorder.count_event():
                    self.drop()
                    break
                await self.receive(msg.data)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def drop(self) -> None:
        # An abort, not a close: the client sees the connection die, as on a network failure.
        if self.request.transport is not None:
            self.request.transport.abort()

    async def work(self) -> None:
        while True:
            job = await self.jobs.get()
            try:
                await job()
            except Exception:
                # One failed job must not take the connection's later turns with it.
                logger.exception("realtime job failed")

    async def send(self, event: Json) -> None:
        data = json.dumps(event)  # now: the items in it may change after this
        if event["type"] == "error":
            self.deps.recorder.errors.append(event["error"])
        if self.ws.closed:
            return
        async with self.send_lock:
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_str(data)

    async def error(self, message: str, **kwargs: Any) -> None:
        await self.send(error_event(message, **kwargs))

    async def receive(self, data: str) -> None:
        try:
            event = json.loads(data)
        except json.JSONDecodeError as e:
            await self.error(f"Invalid JSON in client event: {e}", code="invalid_json")
            return
        if not isinstance(event, dict):
            await self.error("A client event must be a JSON object", code="invalid_json")
            return
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        type_ = event.get("type")
        model = _CLIENT_EVENTS.get(type_) if isinstance(type_, str) else None
        if model is None:
            supported = ", ".join(f"'{t}'" for t in _CLIENT_EVENTS)
            message = f"Invalid value: '{type_}'. Supported values are: {supported}."
            await self.error(message, code="invalid_value", param="type", client_event_id=client_id)
            return
        try:
            model.model_validate(event)
        except ValidationError as e:
            message, param = validation_problem(e)
            await self.error(message, code="invalid_value", param=param, client_event_id=client_id)
            return
        await self.handlers[event["type"]](event, client_id)

    # -- session --

    def turn_detection(self) -> Json | None:
        td: Json | None = self.session["audio"]["input"].get("turn_detection")
        return td

    def new_detector(self) -> None:
        td = self.turn_detection()
        self.speech = None
        if td is None:
            self.detector = None
        elif td["type"] == "server_vad":
            self.detector = UtteranceDetector(SAMPLE_RATE, min_silence_s=td["silence_duration_ms"] / 1000)
        else:
            self.detector = UtteranceDetector(SAMPLE_RATE)

    async def on_session_update(self, event: Json, client_id: str | None) -> None:
        update = event["session"]
        if update.get("type") != "realtime":
            message = "Only realtime sessions are served here, not transcription sessions"
            await self.error(message, code="invalid_value", param="session.type", client_event_id=client_id)
            return
        self.deps.recorder.session_updates.append(update)
        before = self.turn_detection()
        self.session = merge_session(self.session, update)
        if self.turn_detection() != before:
            self.new_detector()
        await self.send(server_event("session.updated", session=self.session))

    # -- input audio --

    async def on_append(self, event: Json, client_id: str | None) -> None:
        pcm = decoded_audio(event["audio"])
        if pcm is None:
            await self.error(
                "Invalid 'audio': not base64", code="invalid_value", param="audio", client_event_id=client_id
            )
            return
        self.buffer += pcm
        self.heard_ms += len(pcm) / BYTES_PER_MS
        if self.detector is None:
            return
        change = self.detector.feed(pcm)
        if change == "start":
            await self.speech_started()
        elif change == "end" and self.speech is not None:
            await self.speech_stopped()
        elif self.speech is None:
            self.keep_last(IDLE_BUFFER_MS)

    def keep_last(self, ms: float) -> None:
        keep = int(ms * BYTES_PER_MS) // 2 * 2
        if len(self.buffer) > keep:
            del self.buffer[: len(self.buffer) - keep]

    async def speech_started(self) -> None:
        assert self.detector is not None
        start_ms = max(0, int(self.heard_ms - 1000 * self.detector.min_speech_s))
        self.keep_last(self.heard_ms - start_ms + PREFIX_PADDING_MS)
        item_id = new_id("item")
        self.speech = (item_id, start_ms)
        await self.send(
            server_event("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=item_id)
        )
        td = self.turn_detection() or {}
        if self.active is not None and td.get("interrupt_response", True):
            self.active.cancel_reason = "turn_detected"

    async def speech_stopped(self) -> None:
        assert self.speech is not None and self.detector is not None
        item_id, start_ms = self.speech
        self.speech = None
        end_ms = max(start_ms, int(self.heard_ms - 1000 * self.detector.min_silence_s))
        await self.send(
            server_event("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id)
        )
        td = self.turn_detection() or {}
        await self.commit(item_id, respond=bool(td.get("create_response", True)))

    async def on_commit(self, event: Json, client_id: str | None) -> None:
        ms = len(self.buffer) / BYTES_PER_MS
        if ms < MIN_COMMIT_MS:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio."
            )
            await self.error(message, code="input_audio_buffer_commit_empty", client_event_id=client_id)
            return
        item_id = self.speech[0] if self.speech else new_id("item")
        self.new_detector()  # the speech, if any, ends with the commit
        # A commit makes the user's item but, unlike server VAD, never a response.
        await self.commit(item_id, respond=False)

    async def on_clear(self, event: Json, client_id: str | None) -> None:
        self.buffer.clear()
        self.new_detector()
        await self.send(server_event("input_audio_buffer.cleared"))

    async def on_output_clear(self, event: Json, client_id: str | None) -> None:
        message = "output_audio_buffer.clear is only supported over WebRTC and SIP"
        await self.error(message, code="invalid_value", param="type", client_event_id=client_id)

    async def commit(self, item_id: str, *, respond: bool) -> None:
        """The buffer becomes a user item now; it is heard (and answered) by the worker, in turn."""
        pcm = bytes(self.buffer)
        self.buffer.clear()
        previous = self.items[-1]["id"] if self.items else None
        item = message_item(item_id, "user", [{"type": "input_audio", "transcript": None}])
        self.items.append(item)
        self.audio_ms[item_id] = len(pcm) // BYTES_PER_MS
        await self.send(
            server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        )
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=item))
        await self.send(server_event("conversation.item.done", previous_item_id=previous, item=item))
        self.jobs.put_nowait(functools.partial(self.transcribe, item, pcm, respond))

    async def transcribe(self, item: Json, pcm: bytes, respond: bool) -> None:
        transcription: Json | None = self.session["audio"]["input"].get("transcription")
        ids: Json = {"item_id": item["id"], "content_index": 0}
        try:
            transcript = await asyncio.to_thread(self.deps.hear, pcm, SAMPLE_RATE)
        except Exception as e:
            # A recognizer that fails is a transcription that failed, as the API reports one.
            logger.exception("hearing the input audio failed")
            if transcription is not None:
                failure = {"type": "transcription_error", "code": "audio_unintelligible", "message": str(e)}
                await self.send(
                    server_event("conversation.item.input_audio_transcription.failed", **ids, error=failure)
                )
            transcript = ""
        else:
            self.deps.recorder.heard.append(transcript)
            if transcription is not None:
                for word in words(transcript):
                    await self.send(
                        server_event("conversation.item.input_audio_transcription.delta", **ids, delta=word)
                    )
                spent = transcription_usage(
                    str(transcription.get("model", "")), len(pcm) // BYTES_PER_MS, transcript
                )
                completed = "conversation.item.input_audio_transcription.completed"
                await self.send(server_event(completed, **ids, transcript=transcript, usage=spent))
        # The scripted model reads what the real one would hear, with or without transcription events.
        item["content"][0]["transcript"] = transcript
        if respond and self.active is None:
            self.active = _Response(new_id("resp"))
            await self.respond(self.active, {})

    # -- conversation --

    def index(self, item_id: str) -> int | None:
        return next((i for i, item in enumerate(self.items) if item["id"] == item_id), None)

    async def on_item_create(self, event: Json, client_id: str | None) -> None:
        item: Json = event["item"]
        item_id = item.get("id") or new_id("item")
        if item["type"] not in ("message", "function_call", "function_call_output"):
            message = f"Items of type '{item['type']}' are not supported here"
            await self.error(message, code="invalid_value", param="item.type", client_event_id=client_id)
            return
        if self.index(item_id) is not None:
            message = f"Item with id '{item_id}' already exists."
            await self.error(
                message, code="item_create_duplicate_item_id", param="item.id", client_event_id=client_id
            )
            return
        previous = event.get("previous_item_id")
        position = self.insert_position(previous)
        if position is None:
            message = f"Error adding item: the previous item with id '{previous}' does not exist."
            await self.error(
                message, code="invalid_value", param="previous_item_id", client_event_id=client_id
            )
            return
        stored, ms = stored_item(item, item_id)
        self.items.insert(position, stored)
        if ms:
            self.audio_ms[item_id] = ms
        self.deps.recorder.items_created.append(stored)
        if stored["type"] == "function_call_output":
            self.deps.recorder.function_outputs.append((stored["call_id"], stored["output"]))
        before = self.items[position - 1]["id"] if position > 0 else None
        await self.send(server_event("conversation.item.added", previous_item_id=before, item=stored))
        await self.send(server_event("conversation.item.done", previous_item_id=before, item=stored))

    def insert_position(self, previous: str | None) -> int | None:
        """Where an item goes: at the end, first after "root", or after the item named."""
        if previous is None:
            return len(self.items)
        if previous == "root":
            return 0
        index = self.index(previous)
        return None if index is None else index + 1

    async def on_item_retrieve(self, event: Json, client_id: str | None) -> None:
        index = self.index(event["item_id"])
        if index is None:
            await self.missing_item(event["item_id"], "retrieving", client_id)
            return
        await self.send(server_event("conversation.item.retrieved", item=self.items[index]))

    async def on_item_delete(self, event: Json, client_id: str | None) -> None:
        index = self.index(event["item_id"])
        if index is None:
            await self.missing_item(event["item_id"], "deleting", client_id)
            return
        item = self.items.pop(index)
        self.audio_ms.pop(item["id"], None)
        await self.send(server_event("conversation.item.deleted", item_id=item["id"]))

    async def on_item_truncate(self, event: Json, client_id: str | None) -> None:
        item_id, content_index, end_ms = event["item_id"], event["content_index"], event["audio_end_ms"]
        index = self.index(item_id)
        if index is None:
            await self.missing_item(item_id, "truncating", client_id)
            return
        item = self.items[index]
        parts = item.get("content") or []
        if (
            item.get("role") != "assistant"
            or content_index >= len(parts)
            or "transcript" not in parts[content_index]
        ):
            message = "Only the audio content of an assistant message can be truncated."
            await self.error(message, code="invalid_value", param="content_index", client_event_id=client_id)
            return
        ms = self.audio_ms.get(item_id, 0)
        # A player can report a position a little past the end (rounding up): clamp rather than refuse.
        end_ms = min(max(end_ms, 0), ms)
        part = parts[content_index]
        part["transcript"] = truncated_transcript(part.get("transcript") or "", ms, end_ms)
        self.audio_ms[item_id] = end_ms
        self.deps.recorder.truncations.append((item_id, end_ms))
        truncated = {"item_id": item_id, "content_index": content_index, "audio_end_ms": end_ms}
        await self.send(server_event("conversation.item.truncated", **truncated))

    async def missing_item(self, item_id: str, doing: str, client_id: str | None) -> None:
        message = f"Error {doing} item: the item with id '{item_id}' does not exist."
        await self.error(message, code="invalid_value", param="item_id", client_event_id=client_id)

    # -- responses --

    async def on_response_create(self, event: Json, client_id: str | None) -> None:
        if self.active is not None:
            message = (
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one."
            )
            code = "conversation_already_has_active_response"
            await self.error(message, code=code, client_event_id=client_id)
            return
        self.active = _Response(new_id("resp"))
        self.jobs.put_nowait(functools.partial(self.respond, self.active, event.get("response") or {}))

    async def on_response_cancel(self, event: Json, client_id: str | None) -> None:
        wanted = event.get("response_id")
        if self.active is None or (wanted and wanted != self.active.id):
            # The plugin ignores errors starting so: a cancel can cross the response's end.
            message = "Cancellation failed: no active response found"
            await self.error(message, code="response_cancel_not_active", client_event_id=client_id)
            return
        self.active.cancel_reason = "client_cancelled"

    async def respond(self, response: _Response, params: Json) -> None:
        try:
            await self.generate(response, params)
        finally:
            if self.active is response:
                self.active = None

    async def generate(self, response: _Response, params: Json) -> None:
        plan = plan_response(self.session, params)
        context = self.items if plan.input is None else plan.input
        self.deps.recorder.response_instructions.append(plan.instructions)
        answer = self.deps.reply(chat_messages(plan.instructions, context), plan.tools)
        # Counted now: the answer joins the conversation, but is not this response's input.
        in_text, in_audio = input_tokens(plan.instructions, context, self.audio_ms)

        shape = functools.partial(
            response_object,
            response.id,
            modalities=plan.modalities,
            voice=plan.voice,
            metadata=plan.metadata,
            conversation_id=self.conversation_id if plan.in_conversation else None,
            max_output_tokens=plan.max_output_tokens,
        )
        await self.send(server_event("response.created", response=shape(status="in_progress", output=[])))
        if answer.tool_name:
            out = await self.call_function(response, answer, plan.in_conversation)
        else:
            out = await self.say(response, answer.text, "audio" in plan.modalities, plan.in_conversation)

        cached_text, cached_audio = min(self.last_input[0], in_text), min(self.last_input[1], in_audio)
        self.last_input = (in_text, in_audio)
        spent = usage(
            input_text=in_text,
            input_audio=in_audio,
            cached_text=cached_text,
            cached_audio=cached_audio,
            output_text=out.text_tokens,
            output_audio=out.audio_tokens,
        )
        status, details = final_status(response.cancel_reason, out.error)
        done = shape(status=status, output=[out.item], usage=spent, status_details=details)
        await self.send(server_event("response.done", response=done))

    async def add_output_item(self, response: _Response, item: Json, in_conversation: bool) -> str | None:
        """Announces a response's item; it joins the conversation now, still in progress."""
        await self.send(
            server_event("response.output_item.added", response_id=response.id, output_index=0, item=item)
        )
        if not in_conversation:
            return None
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=item))
        return previous

    async def finish_output_item(
        self, response: _Response, item: Json, previous: str | None, in_conversation: bool
    ) -> None:
        await self.send(
            server_event("response.output_item.done", response_id=response.id, output_index=0, item=item)
        )
        if in_conversation:
            await self.send(server_event("conversation.item.done", previous_item_id=previous, item=item))

    async def call_function(self, response: _Response, answer: Reply, in_conversation: bool) -> _Output:
        item = function_call_item(new_id("item"), new_id("call"), answer.tool_name, "", "in_progress")
        previous = await self.add_output_item(response, item, in_conversation)
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": 0,
            "call_id": item["call_id"],
        }
        await self.send(server_event("response.function_call_arguments.delta", **ids, delta=answer.arguments))
        await self.send(
            server_event(
                "response.function_call_arguments.done",
                **ids,
                name=answer.tool_name,
                arguments=answer.arguments,
            )
        )
        item.update(arguments=answer.arguments, status="completed")
        await self.finish_output_item(response, item, previous, in_conversation)
        self.deps.recorder.function_calls.append((answer.tool_name, answer.arguments))
        return _Output(item, text_tokens(answer.tool_name + answer.arguments), 0)

    async def say(self, response: _Response, text: str, with_audio: bool, in_conversation: bool) -> _Output:
        item = message_item(new_id("item"), "assistant", [], status="in_progress")
        previous = await self.add_output_item(response, item, in_conversation)
        ids = {"response_id": response.id, "item_id": item["id"], "output_index": 0, "content_index": 0}
        key = "transcript" if with_audio else "text"
        part: Json = {"type": "audio" if with_audio else "text", key: ""}
        await self.send(server_event("response.content_part.added", **ids, part=part))

        pcm, error = b"", None
        if with_audio:
            try:
                pcm = await asyncio.to_thread(self.deps.synthesize, text, SAMPLE_RATE)
            except Exception as e:
                # A failed synthesis is a failed response, as a server error would make it.
                logger.exception("synthesizing the answer failed")
                error, text = {"type": "server_error", "code": "synthesis_failed", "message": str(e)}, ""
        said, sent = await self.stream(response, ids, text, pcm, with_audio)

        prefix = "response.output_audio" if with_audio else "response.output_text"
        if with_audio:
            await self.send(server_event(f"{prefix}.done", **ids))
            await self.send(server_event(f"{prefix}_transcript.done", **ids, transcript=said))
        else:
            await self.send(server_event(f"{prefix}.done", **ids, text=said))
        await self.send(server_event("response.content_part.done", **ids, part={**part, key: said}))
        final = (
            {"type": "output_audio", "transcript": said}
            if with_audio
            else {"type": "output_text", "text": said}
        )
        cut = response.cancel_reason is not None or error is not None
        item.update(content=[final], status="incomplete" if cut else "completed")
        ms = sent // BYTES_PER_MS
        if ms:
            self.audio_ms[item["id"]] = ms
        await self.finish_output_item(response, item, previous, in_conversation)
        self.deps.recorder.spoken.append(said)
        return _Output(item, text_tokens(said), audio_tokens(ms, AUDIO_OUT_TOKENS_PER_S), error)

    async def stream(
        self, response: _Response, ids: Json, text: str, pcm: bytes, with_audio: bool
    ) -> tuple[str, int]:
        """Sends the answer's deltas until done or cancelled; returns the text and audio bytes sent."""
        said, sent = "", 0
        text_event = "response.output_audio_transcript.delta" if with_audio else "response.output_text.delta"
        if self.deps.first_audio_s:
            await asyncio.sleep(self.deps.first_audio_s)  # a provider's time to its first delta
        for piece in stream_pieces(text, pcm):
            if response.cancel_reason is not None:
                break
            if piece.audio:
                delta = base64.b64encode(piece.audio).decode()
                await self.send(server_event("response.output_audio.delta", **ids, delta=delta))
                sent += len(piece.audio)
                # Yield between chunks so a cancel or the user's speech can stop the answer.
                await asyncio.sleep(self.deps.pace * len(piece.audio) / BYTES_PER_MS / 1000)
            else:
                await self.send(server_event(text_event, **ids, delta=piece.transcript))
                said += piece.transcript
        return said, sent


def add_realtime_routes(
    app: web.Application,
    *,
    reply: ReplyFn,
    hear: HearFn,
    synthesize: SynthesizeFn,
    recorder: RealtimeRecorder,
    pace: float = 0.0,
    first_audio_s: float = 0.0,
) -> None:
    """Serve the Realtime API's websocket at `/v1/realtime` on `app`.

    `pace` is the wall time spent per second of answer audio: 0 sends it as fast as it is made
    (the API also sends faster than real time), 1 in real time (to cancel or interrupt mid-answer).
    `first_audio_s` is waited before each answer's first delta, as a provider's time to first audio
    (benches: what a slow model costs the caller).
    """
    deps = _Deps(
        reply=reply,
        hear=hear,
        synthesize=synthesize,
        recorder=recorder,
        pace=pace,
        first_audio_s=first_audio_s,
    )
    open_sockets: set[web.WebSocketResponse] = set()

    async def realtime(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not key:
            body = {
                "message": "Missing bearer authentication in header",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "param": None,
            }
            return web.json_response({"error": body}, status=401)
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        model = request.query.get("model", DEFAULT_MODEL)
        connection = _Connection(ws, request, deps, model)
        recorder.sessions_opened.append((connection.session["id"], model))
        open_sockets.add(ws)
        try:
            await connection.run()
        finally:
            open_sockets.discard(ws)
        return ws

    async def close_sockets(_: web.Application) -> None:
        # Open websockets would hold the runner's cleanup until its timeout.
        for ws in list(open_sockets):
            await ws.close()

    app.router.add_get(PATH, realtime)
    app.on_shutdown.append(close_sockets)

"""A local OpenAI-compatible model server that answers deterministically, for tests, demos and benches.

The worker's real `openai` and `deepgram` plugins talk to it through `baseURL`, so everything from the
plugins' HTTP/websocket clients and SSE parsing to tool-call handling runs for real; only the models'
"thinking" is scripted: the LLM by `model_script.reply`, the TTS speaks with espeak-ng (real audio), the
speech-to-text endpoints (Deepgram's streaming `/v1/listen`, OpenAI's `/v1/audio/transcriptions`) really
recognise what they hear (`recognition`, PocketSphinx offline, on a grammar of the phrases the tests and
the demo say), and `/v1/realtime` speaks OpenAI's Realtime API (`realtime_server`) with the same script,
voice and recognition.
It also serves LiveKit's `RoomService/DeleteRoom` Twirp endpoint, checking the caller's token, so the
hang-up can be tested without a LiveKit server.

Run it alone: `python -m storyteller_devkit.model_server --port 8765` prints its base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import room as room_proto

from storyteller_devkit import model_script, recognition
from storyteller_devkit.realtime_server import RealtimeRecorder, add_realtime_routes
from storyteller_devkit.speech import UtteranceDetector, synthesize

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret-for-local-tests-only-0123456789"


@dataclass
class Recorder:
    """What the server was asked, and what its STT will hear. Appends are atomic under the GIL."""

    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    deleted_rooms: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)  # texts the TTS rendered
    transcribed: list[str] = field(default_factory=list)  # what the speech-to-text endpoints heard
    realtime: RealtimeRecorder = field(default_factory=RealtimeRecorder)

    def reset(self) -> None:
        self.chat_requests.clear()
        self.deleted_rooms.clear()
        self.spoken.clear()
        self.transcribed.clear()
        self.realtime.reset()


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _deepgram_result(text: str, end_s: float) -> dict[str, Any]:
    words = text.split()
    step = 0.3
    start = max(end_s - step * len(words), 0.0)
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": step * len(words),
        "start": start,
        "is_final": True,
        "speech_final": True,
        "metadata": {"request_id": uuid.uuid4().hex},
        "channel": {
            "alternatives": [
                {
                    "transcript": text,
                    "confidence": 0.99,
                    "words": [
                        {
                            "word": w.lower().strip(".,!?"),
                            "punctuated_word": w,
                            "start": start + i * step,
                            "end": start + (i + 1) * step,
                            "confidence": 0.99,
                        }
                        for i, w in enumerate(words)
                    ],
                }
            ]
        },
    }


class _Utterances:
    """Cuts a PCM stream into utterances: what `UtteranceDetector` found, with the moments of speech before
    it was sure (its `min_speech_s`) kept, so the recogniser hears the first word whole."""

    PREROLL_S = 0.5

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.heard_s = 0.0
        self._detector = UtteranceDetector(sample_rate=rate)
        self._before: deque[bytes] = deque()
        self._before_s = 0.0
        self._utterance: list[bytes] | None = None

    def feed(self, pcm: bytes) -> tuple[str | None, bytes]:
        """("start", b""), ("end", the utterance's audio), or (None, b"")."""
        seconds = len(pcm) / 2 / self.rate
        self.heard_s += seconds
        event = self._detector.feed(pcm)
        if self._utterance is not None:
            self._utterance.append(pcm)
        else:
            self._before.append(pcm)
            self._before_s += seconds
            while self._before_s > self.PREROLL_S and len(self._before) > 1:
                self._before_s -= len(self._before.popleft()) / 2 / self.rate
        if event == "start":
            self._utterance = list(self._before)
            self._before.clear()
            self._before_s = 0.0
        elif event == "end" and self._utterance is not None:
            spoken, self._utterance = b"".join(self._utterance), None
            return event, spoken
        return event, b""


def _wav_pcm(data: bytes) -> tuple[bytes, int]:
    """The samples and rate of a mono 16-bit WAV file (what the openai plugin uploads)."""
    with wave.open(io.BytesIO(data)) as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate()


def _usage(messages: list[dict[str, Any]], completion_text: str) -> dict[str, int]:
    # A stable, rough token count (4 characters a token) so usage metrics have real numbers.
    prompt = sum(len(json.dumps(m.get("content") or "")) for m in messages) // 4 + 1
    completion = len(completion_text) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def build_app(
    recorder: Recorder,
    *,
    token_delay: float = 0.0,
    realtime_first_audio_s: float = 0.0,
    api_secret: str = DEV_API_SECRET,
) -> web.Application:
    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        recorder.chat_requests.append(body)
        if str(body.get("model", "")).startswith("broken"):
            # A provider outage, for fallback tests: models named "broken*" always fail.
            return web.json_response(
                {"error": {"message": "model overloaded", "type": "server_error"}}, status=503
            )
        messages: list[dict[str, Any]] = body.get("messages", [])
        tools = [t["function"]["name"] for t in body.get("tools", []) if t.get("type") == "function"]
        reply = model_script.reply(messages, tools)
        model = body.get("model", "fake")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_name:
                message["tool_calls"] = [reply.tool_call_json()]
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                    "usage": _usage(messages, reply.text or reply.arguments),
                }
            )

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk(completion_id, model, {"role": "assistant", "content": ""}))
        if reply.tool_name:
            await resp.write(
                _chunk(completion_id, model, {"tool_calls": [{"index": 0, **reply.tool_call_json()}]})
            )
        else:
            for word in model_script.words(reply.text):
                if token_delay:
                    await asyncio.sleep(token_delay)
                await resp.write(_chunk(completion_id, model, {"content": word}))
        await resp.write(_chunk(completion_id, model, {}, reply.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": _usage(messages, reply.text or reply.arguments),
            }
            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def delete_room(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = api.TokenVerifier(DEV_API_KEY, api_secret).verify(token)
        except Exception:
            return web.json_response({"code": "unauthenticated", "msg": "invalid token"}, status=401)
        if not (claims.video and claims.video.room_create):
            return web.json_response({"code": "permission_denied", "msg": "roomCreate needed"}, status=403)
        req = room_proto.DeleteRoomRequest.FromString(await request.read())
        recorder.deleted_rooms.append(req.room)
        return web.Response(
            body=room_proto.DeleteRoomResponse().SerializeToString(), content_type="application/protobuf"
        )

    async def speech(request: web.Request) -> web.Response:
        # OpenAI's TTS: real speech from espeak-ng, as raw PCM at the plugin's 24 kHz.
        body = await request.json()
        recorder.spoken.append(body["input"])
        pcm = await asyncio.to_thread(synthesize, body["input"], 24000)
        return web.Response(body=pcm, content_type="audio/pcm", headers={"x-request-id": uuid.uuid4().hex})

    async def deepgram_listen(request: web.Request) -> web.WebSocketResponse:
        # Deepgram's streaming STT: find utterances in the audio and recognise each (SpeechStarted,
        # then one final Results that ends the speech).
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        rate = int(request.query.get("sample_rate", "16000"))
        utterances = _Utterances(rate)
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue  # KeepAlive / Finalize / CloseStream
            event, pcm = utterances.feed(msg.data)
            if event == "start":
                await ws.send_json({"type": "SpeechStarted", "channel": [0], "timestamp": utterances.heard_s})
            elif event == "end":
                text = await asyncio.to_thread(recognition.transcribe, pcm, rate)
                if text:
                    recorder.transcribed.append(text)
                    await ws.send_json(_deepgram_result(text, utterances.heard_s))
        return ws

    async def transcriptions(request: web.Request) -> web.Response:
        # OpenAI's speech-to-text: a WAV file in a multipart form, recognised whole.
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response(
                {"error": {"message": "file: required", "type": "invalid_request_error"}}, status=400
            )
        pcm, rate = _wav_pcm(upload.file.read())
        text = await asyncio.to_thread(recognition.transcribe, pcm, rate)
        recorder.transcribed.append(text)
        return web.json_response(
            {"text": text, "usage": {"type": "duration", "seconds": len(pcm) / 2 / rate}}
        )

    app = web.Application()
    add_realtime_routes(
        app,
        reply=model_script.reply,
        hear=recognition.transcribe,
        synthesize=synthesize,
        recorder=recorder.realtime,
        first_audio_s=realtime_first_audio_s,
    )
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_get("/v1/listen", deepgram_listen)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/twirp/livekit.RoomService/DeleteRoom", delete_room)
    return app


@asynccontextmanager
async def serve(
    recorder: Recorder,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token_delay: float = 0.0,
    realtime_first_audio_s: float = 0.0,
) -> AsyncIterator[str]:
    """Run the server on the current loop; yields its origin (`http://host:port`)."""
    app = build_app(recorder, token_delay=token_delay, realtime_first_audio_s=realtime_first_audio_s)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


class ThreadedServer:
    """The server on its own thread and loop, so sync tests, async tests and subprocesses share it."""

    def __init__(
        self, *, token_delay: float = 0.0, realtime_first_audio_s: float = 0.0, host: str = "127.0.0.1"
    ) -> None:
        self.recorder = Recorder()
        self._token_delay = token_delay
        self._realtime_first_audio_s = realtime_first_audio_s
        self._host = host  # the real node's bridge address when pods must reach it
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.origin = ""
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        """What a tenant's `baseURL` points at."""
        return f"{self.origin}/v1"

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serve(
                self.recorder,
                host=self._host,
                token_delay=self._token_delay,
                realtime_first_audio_s=self._realtime_first_audio_s,
            ) as origin:
                self.origin = origin
                self._ready.set()
                await self._stop.wait()

        asyncio.run(main())

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed words")
    args = parser.parse_args()

    async def run() -> None:
        async with serve(Recorder(), host=args.host, port=args.port, token_delay=args.token_delay) as origin:
            print(f"{origin}/v1", flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()

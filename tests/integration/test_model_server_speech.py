"""The local model server's speech-to-text endpoints hear the audio they get, through the real plugins.

Deepgram's streaming `/v1/listen` (the `deepgram` plugin's websocket) and OpenAI's
`/v1/audio/transcriptions` (the `openai` plugin's upload) each recognise espeak-ng speech with
`storyteller_devkit.recognition`: what comes back is what was said, punctuated, never a script.
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents.utils import http_context
from livekit.plugins import deepgram, openai

from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.speech import synthesize

RATE = 48000  # what a LiveKit room delivers; the plugins resample where they need to
FRAME = RATE // 100  # 10 ms


def frames(text: str, silence_s: float = 1.0) -> list[rtc.AudioFrame]:
    pcm = synthesize(text, RATE) + b"\0\0" * int(RATE * silence_s)
    step = FRAME * 2
    return [rtc.AudioFrame(pcm[i : i + step], RATE, 1, FRAME) for i in range(0, len(pcm) - step + 1, step)]


async def test_deepgram_streaming_hears_each_utterance(
    model_server: ThreadedServer, provider_env: dict[str, str]
) -> None:
    said = ["My name is Grace and I live in Paris", "No thanks, that is all"]
    finals: list[str] = []
    async with http_context.open():
        stt = deepgram.STT(model="nova-3", language="en", base_url=f"{model_server.base_url}/listen")
        stream = stt.stream()

        async def push() -> None:
            for text in said:
                for frame in frames(text):
                    stream.push_frame(frame)
                    await asyncio.sleep(0)  # as a room would, a frame at a time
            stream.end_input()

        pushing = asyncio.create_task(push())
        async with asyncio.timeout(30):
            async for event in stream:
                if event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                    finals.append(event.alternatives[0].text)
                    if len(finals) == len(said):
                        break
        await pushing
        await stream.aclose()
    assert finals == ["My name is Grace and I live in Paris.", "No thanks, that is all."]
    assert model_server.recorder.transcribed == finals


async def test_openai_transcription_hears_the_upload(
    model_server: ThreadedServer, provider_env: dict[str, str]
) -> None:
    async with http_context.open():
        stt = openai.STT(model="gpt-4o-mini-transcribe", base_url=model_server.base_url, use_realtime=False)
        event = await stt.recognize(frames("I am Linus from Oslo", silence_s=0.3))
    assert event.alternatives[0].text == "I am Linus from Oslo."
    assert model_server.recorder.transcribed == ["I am Linus from Oslo."]

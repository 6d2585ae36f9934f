"""The bridge the intro speaks as it hands the call to the story (`spec.intro.handoff`).

- sequential (the original flow): the handoff tool returns the bridge as its output, the intro's model
  answers it, and that reply plays in full before the story agent even starts: the caller hears the
  bridge, then silence while the story's first reply is generated.
- overlapping: `BridgeAudio` renders the bridge in the intro's voice while the intro is still talking (the
  caller is giving their name meanwhile). At the handoff the story agent plays it and starts its first
  reply at once (`start_first_reply`), so that reply's audio is ready when the bridge ends. The silence a
  TTS leaves after the last word (espeak-ng's is 290 ms) is cut (`without_trailing_silence`): at a handoff
  it is dead air.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import Agent
from livekit.agents import llm as lk_llm
from livekit.agents import tts as lk_tts
from livekit.plugins import openai

logger = logging.getLogger("storyteller.worker.agents")


class BridgeAudio:
    """The bridge's words rendered by `tts` in the background, from construction on.

    Construct it inside the intro's activity (its `on_enter`): the render's usage is then reported by that
    activity, so it counts as the IntroAgent's.
    """

    def __init__(self, text: str, tts: lk_tts.TTS[Any]) -> None:
        self.text = text
        self._render = asyncio.create_task(self._frames(tts), name="storyteller.bridge.render")

    async def _frames(self, tts: lk_tts.TTS[Any]) -> list[rtc.AudioFrame]:
        frames: list[rtc.AudioFrame] = []
        async with tts.synthesize(self.text) as stream:
            async for chunk in stream:
                frames.append(chunk.frame)
        return without_trailing_silence(frames)

    async def rendered(self) -> list[rtc.AudioFrame] | None:
        """The frames, waiting for the render if it is still running; None if it failed."""
        try:
            return await asyncio.shield(self._render)
        except Exception:
            logger.warning("bridge not rendered: the story starts without it", exc_info=True)
            return None

    def close(self) -> None:
        """The call ended before the handoff: stop rendering."""
        self._render.cancel()


QUIET_RMS = 100.0  # a frame quieter than this is silence (speech is in the thousands)
TAIL_S = 0.04  # of the silence after the last word, kept so the word is not clipped


def without_trailing_silence(frames: list[rtc.AudioFrame]) -> list[rtc.AudioFrame]:
    """`frames` up to the last sound, plus `TAIL_S` of what followed (whole frames are kept or dropped,
    then the last kept one is cut to length)."""
    end = len(frames)
    while end and _rms(frames[end - 1]) < QUIET_RMS:
        end -= 1
    if end == 0:
        return []
    kept, tail = frames[:end], frames[end:]
    left = TAIL_S
    for frame in tail:
        seconds = frame.samples_per_channel / frame.sample_rate
        if left <= 0:
            break
        if seconds <= left:
            kept.append(frame)
        else:
            samples = int(left * frame.sample_rate)
            data = np.asarray(frame.data, dtype=np.int16)[: samples * frame.num_channels]
            kept.append(rtc.AudioFrame(data.tobytes(), frame.sample_rate, frame.num_channels, samples))
        left -= seconds
    return kept


def _rms(frame: rtc.AudioFrame) -> float:
    samples = np.asarray(frame.data, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


async def _play(frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame


async def start_with_bridge(agent: Agent, bridge: BridgeAudio) -> None:
    """The story agent's entry in overlapping mode: the bridge first, the first reply generated meanwhile."""
    frames = await bridge.rendered()
    if frames:
        # Played as it was rendered: no TTS of the story agent's is involved (a realtime one has none).
        agent.session.say(bridge.text, audio=_play(frames))
    start_first_reply(agent)


def start_first_reply(agent: Agent) -> None:
    """Start the agent's first reply now; it plays once what is queued before it (the bridge) has played.

    A chat model's reply is generated ahead of its turn by the framework itself. A realtime model's is
    not (the framework asks the model only once the reply's turn comes), so the response is asked of the
    live session directly: the framework treats it as a reply the model started by itself, queues it
    behind the bridge and buffers its audio meanwhile.
    """
    if isinstance(agent.llm, lk_llm.RealtimeModel):
        live = agent.realtime_llm_session
        if isinstance(live, openai.realtime.RealtimeSession):
            live.send_event({"type": "response.create", "response": {}})
            return
    agent.session.generate_reply()

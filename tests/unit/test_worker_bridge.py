"""The overlapping bridge's audio: the silence a TTS leaves after the last word is cut, the words are not."""

from __future__ import annotations

import numpy as np
from livekit import rtc

from storyteller_worker.agents.bridge import TAIL_S, without_trailing_silence

RATE = 24000


def frame(ms: int, amplitude: int) -> rtc.AudioFrame:
    samples = RATE * ms // 1000
    t = np.arange(samples)
    data = (amplitude * np.sin(2 * np.pi * 220 * t / RATE)).astype(np.int16)
    return rtc.AudioFrame(data.tobytes(), RATE, 1, samples)


def seconds(frames: list[rtc.AudioFrame]) -> float:
    return sum(f.samples_per_channel for f in frames) / RATE


def test_trailing_silence_is_cut_to_a_short_tail() -> None:
    speech = [frame(20, 0), frame(100, 5000), frame(100, 4000)]  # a quiet start is kept: it is not trailing
    kept = without_trailing_silence([*speech, *(frame(20, 30) for _ in range(15))])  # 300 ms of hiss
    assert kept[:3] == speech
    assert abs(seconds(kept) - (seconds(speech) + TAIL_S)) < 1 / RATE


def test_a_tail_shorter_than_the_kept_one_stays_whole() -> None:
    frames = [frame(100, 5000), frame(10, 0)]
    assert without_trailing_silence(frames) == frames


def test_silence_only_is_nothing_and_nothing_stays_nothing() -> None:
    assert without_trailing_silence([frame(20, 0), frame(20, 50)]) == []
    assert without_trailing_silence([]) == []

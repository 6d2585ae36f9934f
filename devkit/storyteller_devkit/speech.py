"""Real audio for the voice path: espeak-ng speech, and an energy-based utterance detector.

`synthesize` renders text with Debian's espeak-ng and resamples it with sox to 16-bit mono PCM at
the rate asked. `UtteranceDetector` finds where speech starts and ends in a PCM stream (loudness
above a floor for long enough, then silence long enough): the fake Deepgram uses it to know when
the caller said something, then answers with the next scripted transcript.
"""

from __future__ import annotations

import array
import functools
import math
import shutil
import subprocess
from dataclasses import dataclass, field


@functools.lru_cache(maxsize=256)
def synthesize(text: str, sample_rate: int = 24000) -> bytes:
    """`text` spoken by espeak-ng as raw s16le mono PCM at `sample_rate` (cached: tests repeat)."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if not espeak or not sox:
        raise FileNotFoundError("espeak-ng and sox are needed (installed by `make tools`)")
    wav = subprocess.run([espeak, "--stdout", "-s", "190", text], check=True, capture_output=True).stdout
    return subprocess.run(
        [
            sox,
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-r",
            str(sample_rate),
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-",
        ],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout


def rms(pcm: bytes) -> float:
    """Root mean square of s16le samples (0 for silence, ~thousands for speech)."""
    samples = array.array("h", pcm[: len(pcm) - len(pcm) % 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


@dataclass
class UtteranceDetector:
    """Feeds on PCM chunks; says "start" when speech begins and "end" once it has stopped.

    Speech is `min_speech_s` of chunks louder than `threshold`; the end is `min_silence_s` of quiet.
    """

    sample_rate: int = 16000
    threshold: float = 300.0
    min_speech_s: float = 0.15
    min_silence_s: float = 0.6
    _speech_s: float = field(default=0.0, init=False)
    _silence_s: float = field(default=0.0, init=False)
    _speaking: bool = field(default=False, init=False)

    def feed(self, pcm: bytes) -> str | None:
        """Returns "start", "end" or None for this chunk."""
        seconds = len(pcm) / 2 / self.sample_rate
        if rms(pcm) >= self.threshold:
            self._speech_s += seconds
            self._silence_s = 0.0
            if not self._speaking and self._speech_s >= self.min_speech_s:
                self._speaking = True
                return "start"
            return None
        self._silence_s += seconds
        if not self._speaking:
            self._speech_s = 0.0
            return None
        if self._silence_s >= self.min_silence_s:
            self._speaking = False
            self._speech_s = 0.0
            return "end"
        return None

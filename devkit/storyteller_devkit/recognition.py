"""Offline speech recognition for the local model servers: hears espeak-ng speech, returns a transcript.

The fake Deepgram (`/v1/listen`), OpenAI's `/v1/audio/transcriptions` and the Realtime stand-in call
`transcribe(pcm, sample_rate)` on each utterance they cut from a caller's audio (with
`speech.UtteranceDetector`); it answers with what was said, punctuated and capitalised the way a real
service does ("My name is Ada and I live in Lisbon."), or "" for silence and noise.

PocketSphinx 5 (its wheel ships a US English acoustic model and the CMU dictionary) decodes against a
grammar, not an open vocabulary: open-vocabulary recognition of espeak-ng's synthetic voice is close to
useless ("My name is Ada and I live in Lisbon" came back as "when i eat a release"), while a grammar of
the sentences the tests and the demo say is recognised near perfectly, in about 0.15 s for a 3 s
utterance. The grammar is `INTRODUCTIONS` (a name and a city, from `NAMES` and `CITIES`) and `REPLIES`;
`PHRASES` is every sentence `transcribe` can return. A closed grammar has its price: speech outside it
comes back as "" or as the nearest sentence in it ("Please stop" → "Open the door."). The names and cities
were picked to be told apart in espeak's voice: words heard in others' places were dropped (Tom, heard
for Sam and Hannah; Leo for Maria; Oliver and Oscar for Alan; Prague and Porto for Paris; ...).

What makes espeak audio decodable, measured on 80 sentences (see the comment at each step): digital
silence under a faint noise floor (33 of 80 right without it), a denser frame rate for espeak's fast
speech, likelier pauses between words, and espeak's British vowels as alternative pronunciations.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pocketsphinx

RATE = 16000  # what the acoustic model was trained on; other rates are resampled to it

NAMES: tuple[str, ...] = (
    "Ada", "Alan", "Ben", "David", "Emma", "Felix", "Grace", "Henry", "Isabel", "Julia", "Laura", "Linus",
    "Lucy", "Maria", "Max", "Nora", "Peter", "Rosa", "Sam", "Sophie", "Victor", "Zoe",
)  # fmt: skip
CITIES: tuple[str, ...] = (
    "Amsterdam", "Berlin", "Boston", "Cairo", "Chicago", "Delhi", "Denver", "Dublin", "Istanbul", "Lima",
    "Lisbon", "London", "Madrid", "Melbourne", "Oslo", "Paris", "Rome", "Sydney", "Tokyo", "Toronto",
    "Vienna", "Warsaw",
)  # fmt: skip
# Word sequences, lower case, as the grammar spells them; {name} and {city} stand for the lists above.
INTRODUCTIONS: tuple[str, ...] = (
    "my name is {name} and i live in {city}",
    "my name is {name} i live in {city}",
    "i am {name} from {city}",
)
REPLIES: tuple[str, ...] = (
    "no thanks that is all",
    "that is all",
    "goodbye",
    "yes please",
    "tell me more",
    "go on",
    "open the door",
    "walk on",
)

# espeak-ng's default voice speaks British English (no "r" after a vowel, "from" with the vowel of "hot",
# unstressed "-er" as a schwa) and the CMU dictionary is American: these variants, transcribed from
# `espeak-ng -x`, are added next to the dictionary's own (78 of 80 sentences right without them, 80 with;
# before the other fixes below, "tell me more" found no path at all with only "M AO R").
EXTRA_PRONUNCIATIONS: tuple[tuple[str, str], ...] = (
    ("am", "AH M"),
    ("from", "F R AA M"),
    ("more", "M AO"),
    ("door", "D AO"),
    ("julia", "JH UW L IY AH"),
    ("linus", "L IH N AH S"),
    ("maria", "M AH R IY AH"),
    ("peter", "P IY T AH"),
    ("rosa", "R OW S AH"),
    ("victor", "V IH K T AH"),
    ("chicago", "SH IH K AA G OW"),
    ("denver", "D EH N V AH"),
    ("lisbon", "L IH S B AH N"),
    ("oslo", "AA S L OW"),
    ("amsterdam", "AE M S T AH D AE M"),
    ("melbourne", "M EH L B AH N"),
    ("istanbul", "IH S T AE N B UH L"),
    ("toronto", "T AH R AA N T OW"),
    ("warsaw", "W AO S AO"),
)

_PROPER = {word.lower(): word for word in (*NAMES, *CITIES)}
# Said first and followed by more words, these take a comma after them ("No thanks, that is all.").
# Longer first: "no thanks" before "no".
_INTERJECTIONS = ("no thanks", "hi there", "thank you", "thanks", "hello", "hi", "yes", "no", "okay", "oh")
# A sentence starting with one of these (after any interjection) is a question.
_QUESTION_WORDS = frozenset((
    "who", "what", "where", "when", "why", "how", "which", "do", "does", "did", "is", "are", "can", "could",
    "would", "will", "shall", "should", "may",
))  # fmt: skip


def punctuate(words: str) -> str:
    """Words as a recogniser outputs them ("no thanks that is all") → a sentence as a real speech-to-text
    service writes it ("No thanks, that is all."): a capital first letter, "I" and the known names and cities
    capitalised, a comma after a leading interjection and between two clauses that have no "and", a final
    question mark or period. Punctuation already in `words` is dropped first; "" stays ""."""
    tokens = re.sub(r"[^\w\s'-]", " ", words).lower().split()
    if not tokens:
        return ""
    out = [_PROPER.get(t, "I" if t == "i" else t) for t in tokens]
    first = 0  # where the sentence proper starts, after an interjection
    for interjection in _INTERJECTIONS:
        n = len(interjection.split())
        if tokens[:n] == interjection.split():
            if len(tokens) > n:
                out[n - 1] += ","
                first = n
            break
    for i in range(1, len(tokens)):
        # "my name is ada i live in lisbon": a new clause with no conjunction starts at "I".
        if tokens[i] == "i" and tokens[i - 1] in _PROPER:
            out[i - 1] += ","
    out[0] = out[0][0].upper() + out[0][1:]
    end = "?" if tokens[first] in _QUESTION_WORDS else "."
    return " ".join(out) + end


def _sentences() -> Iterator[str]:
    for template in INTRODUCTIONS:
        for name in NAMES:
            for city in CITIES:
                yield template.format(name=name.lower(), city=city.lower())
    yield from REPLIES


# Every word sequence the grammar accepts. PocketSphinx returns the best partial path when none reaches the
# grammar's end (noise, or speech it doesn't know), e.g. "walk": anything not in here is heard as nothing.
_SENTENCES = frozenset(_sentences())
# Everything `transcribe` can return (besides ""), as it returns it.
PHRASES: tuple[str, ...] = tuple(punctuate(s) for s in _sentences())


def jsgf() -> str:
    """The grammar in JSGF, built from `INTRODUCTIONS`, `REPLIES`, `NAMES` and `CITIES`."""
    templates = (*INTRODUCTIONS, *REPLIES)
    sentences = [t.replace("{name}", "<name>").replace("{city}", "<city>") for t in templates]
    return "\n".join(
        [
            "#JSGF V1.0;",
            "grammar storyteller;",
            "public <utterance> = " + " | ".join(f"( {s} )" for s in sentences) + ";",
            "<name> = " + " | ".join(n.lower() for n in NAMES) + ";",
            "<city> = " + " | ".join(c.lower() for c in CITIES) + ";",
            "",
        ]
    )


def _words() -> set[str]:
    return {w for s in _SENTENCES for w in s.split()}


@functools.lru_cache(maxsize=8)
def _resampling_filter(rate: int) -> tuple[int, int, np.ndarray[Any, np.dtype[np.float64]]]:
    """(up, down, weights): output sample k sits at input time k * down / up, and its weights (over the
    input samples around it) depend only on k % up, so they are computed once per rate and phase."""
    g = math.gcd(rate, RATE)
    up, down = RATE // g, rate // g
    cutoff = 0.95 * min(1.0, RATE / rate)  # of the input's Nyquist frequency
    half = math.ceil(16 / cutoff)  # taps either side, in input samples
    offsets = np.arange(-half + 1, half + 1)
    fraction = (np.arange(up) * down % up) / up  # how far past an input sample each phase's outputs fall
    d = fraction[:, None] - offsets[None, :]
    window = 0.5 + 0.5 * np.cos(np.pi * d / half)  # Hann
    return up, down, cutoff * np.sinc(cutoff * d) * window


def _resample(x: np.ndarray[Any, np.dtype[np.float64]], rate: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """`x` at `rate` → at `RATE`, by windowed-sinc interpolation, low-passed below the lower Nyquist
    frequency (so 48 kHz input doesn't fold its upper band into the speech band)."""
    if rate == RATE or not len(x):
        return x
    up, down, weights = _resampling_filter(rate)
    taps = weights.shape[1]
    padded = np.concatenate([np.zeros(taps // 2), x, np.zeros(taps // 2 + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)
    n_out = len(x) * RATE // rate
    out = np.empty(n_out)
    for phase in range(min(up, n_out)):
        count = len(range(phase, n_out, up))
        first = phase * down // up + 1  # the window of the phase's first output sample
        out[phase::up] = windows[first::down][:count] @ weights[phase]
    return out


# Loudness, as the RMS of 10 ms frames of s16 samples.
_SILENCE_RMS = 100.0  # no frame louder than this: nothing was said (speech.UtteranceDetector's floor is 300)
_SPEECH_RMS = 8000.0  # the loudest frame is scaled to this (espeak's own loudest frames are about 8000)
_NOISE_FLOOR = 100.0  # std of the noise added under the speech
_MARGIN_S = 0.1  # quiet kept around the speech


def _prepare(pcm: bytes, sample_rate: int) -> bytes | None:
    """The utterance as the decoder hears it best: 16 kHz, trimmed, at a fixed level, over a noise floor;
    None if it is silence."""
    x = _resample(np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64), sample_rate)
    frame = RATE // 100
    n = len(x) // frame
    if n == 0:
        return None
    loudness = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    peak = float(loudness.max())
    if peak < _SILENCE_RMS:
        return None
    # Trim long silences at either end, keeping a little quiet around the speech: less to decode (with
    # 0.5 s of silence either side a third faster, and no less accurate).
    loud = np.nonzero(loudness > max(_SILENCE_RMS, 0.03 * peak))[0]
    margin = int(_MARGIN_S * RATE)
    x = x[max(0, int(loud[0]) * frame - margin) : (int(loud[-1]) + 1) * frame + margin]
    # A fixed level, so the noise floor below sits the same distance under quiet and loud speech alike.
    x = x * (_SPEECH_RMS / peak)
    # A noise floor: espeak-ng's pauses and the padding around speech are digital silence (exact zeros),
    # whose log energy is far below anything in the acoustic model's training recordings and drags the
    # cepstral mean with it: with zeros 33 of 80 sentences were recognised, with this floor 80. Seeded:
    # the same audio always gets the same transcript.
    x = x + np.random.default_rng(0).normal(0.0, _NOISE_FLOOR, len(x))
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


class Recognizer:
    """A PocketSphinx decoder on the grammar. Building one takes ~0.2 s, so build it once and share it:
    `transcribe` is thread-safe (a lock; PocketSphinx holds the GIL while it decodes, so decoders in
    parallel threads would run no faster)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decoder = self._build()

    @staticmethod
    def _build() -> Any:
        decoder = pocketsphinx.Decoder(
            lm=None,
            loglevel="FATAL",  # its INFO log is a few hundred lines on stderr per decoder
            # espeak-ng (at the 190 words a minute speech.synthesize asks for) talks faster than the
            # acoustic model's speakers; 150 feature frames a second instead of 100 stretches it out as if
            # spoken 1.5 times slower (71 to 76 of 80 sentences right at 100, 79 to 80 at 150).
            frate=150,
            # Silence between words, far likelier than the default 0.005: espeak pauses at commas, and
            # "My name is Emma, I live in Paris" was heard with an "and" in the pause (76 of 80 sentences
            # right at 0.005, 79 to 80 at 0.3).
            silprob=0.3,
        )
        for word, phones in EXTRA_PRONUNCIATIONS:
            variant = 2
            while decoder.lookup_word(f"{word}({variant})") is not None:
                variant += 1
            decoder.add_word(f"{word}({variant})", phones, update=False)
        missing = sorted(w for w in _words() if decoder.lookup_word(w) is None)
        if missing:
            raise RuntimeError(f"no pronunciation for {missing}")
        decoder.add_fsg("storyteller", decoder.parse_jsgf(jsgf()))
        decoder.activate_search("storyteller")
        return decoder

    def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        """What was said in `pcm` (s16le mono at `sample_rate`), punctuated; "" for silence or noise."""
        audio = _prepare(pcm, sample_rate)
        if audio is None:
            return ""
        with self._lock:
            # A fresh front end per utterance: the feature extractor otherwise carries its noise estimate
            # over from the previous one, and the same audio was heard differently after different speech
            # ("No thanks, that is all" as "I am Emma from Tokyo" in 1 call of 5, after the caller's name).
            self._decoder.reinit_feat()
            self._decoder.start_utt()
            # full_utt: the whole utterance is here, so the cepstral mean is taken over all of it.
            self._decoder.process_raw(audio, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        words = str(hypothesis.hypstr) if hypothesis is not None else ""
        return punctuate(words) if words in _SENTENCES else ""


_default: Recognizer | None = None
_default_lock = threading.Lock()


def recognizer() -> Recognizer:
    """The shared `Recognizer`, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Recognizer()
        return _default


def transcribe(pcm: bytes, sample_rate: int) -> str:
    """What was said in `pcm` (s16le mono PCM at any `sample_rate`), as a real speech-to-text service writes
    it ("My name is Ada and I live in Lisbon."), or "" for silence or noise. Speech outside the grammar
    comes back as "" or as the grammar's nearest sentence."""
    return recognizer().transcribe(pcm, sample_rate)

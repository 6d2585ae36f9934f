"""`recognition.transcribe` hears real espeak-ng speech the way the local speech-to-text servers get it.

Each phrase is synthesised by espeak-ng (`speech.synthesize`) at the rates a caller's audio reaches the
servers (16, 24 and 48 kHz; also once through LiveKit's own resampler), with silence around it, and must
come back exactly as a real service would write it. Silence and noise come back as "". `punctuate` is
checked on its own.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from livekit import rtc

from storyteller_devkit import recognition
from storyteller_devkit.recognition import punctuate, transcribe
from storyteller_devkit.speech import synthesize

RATES = (16000, 24000, 48000)
# What the caller says in the storyteller flow (`caller.CALLER_SCRIPT`), and how it must come back.
REQUIRED = {
    "My name is Ada and I live in Lisbon": "My name is Ada and I live in Lisbon.",
    "No thanks, that is all": "No thanks, that is all.",
}
OTHERS = {
    "I am Grace from Paris": "I am Grace from Paris.",
    "My name is Linus and I live in Oslo": "My name is Linus and I live in Oslo.",
    "My name is Maria and I live in Tokyo": "My name is Maria and I live in Tokyo.",
    "My name is Sam, I live in Berlin": "My name is Sam, I live in Berlin.",
    "I am Alan from Madrid": "I am Alan from Madrid.",
    "My name is Zoe and I live in Chicago": "My name is Zoe and I live in Chicago.",
    "That is all": "That is all.",
    "Goodbye": "Goodbye.",
    "Yes please": "Yes, please.",
    "Tell me more": "Tell me more.",
    "Go on": "Go on.",
    "Open the door": "Open the door.",
    "Walk on": "Walk on.",
}


def _silence(rate: int, seconds: float) -> bytes:
    return b"\0\0" * int(rate * seconds)


def _spoken(text: str, rate: int, volume: float = 1.0) -> bytes:
    """`text` in espeak's voice at `rate`, with half a second of silence either side, scaled by `volume`."""
    pcm = _silence(rate, 0.5) + synthesize(text, rate) + _silence(rate, 0.5)
    return (np.frombuffer(pcm, dtype="<i2") * volume).astype("<i2").tobytes()


def _white_noise(rate: int, seconds: float, rms: float, seed: int) -> bytes:
    noise = np.random.default_rng(seed).normal(0.0, rms, int(rate * seconds))
    return np.clip(noise, -32768, 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("said", REQUIRED)
def test_the_callers_phrases_are_heard_at_every_rate(said: str, rate: int) -> None:
    assert transcribe(_spoken(said, rate), rate) == REQUIRED[said]


@pytest.mark.parametrize(("said", "rate"), [(s, RATES[i % 3]) for i, s in enumerate(OTHERS)])
def test_other_names_cities_and_replies_are_heard(said: str, rate: int) -> None:
    assert transcribe(_spoken(said, rate), rate) == OTHERS[said]


def test_speech_through_livekits_resampler_is_heard() -> None:
    # The caller publishes 48 kHz; LiveKit hands the agent's STT 16 kHz from its own resampler.
    pcm = _spoken("My name is Ada and I live in Lisbon", 48000)
    resampler = rtc.AudioResampler(48000, 16000, num_channels=1)
    out = bytearray()
    frame_bytes = 480 * 2  # 10 ms
    for start in range(0, len(pcm) - frame_bytes + 1, frame_bytes):
        for frame in resampler.push(rtc.AudioFrame(pcm[start : start + frame_bytes], 48000, 1, 480)):
            out += bytes(frame.data)
    for frame in resampler.flush():
        out += bytes(frame.data)
    assert transcribe(bytes(out), 16000) == "My name is Ada and I live in Lisbon."


@pytest.mark.parametrize("rate", [16000, 48000])
def test_quiet_speech_is_still_heard(rate: int) -> None:
    for said, heard in REQUIRED.items():
        assert transcribe(_spoken(said, rate, volume=0.3), rate) == heard


def test_silence_is_heard_as_nothing() -> None:
    assert transcribe(_silence(16000, 2.0), 16000) == ""
    assert transcribe(_white_noise(16000, 2.0, rms=20.0, seed=1), 16000) == ""  # a quiet room's hiss
    assert transcribe(b"", 16000) == ""
    assert transcribe(b"\0", 24000) == ""  # half a sample


@pytest.mark.parametrize(
    ("rms", "rate", "seconds"), [(300.0, 16000, 1.0), (3000.0, 16000, 3.0), (8000.0, 48000, 2.0)]
)
def test_white_noise_is_heard_as_nothing(rms: float, rate: int, seconds: float) -> None:
    # Loud enough to pass for speech by its energy, so the decoder does run: no sentence of the grammar
    # fits noise from end to end, and a partial path is not a transcript.
    assert transcribe(_white_noise(rate, seconds, rms, seed=int(rms)), rate) == ""


def test_concurrent_callers_each_get_their_own_transcript() -> None:
    said = {
        "My name is Ada and I live in Lisbon": 16000,
        "No thanks, that is all": 24000,
        "I am Grace from Paris": 48000,
        "Tell me more": 24000,
    }
    audio = {text: _spoken(text, rate) for text, rate in said.items()}
    expected = {text: {**REQUIRED, **OTHERS}[text] for text in said}
    start = threading.Barrier(len(said))
    heard: dict[str, list[str]] = {text: [] for text in said}

    def listen(text: str) -> None:
        start.wait()
        for _ in range(2):
            heard[text].append(transcribe(audio[text], said[text]))

    threads = [threading.Thread(target=listen, args=(text,)) for text in said]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert heard == {text: [expected[text]] * 2 for text in said}


def test_what_is_heard_does_not_depend_on_what_was_heard_before() -> None:
    # The decoder's front end kept state between utterances, and a call's "No thanks, that is all" (after
    # its name and city) was once in five heard as "I am Emma from Tokyo". The decoder's own score of the
    # same audio, alone or after other speech, shows any state carried over.
    goodbye = _spoken("No thanks, that is all", 48000)
    alone = recognition.Recognizer()
    assert alone.transcribe(goodbye, 48000) == "No thanks, that is all."
    score = alone._decoder.hyp().score
    after = recognition.Recognizer()
    for earlier in ("My name is Ada and I live in Lisbon", "Open the door", "I am Grace from Paris"):
        after.transcribe(_spoken(earlier, 24000, volume=0.5), 24000)
    assert after.transcribe(goodbye, 48000) == "No thanks, that is all."
    assert after._decoder.hyp().score == score


def test_the_recognizer_is_built_once() -> None:
    assert recognition.recognizer() is recognition.recognizer()


def test_phrases_lists_what_can_be_heard() -> None:
    assert set(REQUIRED.values()) | set(OTHERS.values()) <= set(recognition.PHRASES)
    assert (
        len(recognition.PHRASES)
        == len(set(recognition.PHRASES))
        == (
            len(recognition.INTRODUCTIONS) * len(recognition.NAMES) * len(recognition.CITIES)
            + len(recognition.REPLIES)
        )
    )
    grammar = recognition.jsgf()
    assert "<name> = ada | alan" in grammar
    assert "( no thanks that is all )" in grammar


@pytest.mark.parametrize(
    ("words", "sentence"),
    [
        ("my name is ada and i live in lisbon", "My name is Ada and I live in Lisbon."),
        ("no thanks that is all", "No thanks, that is all."),
        ("my name is sam i live in berlin", "My name is Sam, I live in Berlin."),
        ("i am grace from paris", "I am Grace from Paris."),
        ("yes please", "Yes, please."),
        ("goodbye", "Goodbye."),
        ("no thanks", "No thanks."),
        ("hello how are you", "Hello, how are you?"),
        ("where do you live", "Where do you live?"),
        ("can i go on", "Can I go on?"),
        ("  Tell  ME more. ", "Tell me more."),
        ("No thanks, that is all.", "No thanks, that is all."),
        ("", ""),
        (" ,. ", ""),
    ],
)
def test_punctuate(words: str, sentence: str) -> None:
    assert punctuate(words) == sentence

"""The caller's side of a voice session: a real LiveKit participant that speaks and listens.

It joins a room with the `livekit` RTC SDK, publishes a microphone track (silence, and espeak-ng
speech when told to say something), subscribes to the agent's audio, and keeps what a person would
notice: when the agent's voice is first heard, how much of it, what the agent's transcriptions said,
the agent's state, and whether the room went away. :data:`CALLER_SCRIPT` is what the caller says in
the storyteller flow (the model server's STT hears it in this order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit import api, rtc

from storyteller_devkit.speech import rms, synthesize

logger = logging.getLogger("storyteller.devkit.caller")

SAMPLE_RATE = 48000
FRAME_MS = 10
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000
VOICE_RMS = 200.0  # agent audio louder than this is speech, not comfort silence
# Silence this long between voiced frames ends one stretch of the agent's speech (espeak's pauses between
# words and at commas are shorter).
SPEECH_GAP_S = 0.25
# Name and city (the handoff to the StoryAgent), then "no thanks" (the goodbye and hang-up).
LEAVE_DEADLINE_S = 10.0
CALLER_SCRIPT = ["My name is Ada and I live in Lisbon", "No thanks, that is all"]


def caller_token(api_key: str, api_secret: str, room: str, identity: str = "caller") -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    return api.AccessToken(api_key, api_secret).with_identity(identity).with_grants(grants).to_jwt()


@dataclass
class Caller:
    url: str
    token: str
    room: rtc.Room = field(default_factory=rtc.Room)
    agent_identity: str = ""
    agent_name: str = ""  # the `lk.agent.name` attribute: which tenant's worker took the job
    agent_joined_at: float | None = None
    agent_track_at: float | None = None  # the agent's audio track subscribed
    first_voice_at: float | None = None
    voiced_frames: int = 0
    # Each stretch of the agent's voice: (first voiced frame, last voiced frame), perf_counter seconds.
    speech: list[tuple[float, float]] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    # When each transcription stream opened, with its text: the framework opens a message's stream as that
    # message starts playing, so this tells which audio was which message.
    transcript_times: list[tuple[float, str]] = field(default_factory=list)
    agent_states: list[str] = field(default_factory=list)
    agent_state_times: list[tuple[float, str]] = field(default_factory=list)  # (perf_counter, state)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _source: rtc.AudioSource = field(default_factory=lambda: rtc.AudioSource(SAMPLE_RATE, 1))
    _speech: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    _speaking_done: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)  # the transcripts' (also in _tasks)

    async def join(self) -> None:
        room = self.room
        room.on("participant_connected", self._on_participant)
        room.on("track_subscribed", self._on_track)
        room.on("participant_attributes_changed", self._on_attributes)
        room.on("disconnected", lambda *_: self.disconnected.set())
        room.register_text_stream_handler("lk.transcription", self._on_transcription)
        await room.connect(self.url, self.token)
        for participant in room.remote_participants.values():
            self._on_participant(participant)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        # No DTX: with it the digital silence between utterances sends no packets, and under load the
        # receiver's jitter buffer stretched the first syllable after it ("No" took 110 ms instead of
        # 60): PocketSphinx then heard "No thanks, that is all" as "I am Sam from Tokyo" in 3 calls of
        # 24 (0 of 20 without DTX).
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False)
        await room.local_participant.publish_track(track, options)
        self._tasks.append(asyncio.create_task(self._microphone()))

    async def leave(self) -> None:
        """Stop listening and speaking, and leave the room. Bounded (LEAVE_DEADLINE_S each): the RTC SDK's
        disconnect has been seen to wait forever for its engine (a test then hung, not failed); the callers'
        tests delete the room next, which closes the connection from the server's side anyway."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=LEAVE_DEADLINE_S)
        try:
            await asyncio.wait_for(self.room.disconnect(), LEAVE_DEADLINE_S)
        except TimeoutError:
            logger.warning("the RTC disconnect did not finish; leaving it to the room's deletion")

    # -- speaking -----------------------------------------------------------------------------
    async def say(self, text: str) -> None:
        """Speak `text` (espeak-ng) into the microphone; returns once it has been sent."""
        self._speaking_done.clear()
        await self._speech.put(await asyncio.to_thread(synthesize, text, SAMPLE_RATE))
        await self._speaking_done.wait()

    async def _microphone(self) -> None:
        # A microphone never stops: silence between utterances, paced by the source's queue.
        silence = b"\0\0" * SAMPLES_PER_FRAME
        while True:
            pcm = b""
            with contextlib.suppress(asyncio.QueueEmpty):
                pcm = self._speech.get_nowait()
            if pcm:
                step = SAMPLES_PER_FRAME * 2
                for i in range(0, len(pcm) - step + 1, step):
                    await self._capture(pcm[i : i + step])
                self._speaking_done.set()
            else:
                await self._capture(silence)

    async def _capture(self, pcm: bytes) -> None:
        frame = rtc.AudioFrame(pcm, SAMPLE_RATE, 1, len(pcm) // 2)
        await self._source.capture_frame(frame)

    # -- listening ------------------------------------------------------------------------------
    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and not self.agent_identity:
            self.agent_identity = participant.identity
            self.agent_name = participant.attributes.get("lk.agent.name", "")
            self.agent_joined_at = time.perf_counter()

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity == self.agent_identity and "lk.agent.state" in changed:
            self.agent_states.append(changed["lk.agent.state"])
            self.agent_state_times.append((time.perf_counter(), changed["lk.agent.state"]))

    def _on_track(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.identity == self.agent_identity:
            self.agent_track_at = self.agent_track_at or time.perf_counter()
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1):
            if rms(bytes(event.frame.data)) > VOICE_RMS:
                now = time.perf_counter()
                if self.first_voice_at is None:
                    self.first_voice_at = now
                self.voiced_frames += 1
                if self.speech and now - self.speech[-1][1] <= SPEECH_GAP_S:
                    self.speech[-1] = (self.speech[-1][0], now)
                else:
                    self.speech.append((now, now))

    def _on_transcription(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        opened = time.perf_counter()

        async def read() -> None:
            parts: list[str] = []
            try:
                async for chunk in reader:
                    parts.append(chunk)
            except rtc.StreamError:
                # The agent deleted the room right after its last words (a hang-up) and the stream's end
                # never came: what was received of them was said.
                pass
            text = "".join(parts)
            if participant_identity == self.agent_identity and text.strip():
                self.transcripts.append(text)
                self.transcript_times.append((opened, text))

        task = asyncio.create_task(read())
        self._tasks.append(task)
        self._readers.append(task)

    async def wait_for(self, what: str, predicate: Callable[[], bool], deadline_s: float) -> None:
        """Poll `predicate` until it holds, or fail naming `what` and what was seen so far."""
        deadline = time.monotonic() + deadline_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {deadline_s} s waiting for {what}; agent={self.agent_identity!r} "
                    f"states={self.agent_states[-5:]} voiced_frames={self.voiced_frames} "
                    f"transcripts={self.transcripts[-3:]}"
                )
            await asyncio.sleep(0.05)

    async def say_until_hang_up(self, text: str, attempts: int = 3, deadline_s: float = 60) -> int:
        """Say `text` (a goodbye) until the agent hangs up; return how many times it took.

        The offline recogniser on a loaded machine rarely mishears a goodbye (then the story goes on): the
        caller says it again, as a person would. Tests of the recognition itself use `say` once.
        """
        for attempt in range(1, attempts + 1):
            replies, spoken = len(self.transcripts), self.agent_states.count("speaking")
            await self.say(text)

            def answered(n: int = replies, s: int = spoken) -> bool:
                # Hung up, or spoke a whole reply since (its transcript in, and listening again).
                return self.disconnected.is_set() or (
                    len(self.transcripts) > n
                    and self.agent_states.count("speaking") > s
                    and self.agent_states[-1:] == ["listening"]
                )

            await self.wait_for("the hang-up, or another reply", answered, deadline_s)
            if any("Goodbye" in t for t in self.transcripts[replies:]):
                await self.wait_for("the hang-up after the goodbye", self.disconnected.is_set, deadline_s)
            if self.disconnected.is_set():
                # The transcripts' streams end with the room: let their readers keep what they received.
                pending = [t for t in self._readers if not t.done()]
                if pending:
                    await asyncio.wait(pending, timeout=10)
                return attempt
        raise AssertionError(f"no hang-up after saying {text!r} {attempts} times; heard {self.transcripts}")

    def transcript_text(self) -> str:
        return " ".join(self.transcripts)

"""Dead air at the handoff, voice path: the caller's end of turn → the StoryAgent's first audio, per mode.

Two workers of the example tenant's shape (intro on a chat model with Deepgram STT and OpenAI TTS, story on
`openai-realtime` with no TTS) run side by side on one local `livekit-server --dev`, one per
`spec.intro.handoff.mode`; calls alternate between them in the same run. The caller is a real participant
(the `livekit` RTC SDK) whose voice is espeak-ng; the models are the local server (chat script, espeak TTS,
PocketSphinx STT, the Realtime API websocket); `--realtime-first-audio S` makes the realtime model wait S
seconds before each answer's first audio, as a provider would (OpenAI's realtime models take about half a
second). For each call, from the end of the caller's turn (the agent turns to "thinking" once the caller has
said their name and city; the wait for that, from their last word, is printed apart):

- first audio: the first agent audio heard (the bridge, in both modes);
- StoryAgent's first audio: the first audio the StoryAgent plays; sequential: its story, after the
  IntroAgent's bridge; overlapping: the bridge it plays while its story is generated;
- story: the first audio of the story itself (its transcript's stream opens as it starts playing);
- silence before the story: between the end of the bridge and the story's first audio (0 when the story
  follows the bridge within a breath, `caller.SPEECH_GAP_S`).

Prints medians and p95, and the worker's own means of the stages before the first audio (end of turn,
LLM time to first token, TTS time to first byte, per agent); asserts nothing.

    .venv/bin/python bench/bridge.py [--sessions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from storyteller_api import metric_names
from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import free_port
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_devkit.worker_process import WorkerProcess

MODES = ("sequential", "overlapping")
STORY_START = "Once upon a time"


@dataclass(frozen=True)
class Handoff:
    """Seconds from the caller's end of turn; `turn_wait` from their last word to it."""

    turn_wait: float
    first_audio: float
    story_agent_audio: float
    story: float
    silence: float


def measure(caller: Caller, last_word: float, mode: str) -> Handoff:
    end_of_turn = next(t for t, state in caller.agent_state_times if t >= last_word and state == "thinking")
    story_at = next(t for t, text in caller.transcript_times if text.startswith(STORY_START))
    after = [(start, end) for start, end in caller.speech if end >= end_of_turn]
    first = after[0]
    # The stretch of voice the story starts in, or the first one after it opened.
    holding = [s for s in after if s[0] <= story_at + 0.05 and s[1] >= story_at - 0.05]
    story_stretch = holding[0] if holding else next(s for s in after if s[0] >= story_at)
    if story_stretch is first:
        story_audio, silence = story_at, 0.0  # the story follows the bridge with no pause
    else:
        story_audio = story_stretch[0]
        before = [s for s in after if s[1] < story_stretch[0]]
        silence = story_stretch[0] - before[-1][1] if before else 0.0
    story_agent_audio = first[0] if mode == "overlapping" else story_audio
    return Handoff(
        turn_wait=end_of_turn - last_word,
        first_audio=first[0] - end_of_turn,
        story_agent_audio=story_agent_audio - end_of_turn,
        story=story_audio - end_of_turn,
        silence=silence,
    )


async def one_call(livekit: LiveKitServer, agent_name: str, mode: str) -> Handoff:
    room = f"bench-{uuid.uuid4().hex[:8]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
        try:
            await caller.wait_for(
                "the greeting to end",
                lambda: caller.agent_states.count("speaking") >= 1 and caller.agent_states[-1] == "listening",
                60,
            )
            await caller.say(CALLER_SCRIPT[0])
            last_word = time.perf_counter()
            await caller.wait_for(
                "the story",
                lambda: (
                    any(t.startswith(STORY_START) for t in caller.transcripts)
                    and bool(caller.speech)
                    and caller.speech[-1][1] > max(t for t, _ in caller.transcript_times) + 0.5
                ),
                60,
            )
        finally:
            await caller.leave()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    return measure(caller, last_word, mode)


STAGES = {
    "end of turn": metric_names.EOU_DELAY,
    "LLM TTFT": metric_names.LLM_TTFT,
    "TTS TTFB": metric_names.TTS_TTFB,
    "first audio": metric_names.TIME_TO_FIRST_AUDIO,
}


def stage_means(metrics_text: str) -> dict[str, float]:
    """Per stage and agent, the mean over every observation the worker made (its histograms' sum/count)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            for stage, name in STAGES.items():
                if sample.name in (f"{name}_sum", f"{name}_count"):
                    pair = sums.setdefault((stage, sample.labels.get("agent", "")), [0.0, 0.0])
                    pair[sample.name.endswith("_count")] += sample.value
    return {f"{stage} ({agent})": s / n for (stage, agent), (s, n) in sorted(sums.items()) if n}


def summary(xs: list[float]) -> str:
    ordered = sorted(xs)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:5.0f} ms  p95 {p95 * 1000:5.0f} ms"


async def main(sessions: int, realtime_first_audio_s: float) -> None:
    models = ThreadedServer(realtime_first_audio_s=realtime_first_audio_s).start()
    workdir = Path(tempfile.mkdtemp(prefix="storyteller-bench-"))
    base = models.base_url
    with running_livekit_server() as livekit:
        workers: dict[str, WorkerProcess] = {}
        for mode in MODES:
            intro = dict(tenant_dict(base)["intro"], handoff={"mode": mode})
            config = tenant_dict(
                base,
                livekit_url=livekit.url,
                tenant=mode[:3],
                agentName=f"{mode}-storyteller",
                intro=intro,
                story={
                    "llm": {
                        "provider": "openai-realtime",
                        "model": "gpt-realtime",
                        "voice": "echo",
                        "baseURL": base,
                    }
                },
                pool={"sessionsPerWorker": 2, "idleProcesses": 1},
                observability={"metricsPort": free_port()},
            )
            workers[mode] = WorkerProcess(config, livekit, workdir).start()
        results: dict[str, list[Handoff]] = {mode: [] for mode in MODES}
        stages: dict[str, dict[str, float]] = {}
        try:
            for worker in workers.values():
                worker.wait_registered()
                worker.wait_log('"process initialized"', 60)
            for i in range(sessions):
                for mode in MODES if i % 2 == 0 else MODES[::-1]:
                    results[mode].append(await one_call(livekit, f"{mode}-storyteller", mode))
            stages = {mode: stage_means(worker.metrics()) for mode, worker in workers.items()}
        finally:
            for worker in workers.values():
                worker.stop()
    models.stop()

    print(
        f"caller's end of turn (name and city said) → ..., {sessions} calls per mode, realtime story "
        f"(first audio after {realtime_first_audio_s * 1000:.0f} ms)"
    )
    for mode in MODES:
        rows = results[mode]
        print(f"  {mode}:")
        print(f"    last word → end of turn        {summary([r.turn_wait for r in rows])}")
        print(f"    first audio (the bridge)       {summary([r.first_audio for r in rows])}")
        print(f"    StoryAgent's first audio       {summary([r.story_agent_audio for r in rows])}")
        print(f"    the story's first audio        {summary([r.story for r in rows])}")
        print(f"    silence between bridge, story  {summary([r.silence for r in rows])}")
        print(
            "    the worker's means: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages[mode].items())
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20, help="calls per mode")
    parser.add_argument(
        "--realtime-first-audio", type=float, default=0.0, help="seconds before each realtime answer's audio"
    )
    logging.basicConfig(level=logging.ERROR)
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.realtime_first_audio))

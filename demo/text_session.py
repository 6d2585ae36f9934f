"""`make demo` (text stage): the example tenant's storyteller flow, offline, with its transcript.

The example tenant (examples/tenant.yaml) is rendered into the worker config exactly as the operator
renders it into the tenant's ConfigMap; every model block is pointed at a local OpenAI-compatible
server that answers deterministically, so no cloud account is needed. The conversation runs through
the real worker code (IntroAgent → handoff → StoryAgent → story_finished) in text mode.

    .venv/bin/python demo/text_session.py                 # scripted user turns
    .venv/bin/python demo/text_session.py --interactive   # type the user's turns yourself
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livekit import rtc  # noqa: E402
from livekit.agents import AgentSession  # noqa: E402
from livekit.agents.testing import fake_job_context  # noqa: E402
from livekit.agents.utils import http_context  # noqa: E402

from storyteller_api.spec import WorkerConfig  # noqa: E402
from storyteller_devkit.model_server import DEV_API_KEY, DEV_API_SECRET, ThreadedServer  # noqa: E402
from storyteller_operator.render import worker_config  # noqa: E402
from storyteller_worker.agents.intro import IntroAgent  # noqa: E402
from storyteller_worker.agents.session import build_session  # noqa: E402
from storyteller_worker.agents.userdata import StoryData  # noqa: E402
from storyteller_worker.config import parse_tenant_config  # noqa: E402
from storyteller_worker.providers.phases import build_session_models  # noqa: E402

SCRIPT = ["Hi there!", "My name is Ada and I live in Lisbon.", "Open the door!", "No thanks, that is all."]


def local_models(config: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The rendered config with every model block on the local server (`base_url`), which speaks every API
    the tenant's models use (chat completions, speech, Deepgram's and OpenAI's speech-to-text, and OpenAI's
    Realtime websocket): nothing else is changed."""
    config = json.loads(json.dumps(config))
    for phase in ("intro", "story"):
        for kind in ("llm", "stt", "tts"):
            block = config.get(phase, {}).get(kind)
            if block:
                block["baseURL"] = base_url
                for fallback in block.get("fallbacks", []):
                    fallback["baseURL"] = base_url
    return config


def example_tenant(base_url: str) -> WorkerConfig:
    """examples/tenant.yaml rendered as the operator would, with every model on `base_url`."""
    docs = list(yaml.safe_load_all((ROOT / "examples" / "tenant.yaml").read_text()))
    sd = next(d for d in docs if d and d.get("kind") == "StorytellerDeployment")
    meta = sd["metadata"]
    rendered = worker_config(meta["name"], meta.get("namespace", "default"), sd["spec"])
    return parse_tenant_config(local_models(rendered, base_url))


def print_transcript(session: AgentSession[StoryData], agent_spoke: asyncio.Event) -> None:
    @session.on("conversation_item_added")
    def _on_item(ev: Any) -> None:
        item = ev.item
        if item.type == "agent_handoff" and item.old_agent_id:
            print(f"  {'':>10}  -- handoff {item.old_agent_id} -> {item.new_agent_id} --", flush=True)
        elif item.type == "message" and item.text_content:
            if item.role == "assistant":
                agent_spoke.set()
            print(f"  {'caller' if item.role == 'user' else 'agent':>10}: {item.text_content}", flush=True)


async def main(interactive: bool) -> None:
    server = ThreadedServer().start()
    # Fake keys for the local server only; the LiveKit URL is the local server's DeleteRoom endpoint.
    os.environ.update(
        OPENAI_API_KEY="sk-local-demo",
        DEEPGRAM_API_KEY="dg-local-demo",
        LIVEKIT_URL=server.origin,
        LIVEKIT_API_KEY=DEV_API_KEY,
        LIVEKIT_API_SECRET=DEV_API_SECRET,
    )
    tenant = example_tenant(server.base_url)
    print(f"tenant {tenant.tenant!r} (agent {tenant.agent_name!r}), models on {server.base_url}")
    for phase in (tenant.intro, tenant.story):
        llm = phase.llm
        print(
            f"  {type(phase).__name__}: llm {llm.provider} {llm.model}"
            + (f", voice {llm.voice}" if llm.voice else "")
        )
    print()

    models = build_session_models(tenant, vad=None)
    async with http_context.open():
        with fake_job_context(room=rtc.Room()) as job:
            session = build_session(tenant, vad=None, models=models.intro)
            closed = asyncio.Event()
            session.on("close", lambda _ev: closed.set())
            greeted = asyncio.Event()
            print_transcript(session, greeted)
            await session.start(IntroAgent(tenant, story_models=models.story))
            await asyncio.wait_for(greeted.wait(), timeout=30)  # the agent speaks first
            turns = iter(SCRIPT)
            while not closed.is_set():
                if interactive:
                    text = await asyncio.to_thread(input, "  you> ")
                else:
                    text = next(turns, "")
                    if not text:
                        break
                await session.run(user_input=text)
            await asyncio.wait_for(closed.wait(), timeout=10)
    server.stop()
    deleted = server.recorder.deleted_rooms
    print(f"\nsession ended; room {job.job.room.name!r} deleted: {deleted == [job.job.room.name]}")
    print(f"userdata: {session.userdata}")
    realtime = server.recorder.realtime
    if realtime.sessions_opened:
        sessions, said = len(realtime.sessions_opened), len(realtime.spoken)
        calls = [name for name, _ in realtime.function_calls]
        print(f"realtime API: {sessions} session(s), {said} spoken answer(s), tool calls {calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactive", action="store_true", help="type the user's turns")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(parser.parse_args().interactive))

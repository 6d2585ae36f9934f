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

from storyteller_operator.render import worker_config  # noqa: E402
from storyteller_worker.agents import IntroAgent, StoryData  # noqa: E402
from storyteller_worker.config import TenantConfig, parse_tenant_config  # noqa: E402
from storyteller_worker.providers import build_session_models  # noqa: E402
from storyteller_worker.session import build_session  # noqa: E402
from tests.fakes.openai_server import DEV_API_KEY, DEV_API_SECRET, ThreadedServer  # noqa: E402

SCRIPT = ["Hi there!", "My name is Ada and I live in Lisbon.", "Open the door!", "No thanks, that is all."]


def example_tenant(base_url: str) -> TenantConfig:
    """examples/tenant.yaml rendered as the operator would, with every model on `base_url`."""
    docs = list(yaml.safe_load_all((ROOT / "examples" / "tenant.yaml").read_text()))
    sd = next(d for d in docs if d and d.get("kind") == "StorytellerDeployment")
    meta = sd["metadata"]
    config: dict[str, Any] = worker_config(meta["name"], meta.get("namespace", "default"), sd["spec"])
    for phase in ("intro", "story"):
        for kind in ("llm", "stt", "tts"):
            block = config.get(phase, {}).get(kind)
            if block:
                block["baseURL"] = base_url
                for fallback in block.get("fallbacks", []):
                    fallback["baseURL"] = base_url
    return parse_tenant_config(config)


def print_transcript(session: AgentSession[StoryData]) -> None:
    @session.on("conversation_item_added")
    def _on_item(ev: Any) -> None:
        item = ev.item
        if getattr(item, "role", None) in ("user", "assistant") and item.text_content:
            who = "user" if item.role == "user" else type(session.current_agent).__name__
            print(f"  {who:>10}: {item.text_content}", flush=True)


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
    print(f"tenant {tenant.tenant!r} (agent {tenant.agent_name!r}), models on {server.base_url}\n")

    models = build_session_models(tenant, vad=None)
    async with http_context.open():
        with fake_job_context(room=rtc.Room()) as job:
            session = build_session(tenant, vad=None, models=models.intro)
            closed = asyncio.Event()
            session.on("close", lambda _ev: closed.set())
            print_transcript(session)
            await session.start(IntroAgent(tenant, story_models=models.story))
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactive", action="store_true", help="type the user's turns")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(parser.parse_args().interactive))

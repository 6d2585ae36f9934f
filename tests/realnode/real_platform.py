"""The platform on real pods, for the realnode tests (it is installed by `storyteller_devkit.real_platform`).

:func:`busy_pods`, :func:`ready_pod_names` and :func:`pod_phase` read the tenant's worker pods (the first
through each worker's own status endpoint). :class:`Call` is one caller's conversation, step by step, so
a test can act on the cluster between steps.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from livekit import api

from storyteller_api import contract
from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token
from storyteller_devkit.cluster import Cluster
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_operator import render
from tests.cluster.test_operator_lifecycle import worker_pods

RELEASE = "storyteller-real"
RELEASE_NS = "storyteller-real"


def pod_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The worker's own `GET :8081/worker` on the pod's address (the host reaches pods on the bridge)."""
    url = f"http://{pod['status']['podIP']}:{contract.HEALTH_PORT}/worker"
    with urllib.request.urlopen(url, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def busy_pods(cluster: Cluster, ns: str, name: str = "acme") -> list[str]:
    """Names of the tenant's pods (terminating ones too) running a session now."""
    items = cluster.kubectl_json("-n", ns, "get", "pods", "-l", render.selector_string(name))["items"]
    busy = []
    for pod in items:
        if not pod.get("status", {}).get("podIP"):
            continue
        try:
            if pod_status(pod).get("active_jobs", 0) > 0:
                busy.append(pod["metadata"]["name"])
        except OSError:
            continue
    return busy


def ready_pod_names(cluster: Cluster, ns: str, name: str = "acme") -> list[str]:
    """The tenant's pods that are Ready and not terminating."""
    return [
        p["metadata"]["name"]
        for p in worker_pods(cluster, ns, name)
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def pod_phase(cluster: Cluster, ns: str, pod: str) -> dict[str, Any] | None:
    """The pod as stored, or None once it is gone."""
    proc = cluster.kubectl("-n", ns, "get", "pod", pod, "-o", "json", "--ignore-not-found", check=False)
    return json.loads(proc.stdout) if proc.stdout.strip() else None


@dataclass
class Call:
    """One caller's conversation with a tenant's agent, in the steps a test may act between."""

    livekit: LiveKitServer
    models: ThreadedServer
    agent_name: str
    room: str = field(default_factory=lambda: f"call-{uuid.uuid4().hex[:8]}")
    caller: Caller | None = None

    async def start(self) -> None:
        """Dispatch the agent, join, and hear the greeting to its end."""
        async with api.LiveKitAPI(self.livekit.http_url, self.livekit.api_key, self.livekit.api_secret) as lk:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=self.agent_name, room=self.room)
            )
        token = caller_token(self.livekit.api_key, self.livekit.api_secret, self.room)
        self.caller = caller = Caller(self.livekit.url, token)
        await caller.join()
        await caller.wait_for("the agent to join", lambda: bool(caller.agent_identity), 90)
        await caller.wait_for("the greeting's audio", lambda: caller.voiced_frames >= 50, 60)
        await caller.wait_for("the greeting to end", self._listening_after(1), 60)
        # The transcript is its own stream: on a busy machine it may trail the audio by a moment.
        await caller.wait_for(
            "the greeting's transcript", lambda: "What is your name" in caller.transcript_text(), 30
        )

    async def tell_name(self) -> None:
        """Say name and city; the StoryAgent tells the story and pauses for the caller."""
        caller = self._caller()
        await caller.say(CALLER_SCRIPT[0])
        story = "Once upon a time in Lisbon, Ada"
        await caller.wait_for("the StoryAgent's story", lambda: story in caller.transcript_text(), 90)
        await caller.wait_for("the story to pause for the caller", self._listening_after(2), 90)

    async def finish(self) -> None:
        """Say thanks; the agent says goodbye and deletes the room."""
        caller = self._caller()
        await caller.say_until_hang_up(CALLER_SCRIPT[1], deadline_s=90)
        assert "Goodbye, Ada" in caller.transcript_text()
        await self.livekit.wait_room_gone(self.room)  # story_finished deleted it

    async def leave(self) -> None:
        if self.caller is not None:
            await self.caller.leave()

    def _caller(self) -> Caller:
        assert self.caller is not None, "start() the call first"
        return self.caller

    def _listening_after(self, speeches: int) -> Any:
        caller = self._caller()
        return lambda: (
            caller.agent_states.count("speaking") >= speeches and caller.agent_states[-1] == "listening"
        )


def the_one(items: list[str], what: str) -> str:
    assert len(items) == 1, f"expected exactly one {what}, got {items}"
    return items[0]

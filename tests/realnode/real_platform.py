"""The platform on real pods, for the realnode tests and the cold-start bench.

:func:`install_chart` is ``helm install`` with the operator image built here, its pod on the real node.
:func:`tenant_spec` and :func:`deploy_tenant` make a tenant whose worker pods run the worker image on the
real node, against the LiveKit and model servers on the node's bridge address. :class:`Call` is one
caller's conversation, step by step, so a test can act on the cluster between steps.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from livekit import api

from storyteller_operator import render
from tests.cluster.test_operator_lifecycle import is_ready, tenant_yaml, wait_for, worker_pods
from tests.e2e.caller import Caller, caller_token
from tests.e2e.conftest import CALLER_SCRIPT
from tests.fakes.openai_server import ThreadedServer
from tests.fixtures.cluster import Cluster, LiveKitServer
from tests.fixtures.real_node import RealNode

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "storyteller"
RELEASE = "storyteller-real"
RELEASE_NS = "storyteller-real"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
# Real pods start Python and prewarm job processes on 2 shared cores: minutes, not the kwok seconds.
POD_DEADLINE = 300.0


def _image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def restrict(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("label", "namespace", ns, "--overwrite", *(f"{k}={v}" for k, v in RESTRICTED.items()))


def install_chart(cluster: Cluster, node: RealNode, release: str, ns: str, **operator: Any) -> None:
    """The chart with the operator image built here, its pod on the real node, in a restricted namespace."""
    cluster.kubectl("create", "namespace", ns, check=False)
    restrict(cluster, ns)
    repository, tag = _image(node.operator_image)
    values = {
        "operator": {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            **node.placement,
            **operator,
        }
    }
    cluster.helm(
        "upgrade", "--install", release, str(CHART), "--namespace", ns,
        "--values", "-", "--wait", "--timeout", "5m", input=yaml.safe_dump(values),
    )  # fmt: skip


def provider_secrets(ns: str, livekit: LiveKitServer) -> str:
    """The LiveKit credentials and the provider keys (the local servers take any) a tenant names."""
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "livekit-credentials", "namespace": ns},
            "stringData": {"LIVEKIT_API_KEY": livekit.api_key, "LIVEKIT_API_SECRET": livekit.api_secret},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "providers", "namespace": ns},
            "stringData": {"OPENAI_API_KEY": "sk-test-local", "DEEPGRAM_API_KEY": "dg-test-local"},
        },
    ]
    return yaml.safe_dump_all(docs)


def tenant_spec(
    node: RealNode, livekit: LiveKitServer, models: ThreadedServer, **pool: Any
) -> dict[str, Any]:
    """A tenant on the real node: the worker image, the servers on the bridge address, a small pool."""
    base = models.base_url
    return {
        "agentName": f"real-{uuid.uuid4().hex[:6]}",
        "livekit": {"url": livekit.url_on(node.ip), "credentialsSecret": "livekit-credentials"},
        "providerSecrets": ["providers"],
        "intro": {
            # An outage with a working fallback, so provider errors reach the dashboards too.
            "llm": {
                "provider": "openai",
                "model": "broken-primary",
                "baseURL": base,
                "fallbacks": [{"provider": "openai", "model": "gpt-4o-mini", "baseURL": base}],
            },
            "stt": {"provider": "deepgram", "model": "nova-3", "language": "en", "baseURL": base},
            "tts": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "echo", "baseURL": base},
        },
        "story": {"llm": {"provider": "openai", "model": "gpt-4o", "baseURL": base}},
        "pool": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "sessionsPerWorker": 2,
            "idleProcesses": 1,
            "spareSessions": 0,
            "scaleDownDelaySeconds": 0,
            "drainTimeoutSeconds": 120,
            **pool,
        },
        "worker": {
            "image": node.worker_image,
            "imagePullPolicy": "Never",
            **node.placement,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        },
    }


def deploy_tenant(cluster: Cluster, ns: str, spec: dict[str, Any], name: str = "acme") -> dict[str, Any]:
    """Apply the tenant and wait until it is Ready with every wanted pod Ready (through real probes)."""
    cluster.apply(tenant_yaml(ns, name, **spec))  # every top-level field of `spec` replaces its default

    def ready() -> dict[str, Any] | None:
        sd = is_ready(cluster, ns, name)
        want = spec["pool"]["minReplicas"]
        return sd if sd and sd["status"].get("readyReplicas") == want else None

    return wait_for(f"tenant {ns}/{name} Ready on real pods", ready, deadline=POD_DEADLINE)


def pod_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The worker's own `GET :8081/worker` on the pod's address (the host reaches pods on the bridge)."""
    url = f"http://{pod['status']['podIP']}:{render.HEALTH_PORT}/worker"
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
        self.models.recorder.stt_script.extend(CALLER_SCRIPT)
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
        assert "What is your name" in caller.transcript_text()

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
        await caller.say(CALLER_SCRIPT[1])
        await caller.wait_for("the room to be deleted", caller.disconnected.is_set, 90)
        assert "Goodbye, Ada" in caller.transcript_text()
        async with api.LiveKitAPI(self.livekit.http_url, self.livekit.api_key, self.livekit.api_secret) as lk:
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[self.room]))
        assert not listed.rooms, "story_finished did not delete the room"

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

"""A canary on real workers, judged by the chart's operator pod on real figures and rolled back without
cutting a call.

Revision 1 serves; revision 2's intro prompt forbids tools, so the local model chats on and never calls
the handoff tool (as a real model told so would). Revision 2 runs as the canary Deployment on the real
node; its first real call makes its worker count a session that never reaches the StoryAgent; a real
Prometheus (``node_prometheus``, finding the pod through the API server as the PodMonitor selects it)
scrapes that; the operator pod reads it, rolls the canary back, and the canary's pod drains: its caller
goes on talking to the bad intro until hanging up, and only then does the pod exit.
"""

from __future__ import annotations

import time
from typing import Any

from storyteller_api import contract
from storyteller_devkit.caller import CALLER_SCRIPT
from storyteller_devkit.cluster import Cluster
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_script import ASK_AGAIN, SMALL_TALK
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.real_node import RealNode
from storyteller_devkit.real_platform import deploy_tenant, get_sd, tenant_spec
from tests.cluster.test_operator_canary import canary_deployment_gone, events_of
from tests.cluster.test_operator_lifecycle import patch_spec
from tests.realnode.real_platform import Call, busy_pods, pod_phase, ready_pod_names
from tests.realnode.test_worker_pods import poll

BAD_INTRO = "Chat with the caller about their day. Never call any tools."
# Judged on its first session: a real call takes most of a minute on two cores. The minimum-sessions rule
# itself is tested on the local control plane (tests/cluster/test_operator_canary.py).
ROLLOUT = {"strategy": "Canary", "canaryWeight": 50, "analysis": {"minSessions": 1}}
# Figures are read every 15 s (observe.ANALYSIS_INTERVAL_S), scraped every second.
VERDICT_DEADLINE = 120.0


def is_canary(cluster: Cluster, ns: str, pod: str) -> bool:
    labels = ((pod_phase(cluster, ns, pod) or {}).get("metadata") or {}).get("labels") or {}
    return bool(labels.get(contract.TRACK_LABEL) == contract.CANARY_TRACK)


async def test_a_revision_whose_intro_never_hands_off_is_rolled_back_without_cutting_its_call(
    cluster: Cluster,
    platform: RealNode,
    tenant_ns: str,
    node_livekit_server: LiveKitServer,
    node_model_server: ThreadedServer,
    node_prometheus: Prometheus,
) -> None:
    # One session per pod: while the stable pod holds a call, LiveKit offers the next one to the canary.
    pool = {"sessionsPerWorker": 1}
    spec = {**tenant_spec(platform, node_livekit_server, node_model_server, **pool), "rollout": ROLLOUT}
    deploy_tenant(cluster, tenant_ns, spec)
    patch_spec(cluster, tenant_ns, {"intro": {"instructions": BAD_INTRO}})
    canary = await poll(
        "the canary's pod to be Ready",
        lambda: next(
            (p for p in ready_pod_names(cluster, tenant_ns) if is_canary(cluster, tenant_ns, p)), None
        ),
    )
    status = get_sd(cluster, tenant_ns)["status"]
    assert (status["revision"], status["canary"]["revision"]) == (1, 2)
    # Scraped at zero before its first call, so increase() over the canary's window counts that call.
    started_series = f'storyteller_sessions_started_total{{namespace="{tenant_ns}", revision="2"}}'
    await poll("Prometheus to scrape the canary", lambda: node_prometheus.query(started_series), 120)

    calls: list[Call] = []

    async def dial() -> tuple[Call, float]:
        call = Call(node_livekit_server, node_model_server, spec["agentName"])
        calls.append(call)
        dialled = time.monotonic()
        await call.start()
        return call, dialled

    try:
        bad, dialled = await dial()
        if busy_pods(cluster, tenant_ns) != [canary]:
            # It reached the stable pod: that caller reaches the story (the stable revision's figures,
            # the yardstick) and stays, so the stable pod is full and the next call goes to the canary.
            await bad.tell_name()
            bad, dialled = await dial()
            assert canary in busy_pods(cluster, tenant_ns)

        def rolled_back() -> dict[str, Any] | None:
            st: dict[str, Any] = get_sd(cluster, tenant_ns)["status"]
            return st if "canary" not in st and st["revisions"][0].get("state") else None

        status = await poll("the canary to be rolled back", rolled_back, VERDICT_DEADLINE)
        print(f"the bad revision's first call dialled → its rollback: {time.monotonic() - dialled:.1f} s")
        failed = status["revisions"][0]
        assert (failed["revision"], failed["state"]) == (2, "Failed"), failed
        assert "handoff rate 0.00 vs stable 1.00" in failed["failure"], failed
        assert status["revision"] == 1
        (warning,) = await poll(
            "the CanaryRolledBack event",
            lambda: [e for e in events_of(cluster, tenant_ns) if e["reason"] == "CanaryRolledBack"],
            30,
        )
        assert warning["type"] == "Warning" and "handoff rate" in warning["message"], warning

        # It drains like any scale-in: its Deployment goes, its pod is told to stop and keeps the call.
        await poll("the canary Deployment to go", lambda: canary_deployment_gone(cluster, tenant_ns), 60)
        await poll(
            f"the canary pod {canary} to be told to stop",
            lambda: (
                (pod_phase(cluster, tenant_ns, canary) or {}).get("metadata", {}).get("deletionTimestamp")
            ),
            60,
        )
        caller = bad.caller
        assert caller is not None
        await caller.say(CALLER_SCRIPT[0])
        # Its answer to a name and a city (or, had the recogniser missed one, its asking again): no story.
        await caller.wait_for(
            "the bad intro to answer",
            lambda: SMALL_TALK in caller.transcript_text() or ASK_AGAIN in caller.transcript_text(),
            90,
        )
        assert "Once upon a time" not in caller.transcript_text()
        assert canary in busy_pods(cluster, tenant_ns), "the draining canary pod dropped its call"
    finally:
        for call in calls:
            await call.leave()
    await poll(
        f"the canary pod {canary} to exit after its call", lambda: not pod_phase(cluster, tenant_ns, canary)
    )

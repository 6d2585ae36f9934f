"""Cold start on the real node: scale-up decision → pod Running → worker registered → first call accepted.

The chart's operator runs in its pod on the real node (tests/cluster/up.sh --real-node, images from
tests/cluster/images.sh) and sizes one tenant with the builtin autoscaler, one session per worker and
one spare slot: every call fills a pod, so the operator asks for one more. The bench keeps every call
open and places the next call as soon as the new pod's worker has registered, so each new pod's first
call lands on it (every other pod is full). For each new pod it takes, from the API's watch events and
the worker's own log timestamps:

    decision    the Deployment's spec.replicas reaches the count that includes the pod (operator)
    created     the pod object exists (ReplicaSet controller)
    running     the pod's phase is Running (scheduler, kubelet, containerd, runc: sandbox + container)
    registered  the worker's "registered worker" log line (imports, prewarm, LiveKit handshake)
    accepted    the agent of the call placed on it joins the room

and, in the same run, warm dispatches: the same kind of spare pod, left idle `--settle` seconds after it
registered. Prints the median
and p95 of each phase; asserts nothing. Needs root (the real node).

    .venv/bin/python bench/cold_start.py [--pods 10] [--warm 3] [--settle 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch
from livekit import api

from storyteller_devkit.caller import Caller, caller_token
from storyteller_devkit.cluster import CLUSTER_DIR, Cluster
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.real_node import RealNode, add_real_node
from storyteller_devkit.real_platform import (
    deploy_tenant,
    install_chart,
    provider_secrets,
    restrict,
    tenant_spec,
)
from storyteller_devkit.worker_process import REGISTERED
from storyteller_operator import render

RELEASE = NS_OPERATOR = "storyteller-bench"
NS = "storyteller-bench-tenant"
TENANT = "acme"


@dataclass
class PodTimes:
    created: float | None = None
    running: float | None = None
    registered: float | None = None
    dispatched: float | None = None
    accepted: float | None = None


@dataclass
class Watcher:
    """Wall-clock times of the Deployment's replica counts and of each pod's creation and Running."""

    replicas_at: dict[int, float] = field(default_factory=dict)  # count -> first time asked
    pods: dict[str, PodTimes] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        apps, core = client.AppsV1Api(), client.CoreV1Api()
        selector = render.selector_string(TENANT)
        threading.Thread(target=self._deployments, args=(apps,), daemon=True).start()
        for ev in self._events(core.list_namespaced_pod, label_selector=selector):
            now = time.time()
            pod = ev["object"]
            times = self.pods.setdefault(pod.metadata.name, PodTimes(created=now))
            if pod.status.phase == "Running" and times.running is None:
                times.running = now

    def _deployments(self, apps: client.AppsV1Api) -> None:
        name = render.worker_name(TENANT)
        for ev in self._events(apps.list_namespaced_deployment, field_selector=f"metadata.name={name}"):
            self.replicas_at.setdefault(ev["object"].spec.replicas, time.time())

    def _events(self, list_fn: Any, **selectors: str) -> Iterator[dict[str, Any]]:
        """Watch events until stopped, restarting a watch the API server ends (this cluster's etcd 3.4
        answers some restarts with 504 "Too large resource version": a fresh list-watch gets past it)."""
        while not self.stop.is_set():
            try:
                yield from watch.Watch().stream(list_fn, NS, timeout_seconds=30, **selectors)
            except client.ApiException as err:
                if err.status not in (410, 504):
                    raise


def registered_at(cluster: Cluster, pod: str) -> float | None:
    """When the worker in `pod` logged its registration (the container runtime's timestamp), if it has."""
    logs = cluster.kubectl("-n", NS, "logs", pod, "--timestamps", check=False).stdout
    for line in logs.splitlines():
        if REGISTERED in line:
            stamp = line.split(" ", 1)[0]
            return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")[:26] + "+00:00").timestamp()
    return None


async def dispatch(livekit: LiveKitServer, agent: str) -> tuple[Caller, float, float]:
    """Place a call; the caller stays in the room. Returns it, the dispatch time and the agent's join."""
    room = f"bench-{uuid.uuid4().hex[:8]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        sent = time.time()
        await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=agent, room=room))
    await caller.wait_for("the agent to join", lambda: bool(caller.agent_identity), 120)
    return caller, sent, time.time()


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:<34} (no data)"
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"  {name:<34} median {statistics.median(values):6.2f} s   p95 {p95:6.2f} s   (n={len(values)})"


async def measure(cluster: Cluster, node: RealNode, pods: int, warm: int, settle: float) -> None:
    models = ThreadedServer(host=node.ip).start()
    with running_livekit_server(also_bind=(node.ip,)) as livekit:
        # A fresh tenant namespace: a previous run's pool (kept by its hour-long scale-down delay) would
        # not be this run's cold start.
        cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=300)
        cluster.kubectl("create", "namespace", NS)
        restrict(cluster, NS)
        cluster.apply(provider_secrets(NS, livekit))
        # One session per pod and one spare slot: each call asks for one more pod. The pool is never
        # edited during the run (a pool edit rolls every pod).
        pool = {"minReplicas": 1, "maxReplicas": pods + warm + 2, "sessionsPerWorker": 1, "spareSessions": 1}
        spec = tenant_spec(node, livekit, models, scaleDownDelaySeconds=3600, **pool)
        spec["intro"]["llm"] = {"provider": "openai", "model": "gpt-4o-mini", "baseURL": models.base_url}
        deploy_tenant(cluster, NS, spec, TENANT)
        agent = spec["agentName"]

        config.load_kube_config(str(cluster.kubeconfig))
        watcher = Watcher()
        threading.Thread(target=watcher.run, daemon=True).start()
        callers: list[Caller] = []
        first_pods = {p["metadata"]["name"] for p in _pods(cluster)}
        warm_s: list[float] = []
        done: list[str] = []
        try:
            print(f"cold: {pods} new pods, each taking its first call as soon as its worker registered")
            caller, _, _ = await dispatch(
                livekit, agent
            )  # fills the first pod: the operator asks for one more
            callers.append(caller)
            deadline = time.monotonic() + 300 * (pods + warm)
            while len(done) < pods + warm and time.monotonic() < deadline:
                fresh = [n for n in watcher.pods if n not in first_pods and n not in done]
                for name in fresh:
                    times = watcher.pods[name]
                    if times.registered is None and times.running is not None:
                        times.registered = await asyncio.to_thread(registered_at, cluster, name)
                    if times.registered is None:
                        continue
                    if len(done) >= pods:
                        # Warm: the same kind of spare pod, left registered and idle for `settle` seconds.
                        if time.time() - times.registered < settle:
                            continue
                        caller, sent, joined = await dispatch(livekit, agent)
                        warm_s.append(joined - sent)
                    else:
                        caller, times.dispatched, times.accepted = await dispatch(livekit, agent)
                    callers.append(caller)
                    done.append(name)
                    print(f"  {name}: call accepted ({len(done)}/{pods + warm})", flush=True)
                    break
                else:
                    await asyncio.sleep(0.3)  # a poll interval: the next pod's events come from the watch
        finally:
            watcher.stop.set()
            for caller in callers:
                with contextlib.suppress(Exception):
                    await caller.leave()
            models.stop()

    ordered = sorted((watcher.pods[n] for n in done[:pods]), key=lambda t: t.created or 0)
    counts = sorted(watcher.replicas_at)
    phases: dict[str, list[float]] = {k: [] for k in ("decision → created", "created → running",
        "running → registered", "registered → dispatched (bench lag)", "dispatched → accepted",
        "decision → accepted")}  # fmt: skip
    for i, t in enumerate(ordered):
        asked = [watcher.replicas_at[c] for c in counts if c >= len(first_pods) + i + 1]
        decision = min(asked) if asked else None
        assert t.created and t.running and t.registered and t.dispatched and t.accepted
        if decision is not None:
            phases["decision → created"].append(t.created - decision)
            phases["decision → accepted"].append(t.accepted - decision)
        phases["created → running"].append(t.running - t.created)
        phases["running → registered"].append(t.registered - t.running)
        phases["registered → dispatched (bench lag)"].append(t.dispatched - t.registered)
        phases["dispatched → accepted"].append(t.accepted - t.dispatched)
    print(
        f"\ncold start over {len(ordered)} pods on {node.name} (2 shared cores; watch-event and log times):"
    )
    for name, values in phases.items():
        print(summary(name, values))
    print(f"warm dispatch (same run: spare pods left idle {settle:.0f} s after registering):")
    print(summary("dispatched → accepted", warm_s))


def _pods(cluster: Cluster) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("-n", NS, "get", "pods", "-l", render.selector_string(TENANT))["items"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10, help="new pods to measure")
    parser.add_argument("--warm", type=int, default=3, help="warm dispatches for comparison")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds a warm pod idles after registering"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    # The image build prints as it goes: a cold one takes many minutes.
    cluster = Cluster.at(add_real_node(Cluster.tools_env(), show_build=True), "local")
    node = RealNode.from_lib()
    install_chart(cluster, node, RELEASE, NS_OPERATOR, recheckSeconds=1)
    try:
        asyncio.run(measure(cluster, node, args.pods, args.warm, args.settle))
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        cluster.helm("uninstall", RELEASE, "--namespace", NS_OPERATOR, "--wait", check=False)
        print(f"the cluster keeps running; stop it with {CLUSTER_DIR / 'down.sh'}")


if __name__ == "__main__":
    main()

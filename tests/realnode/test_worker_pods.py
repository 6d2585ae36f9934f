"""Tenants' worker pods on the real node: real probes, real calls, and what happens to a call when the
pool changes under it (a pod deleted, the pool scaled in, a config rolled out).

The operator is the chart's pod (fixture `platform`); each worker pod runs the worker image and
registers with a `livekit-server` on the node's bridge address; the caller is a real LiveKit participant
on the host. Waits poll observable state with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from storyteller_api import contract
from storyteller_devkit.cluster import Cluster
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.real_node import RealNode
from storyteller_devkit.real_platform import POD_DEADLINE, deploy_tenant, tenant_spec, wait_for
from storyteller_operator import render
from tests.cluster.test_operator_lifecycle import patch_spec, worker_pods
from tests.panel_queries import DASHBOARDS, assert_has_data, panel_queries, substitute
from tests.realnode.real_platform import RELEASE_NS, Call, busy_pods, pod_phase, ready_pod_names, the_one


async def poll(what: str, check: Callable[[], Any], deadline: float = POD_DEADLINE) -> Any:
    """`wait_for` off the event loop, so the caller keeps hearing the agent meanwhile."""
    return await asyncio.to_thread(wait_for, what, check, deadline)


def metrics_targets(
    cluster: Cluster, ns: str, service: str, port_name: str
) -> list[tuple[str, dict[str, str]]]:
    """host:port of every ready endpoint of a Service, labelled as the chart's PodMonitor labels them."""
    slices = cluster.kubectl_json(
        "-n", ns, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    out = []
    for eps in slices:
        port = next(p["port"] for p in eps.get("ports") or [] if p.get("name") == port_name)
        for ep in eps.get("endpoints") or []:
            if ep.get("conditions", {}).get("ready"):
                pod = ep["targetRef"]["name"]
                out += [(f"{addr}:{port}", {"namespace": ns, "pod": pod}) for addr in ep["addresses"]]
    return out


async def test_a_call_through_a_real_pod_is_scraped_and_fills_the_pool_dashboard(
    cluster: Cluster,
    platform: RealNode,
    tenant_ns: str,
    node_livekit_server: LiveKitServer,
    node_model_server: ThreadedServer,
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    spec = tenant_spec(platform, node_livekit_server, node_model_server)
    deploy_tenant(cluster, tenant_ns, spec)
    pod = the_one(worker_pods(cluster, tenant_ns), "worker pod")
    assert pod["spec"]["nodeName"] == platform.name
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    # Prometheus finds the workers through the metrics Service the operator rendered (its EndpointSlice
    # holds the real pod addresses), and the operator through the chart's Service.
    workers = metrics_targets(cluster, tenant_ns, render.metrics_service_name("acme"), "metrics")
    operator = metrics_targets(cluster, RELEASE_NS, "storyteller-real", "metrics")
    assert workers and operator, (workers, operator)
    prometheus = prometheus_factory(
        {"storyteller-worker": workers, "storyteller-operator": operator},
        rule_files=(DASHBOARDS / "rules.yaml",),
    )
    prometheus.wait_for('min(up{job=~"storyteller-.*"})', lambda r: bool(r) and r[0]["value"][1] == "1")

    call = Call(node_livekit_server, node_model_server, spec["agentName"])
    try:
        await call.start()
        assert busy_pods(cluster, tenant_ns) == [pod["metadata"]["name"]]
        await call.tell_name()
        await asyncio.to_thread(
            prometheus.wait_for,
            f'sum(storyteller_sessions_active{{namespace="{tenant_ns}"}})',
            lambda r: bool(r) and float(r[0]["value"][1]) == 1,
        )
        await call.finish()
    finally:
        await call.leave()

    # Every query of the worker-pool dashboard returns data from the real pods and the operator pod.
    queries = [(q, e) for q, e in panel_queries() if q.startswith("storyteller-worker-pools/")]
    assert len(queries) >= 7
    for query_id, expr in queries:
        query = substitute(expr, tenant_ns, "acme")
        result = await asyncio.to_thread(prometheus.wait_for, query, bool, 60)
        assert_has_data(result, f"{query_id}: {query}")


async def test_deleting_a_busy_pod_lets_its_call_finish_within_the_grace_period(
    cluster: Cluster,
    platform: RealNode,
    tenant_ns: str,
    node_livekit_server: LiveKitServer,
    node_model_server: ThreadedServer,
) -> None:
    spec = tenant_spec(platform, node_livekit_server, node_model_server, drainTimeoutSeconds=120)
    deploy_tenant(cluster, tenant_ns, spec)
    call = Call(node_livekit_server, node_model_server, spec["agentName"])
    try:
        await call.start()
        busy = the_one(busy_pods(cluster, tenant_ns), "busy pod")
        grace = pod_phase(cluster, tenant_ns, busy)["spec"]["terminationGracePeriodSeconds"]  # type: ignore[index]
        cluster.kubectl("-n", tenant_ns, "delete", "pod", busy, "--wait=false")
        deleted_at = time.monotonic()
        # The kubelet's SIGTERM drains the worker: the pod stays while its call goes on to the end.
        await call.tell_name()
        assert pod_phase(cluster, tenant_ns, busy) is not None, "the busy pod was killed mid-call"
        await call.finish()
    finally:
        await call.leave()
    await poll(f"pod {busy} to exit after its call", lambda: pod_phase(cluster, tenant_ns, busy) is None)
    assert time.monotonic() - deleted_at < grace, "the pod outlived its grace period (SIGKILL, not drain)"


async def test_scale_in_during_a_call_removes_an_idle_pod_and_keeps_the_busy_one(
    cluster: Cluster,
    platform: RealNode,
    tenant_ns: str,
    node_livekit_server: LiveKitServer,
    node_model_server: ThreadedServer,
) -> None:
    # One session per pod and one spare slot: each call makes the builtin autoscaler add a pod, and a
    # call that ends makes it remove one. (Editing the pool in the spec would roll every pod instead.)
    spec = tenant_spec(
        platform, node_livekit_server, node_model_server, sessionsPerWorker=1, spareSessions=1, maxReplicas=4
    )
    deploy_tenant(cluster, tenant_ns, spec)
    first = Call(node_livekit_server, node_model_server, spec["agentName"])
    second = Call(node_livekit_server, node_model_server, spec["agentName"])
    try:
        await first.start()
        busy = the_one(busy_pods(cluster, tenant_ns), "busy pod")
        await poll(
            "a spare pod Ready for the next call", lambda: len(ready_pod_names(cluster, tenant_ns)) >= 2
        )
        await second.start()
        await second.leave()  # the second caller hangs up: one session is left, on `busy`
        peak = len(worker_pods(cluster, tenant_ns))
        assert peak >= 3, f"two sessions and a spare slot ask for three pods, got {peak}"
        # Its session ends on its pod a moment after the caller leaves (the job shuts down); the pool may
        # shrink before that (the autoscaler's slot for the rise expires), so wait for the end itself.
        await poll("the second call's session to end", lambda: busy_pods(cluster, tenant_ns) == [busy])

        def scaled_in() -> bool:
            return len(worker_pods(cluster, tenant_ns)) < peak

        await poll("the pool to shrink after the second call", scaled_in)
        busy_pod = pod_phase(cluster, tenant_ns, busy)
        assert busy_pod is not None and not busy_pod["metadata"].get("deletionTimestamp"), busy_pod
        assert busy_pods(cluster, tenant_ns) == [busy]
        await first.tell_name()
        await first.finish()
    finally:
        await first.leave()
        await second.leave()
    assert busy in [p["metadata"]["name"] for p in worker_pods(cluster, tenant_ns)]


async def test_rollout_during_a_call_finishes_it_on_the_old_pod_and_takes_the_next_on_a_new_one(
    cluster: Cluster,
    platform: RealNode,
    tenant_ns: str,
    node_livekit_server: LiveKitServer,
    node_model_server: ThreadedServer,
) -> None:
    # One revision in the history: the old config may go as soon as no pod mounts it (a longer history
    # keeps it for spec.rollout.pinnedRevision).
    spec = {**tenant_spec(platform, node_livekit_server, node_model_server), "revisionHistoryLimit": 1}
    deploy_tenant(cluster, tenant_ns, spec)
    old_pod = the_one(worker_pods(cluster, tenant_ns), "worker pod")
    old = old_pod["metadata"]["name"]
    # Requests set, never BestEffort (the first evicted, with no grace period); a job memory limit passed.
    assert old_pod["status"]["qosClass"] == "Burstable"
    env = {e["name"]: e.get("value") for e in old_pod["spec"]["containers"][0]["env"]}
    assert int(env[contract.JOB_MEMORY_LIMIT_ENV]) > 0
    old_config = mounted_config(old_pod)
    call = Call(node_livekit_server, node_model_server, spec["agentName"])
    try:
        await call.start()
        assert busy_pods(cluster, tenant_ns) == [old]
        patch_spec(cluster, tenant_ns, {"persona": "Your name is Echo. You tell short stories."})

        def new_pod_ready() -> str | None:
            return next((p for p in ready_pod_names(cluster, tenant_ns) if p != old), None)

        def old_pod_stopping() -> bool:
            pod = pod_phase(cluster, tenant_ns, old)
            return pod is not None and bool(pod["metadata"].get("deletionTimestamp"))

        new = await poll("the new revision's pod to be Ready", new_pod_ready)
        await poll(f"the old pod {old} to be told to stop", old_pod_stopping)
        # Each revision reads its own immutable config: the draining pod's is still there, unchanged.
        new_pod = next(p for p in worker_pods(cluster, tenant_ns) if p["metadata"]["name"] == new)
        assert mounted_config(new_pod) != old_config
        assert "short stories" not in config_of(cluster, tenant_ns, old_config)["persona"]
        await call.tell_name()
        await call.finish()
    finally:
        await call.leave()
    await poll(f"the old pod {old} to exit after its call", lambda: not pod_phase(cluster, tenant_ns, old))
    await poll(
        f"{old_config} deleted once no pod mounts it",
        lambda: cluster.kubectl("-n", tenant_ns, "get", "configmap", old_config, check=False).returncode != 0,
    )

    second = Call(node_livekit_server, node_model_server, spec["agentName"])
    try:
        await second.start()
        assert busy_pods(cluster, tenant_ns) == [new]
    finally:
        await second.leave()


def mounted_config(pod: dict[str, Any]) -> str:
    """The ConfigMap (config revision) a worker pod mounts."""
    (volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    return str(volume["configMap"]["name"])


def config_of(cluster: Cluster, ns: str, config_map: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(
        cluster.kubectl_json("-n", ns, "get", "configmap", config_map)["data"]["tenant.json"]
    )
    return config

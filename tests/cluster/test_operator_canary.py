"""Canary rollouts on the local control plane, judged on figures from a real Prometheus.

Stand-in workers (tests/fakes/worker_status.py) serve each kwok pod's `/worker` and `/metrics` on the pod's
own address, with the per-revision outcome counters a real worker exports (labelled by the revision the
operator put in the pod's labels); Debian's Prometheus scrapes them (file_sd, with the namespace and pod
target labels the chart's PodMonitor gives), and the operator, a local process with the chart's RBAC,
reads the canary's and the stable revision's figures from it. A canary whose intro never hands off is
rolled back; a healthy one is promoted; a pin rolls back by hand.
"""

# ruff: noqa: F811  (pytest fixtures imported from the modules that define them, used by name)

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyteller_api import contract, metric_names
from storyteller_devkit.cluster import Cluster
from storyteller_devkit.prometheus import Prometheus
from storyteller_operator import render
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    deploy_ready_tenant,
    get_sd,
    operator,
    patch_spec,
    wait_for,
    worker_pods,
)
from tests.cluster.test_operator_prometheus_sessions import (  # noqa: F401  (fixtures used by name)
    METRICS_PORT,
    prometheus,
    targets_file,
    write_targets,
)
from tests.fakes.worker_status import FakePool, Outcomes

POOL = {"minReplicas": 2, "maxReplicas": 4, "spareSessions": 1, "drainTimeoutSeconds": 1}
MIN_SESSIONS = 5
ROLLOUT = {"strategy": "Canary", "canaryWeight": 20, "analysis": {"minSessions": MIN_SESSIONS}}
# The analysis reads figures every 15 s (observe.ANALYSIS_INTERVAL_S); a scrape every second.
VERDICT_DEADLINE = 90.0


@pytest.fixture
def operator_env(prometheus: Prometheus) -> dict[str, str]:
    return {"STORYTELLER_OPERATOR_PROMETHEUS_URL": prometheus.url}


class Workers:
    """Every worker pod of the tenant played by a stand-in that reports its revision's outcomes."""

    def __init__(self, cluster: Cluster, namespace: str, targets: Path, prom: Prometheus) -> None:
        self.cluster, self.namespace, self.targets, self.prometheus = cluster, namespace, targets, prom
        self.pool = FakePool(metrics_port=METRICS_PORT)

    def sync(self) -> dict[str, Outcomes]:
        """Stand-ins for the running pods (each reporting its revision's counters at zero until told
        otherwise), scraped by Prometheus; pod name → its outcomes."""
        pods = [p for p in worker_pods(self.cluster, self.namespace) if (p.get("status") or {}).get("podIP")]
        self.pool.sync(pods)
        for pod in pods:
            worker = self.pool.workers[pod["metadata"]["name"]]
            if worker.outcomes is None:
                worker.outcomes = Outcomes(pod["metadata"]["labels"][contract.REVISION_LABEL])
        write_targets(self.targets, (get_sd(self.cluster, self.namespace), pods))
        names = sorted(p["metadata"]["name"] for p in pods)
        # Scraped at zero first: increase() over the canary's window then counts every session.
        selector = f'storyteller_sessions_started_total{{namespace="{self.namespace}"}}'
        self.prometheus.wait_for(
            selector, lambda r: sorted(s["metric"]["pod"] for s in r) == names, timeout=60
        )
        return {n: w.outcomes for n, w in self.pool.workers.items() if n in names and w.outcomes}

    def close(self) -> None:
        self.pool.close()


@pytest.fixture
def workers(
    cluster: Cluster,
    namespace: str,
    targets_file: Path,
    prometheus: Prometheus,
) -> Iterator[Workers]:
    w = Workers(cluster, namespace, targets_file, prometheus)
    yield w
    w.close()


def start_canary(cluster: Cluster, namespace: str, workers: Workers) -> dict[str, Outcomes]:
    """Revision 1 serving on two pods, then a change: revision 2 as a canary beside it."""
    deploy_ready_tenant(cluster, namespace, pool=POOL, rollout=ROLLOUT)
    assert get_sd(cluster, namespace)["status"]["revision"] == 1
    patch_spec(cluster, namespace, {"intro": {"instructions": "Ask for the name. Then ask again, forever."}})
    wait_for(
        "the canary's pod",
        lambda: any(
            (p["metadata"]["labels"].get(contract.TRACK_LABEL) == contract.CANARY_TRACK)
            and (p.get("status") or {}).get("podIP")
            for p in worker_pods(cluster, namespace)
        ),
        deadline=60,
    )
    status = get_sd(cluster, namespace)["status"]
    assert (status["revision"], status["canary"]["revision"]) == (1, 2)
    assert status["canary"]["weight"] == 20
    # `kubectl get sd -o wide` shows both (columns are aligned under their headers).
    header, row = cluster.kubectl("-n", namespace, "get", "sd", "acme", "-o", "wide").stdout.splitlines()[:2]
    shown = {column: row[header.index(column) :].split()[0] for column in ("REVISION", "CANARY")}
    assert shown == {"REVISION": "1", "CANARY": "2"}, (header, row)
    return workers.sync()


def events_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=acme"
    )["items"]
    return items


def canary_deployment_gone(cluster: Cluster, namespace: str) -> bool:
    found = cluster.kubectl(
        "-n", namespace, "get", "deployment", render.canary_name("acme"), "--ignore-not-found", "-o", "name"
    ).stdout.strip()
    return not found


def template_revision(cluster: Cluster, namespace: str) -> str:
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", render.worker_name("acme"))
    return str(dep["spec"]["template"]["metadata"]["labels"][contract.REVISION_LABEL])


def test_a_canary_whose_intro_never_hands_off_is_rolled_back_after_the_minimum_sessions(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    workers: Workers,
) -> None:
    outcomes = start_canary(cluster, namespace, workers)
    # Calls arrive: the stable pods' callers reach the story, the canary's never do.
    for o in outcomes.values():
        if o.revision == "1":
            o.sessions, o.handoffs = 12, 12
        else:
            o.sessions = MIN_SESSIONS + 1
    first_session = time.monotonic()
    status = wait_for(
        "the canary to be rolled back",
        lambda: (
            "canary" not in (s := get_sd(cluster, namespace)["status"])
            and s["revisions"][0].get("state")
            and s
        ),
        deadline=VERDICT_DEADLINE,
    )
    print(f"a bad revision's first sessions → its rollback: {time.monotonic() - first_session:.1f} s")
    failed = status["revisions"][0]
    assert (failed["revision"], failed["state"]) == (2, "Failed")
    assert "handoff rate 0.00 vs stable 1.00" in failed["failure"], failed
    assert failed["figures"]["sessions"] >= MIN_SESSIONS and failed["figures"]["handoffRate"] == 0.0
    assert status["revision"] == 1 and template_revision(cluster, namespace) == "1"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "CanaryFailed")
    # What the StorytellerCanaryRolledBack alert reads.
    assert operator.metric(metric_names.CANARY_FAILED, namespace=namespace, tenant="acme") == 1
    wait_for("the canary Deployment to go", lambda: canary_deployment_gone(cluster, namespace), deadline=30)
    warning = [e for e in events_of(cluster, namespace) if e["reason"] == "CanaryRolledBack"]
    assert warning and warning[0]["type"] == "Warning" and "handoff rate" in warning[0]["message"]


def test_a_healthy_canary_is_promoted_and_a_pin_rolls_back_by_hand(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    workers: Workers,
) -> None:
    outcomes = start_canary(cluster, namespace, workers)
    for o in outcomes.values():
        o.sessions, o.handoffs = (12, 11) if o.revision == "1" else (MIN_SESSIONS + 1, MIN_SESSIONS + 1)
    status = wait_for(
        "the canary to be promoted",
        lambda: (s := get_sd(cluster, namespace)["status"])["revision"] == 2 and "canary" not in s and s,
        deadline=VERDICT_DEADLINE,
    )
    assert "state" not in status["revisions"][0]
    assert status["revisions"][0]["figures"]["handoffRate"] == 1.0
    assert template_revision(cluster, namespace) == "2"
    wait_for("the canary Deployment to go", lambda: canary_deployment_gone(cluster, namespace), deadline=30)
    promoted = [e for e in events_of(cluster, namespace) if e["reason"] == "CanaryPromoted"]
    assert promoted and "AnalysisPassed" in promoted[0]["message"]
    assert f'{metric_names.CANARY_FAILED}{{namespace="{namespace}",tenant="acme"}} 0.0' in operator.metrics()

    # A manual rollback, as a GitOps repository would write it: revision 1's config and image come back.
    first_config = next(e["configHash"] for e in status["revisions"] if e["revision"] == 1)
    patch_spec(cluster, namespace, {"rollout": {**ROLLOUT, "pinnedRevision": 1}})
    wait_for("the pin", lambda: get_sd(cluster, namespace)["status"]["revision"] == 1, deadline=30)
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", render.worker_name("acme"))
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"][contract.REVISION_LABEL] == "1"
    assert template["spec"]["volumes"][0]["configMap"]["name"] == render.config_map_name("acme", first_config)
    assert canary_deployment_gone(cluster, namespace)  # no canary while pinned

"""`--sessions-source prometheus`: the builtin autoscaler reads sessions from a real Prometheus.

Prometheus scrapes each worker pod's `:9100/metrics` (served by the test on the kwok pod's own address)
with the `namespace` and `pod` target labels the chart's PodMonitor gives. Debian's Prometheus is built
without Kubernetes service discovery, so the test lists the pods into a file_sd file (what the
Prometheus Operator's discovery does); the scrape and the queries are Prometheus's own. The operator (a
local process with the chart's RBAC) queries it and must scale the pool up when the sessions rise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.prometheus import Prometheus
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    deploy_ready_tenant,
    get_sd,
    operator,
    wait_for,
    worker_pods,
    worker_replicas,
)
from tests.fakes.worker_status import FakePool

METRICS_PORT = 9100  # observability.metricsPort's default
POOL = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "sessionsPerWorker": 2,
    "spareSessions": 1,
    "scaleDownDelaySeconds": 600,
    "drainTimeoutSeconds": 1,
}


def write_targets(path: Path, pods: list[dict[str, Any]]) -> None:
    """The worker pods as file_sd targets (Prometheus re-reads the file when it changes)."""
    groups = [
        {
            "targets": [f"{p['status']['podIP']}:{METRICS_PORT}"],
            "labels": {"namespace": p["metadata"]["namespace"], "pod": p["metadata"]["name"]},
        }
        for p in pods
        if (p.get("status") or {}).get("podIP")
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)  # atomic: Prometheus never reads half a file


@pytest.fixture
def targets_file(tmp_path: Path) -> Path:
    path = tmp_path / "workers.json"
    path.write_text("[]")
    return path


@pytest.fixture
def prometheus(targets_file: Path, prometheus_factory: Callable[..., Prometheus]) -> Prometheus:
    job = {"job_name": "storyteller-workers", "honor_labels": True,
           "file_sd_configs": [{"files": [str(targets_file)]}]}  # fmt: skip
    return prometheus_factory({}, scrape_configs=(job,))


@pytest.fixture
def operator_env(prometheus: Prometheus) -> dict[str, str]:
    return {
        "STORYTELLER_OPERATOR_SESSIONS_SOURCE": "prometheus",
        "STORYTELLER_OPERATOR_PROMETHEUS_URL": prometheus.url,
    }


@pytest.fixture
def fake_pool(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
    targets_file: Path,
) -> Iterator[FakePool]:
    deploy_ready_tenant(cluster, namespace, pool=POOL)
    # Metrics only: no :8081/worker, so nothing but Prometheus can tell the operator about sessions.
    pool = FakePool(metrics_port=METRICS_PORT, serve_status=False)
    pods = worker_pods(cluster, namespace)
    pool.sync(pods)
    write_targets(targets_file, pods)
    yield pool
    pool.close()


def test_sessions_read_from_prometheus_scale_the_pool_up(
    cluster: Cluster,
    namespace: str,
    prometheus: Prometheus,
    operator: OperatorProcess,  # noqa: F811
    fake_pool: FakePool,
) -> None:
    (first,) = fake_pool.workers
    series = f'storyteller_sessions_active{{namespace="{namespace}", pod="{first}"}}'
    prometheus.wait_for(series, lambda r: bool(r), timeout=60)  # scraped on the pod's address
    fake_pool.set(first, 3)
    # 3 sessions + 1 spare need 2 pods of 2 (3 with the lead term's slot for the rise): the pool grows.
    wait_for("the scale-up", lambda: worker_replicas(cluster, namespace) >= 2, deadline=60)
    status = wait_for(
        "activeSessions 3 from Prometheus",
        lambda: (s := get_sd(cluster, namespace)["status"]).get("activeSessions") == 3 and s,
        deadline=30,
    )
    assert status["desiredReplicas"] >= 2

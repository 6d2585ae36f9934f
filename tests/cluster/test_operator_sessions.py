"""The operator reads each worker pod's sessions from the pod itself, and its dashboards show them.

kwok gives pods loopback addresses (tests/cluster/lib.sh POD_CIDR), so this test stands in for each
worker by serving `GET /worker` on that pod's own IP and port 8081, exactly where the operator asks
(the chart's RBAC, the production URL). Debian's Prometheus then scrapes the operator, and every
dashboard query that needs the operator's series must return data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.prometheus import Prometheus
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (fixtures used by name)
    OperatorProcess,
    chart,
    deploy_ready_tenant,
    operator,
    wait_for,
)
from tests.fakes.worker_status import FakeWorkerStatus
from tests.panel_queries import DASHBOARDS, assert_has_data, panel_queries, substitute


@pytest.fixture
def fake_workers() -> Iterator[Callable[[str, int], FakeWorkerStatus]]:
    started: list[FakeWorkerStatus] = []

    def start(ip: str, active_jobs: int) -> FakeWorkerStatus:
        started.append(FakeWorkerStatus(ip, active_jobs))
        return started[-1]

    yield start
    for worker in started:
        worker.close()


def test_active_sessions_come_from_the_pods_and_reach_status_metrics_and_dashboards(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,  # noqa: F811
    fake_workers: Callable[[str, int], FakeWorkerStatus],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    prometheus = prometheus_factory(
        {
            "storyteller-operator": [
                (f"127.0.0.1:{operator.metrics_port}", {"namespace": "storyteller-system"})
            ]
        },
        rule_files=(DASHBOARDS / "rules.yaml",),
    )
    deploy_ready_tenant(cluster, namespace, pool={"minReplicas": 2, "sessionsPerWorker": 4})
    pods = cluster.kubectl_json(
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/instance=acme,app.kubernetes.io/name=storyteller-worker",
    )["items"]
    ips = [p["status"]["podIP"] for p in pods]
    assert len(ips) == 2 and all(ip.startswith("127.") for ip in ips), ips
    workers = [fake_workers(ips[0], 3), fake_workers(ips[1], 1)]

    def status() -> dict[str, Any]:
        return cluster.kubectl_json("-n", namespace, "get", "sd", "acme")["status"]  # type: ignore[no-any-return]

    wait_for("activeSessions 4 in status", lambda: status().get("activeSessions") == 4, deadline=60)
    assert status()["capacity"] == 8
    assert operator.metric("storyteller_pool_active_sessions", tenant="acme", namespace=namespace) == 4

    workers[1].active_jobs = 0  # a call ended on the second pod
    wait_for("activeSessions 3", lambda: status().get("activeSessions") == 3, deadline=60)

    # Every operator panel query has data; the tenant variable is this test's namespace and tenant.
    prometheus.wait_for(
        f'storyteller_pool_active_sessions{{namespace="{namespace}"}}',
        lambda r: bool(r) and float(r[0]["value"][1]) == 3,
    )
    prometheus.wait_for(
        "sum(storyteller_operator_reconcile_total)", lambda r: bool(r) and float(r[0]["value"][1]) > 0
    )
    queries = list(panel_queries("operator"))
    assert queries
    for query_id, expr in queries:
        # rate() needs two scrapes in the window: wait for data rather than sample once.
        prometheus.wait_for(
            substitute(expr, namespace, "acme"), lambda r: bool(r) and any(v["value"][1] != "NaN" for v in r)
        )
        assert_has_data(prometheus.query(substitute(expr, namespace, "acme")), f"{query_id}: {expr}")

"""`--sessions-source prometheus`: the builtin autoscaler reads sessions from a real Prometheus.

Prometheus scrapes each worker pod's `:9100/metrics` (served by the test on the kwok pod's own address)
as the PodMonitor the operator renders says: its target labels, its relabelings (`tenant` and `revision`
from the pod's labels) and its metric relabelings. Debian's Prometheus is built without Kubernetes
service discovery, so the test lists the pods into a file_sd file with the discovery's labels
(storyteller_devkit.pod_discovery, what the Prometheus Operator's discovery does); the scrape and the
queries are Prometheus's own. The operator (a local process with the chart's RBAC) queries it and must
scale the pool up when the sessions rise, and must not believe a pod that exports another tenant's series.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.pod_discovery import pod_targets, scrape_config
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.real_platform import tenant_yaml
from storyteller_operator import render, revision_figures
from storyteller_operator.tenant import Tenant
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


def write_targets(path: Path, *tenants: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    """Each tenant's worker pods as its PodMonitor's file_sd targets (Prometheus re-reads the file when it
    changes). `tenants`: (tenant object, its pods)."""
    groups = [g for sd, pods in tenants for g in pod_targets(render.pod_monitor(sd), pods)]
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
    # The relabelings are the same for every tenant's PodMonitor: one job reads every tenant's targets.
    job = scrape_config(render.pod_monitor(yaml.safe_load(tenant_yaml("any"))), targets_file)
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
    sd = deploy_ready_tenant(cluster, namespace, pool=POOL)
    # Metrics only: no :8081/worker, so nothing but Prometheus can tell the operator about sessions.
    pool = FakePool(metrics_port=METRICS_PORT, serve_status=False)
    pods = worker_pods(cluster, namespace)
    pool.sync(pods)
    write_targets(targets_file, (sd, pods))
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


def test_a_pod_that_exports_another_tenants_series_only_writes_its_own(
    cluster: Cluster,
    namespace: str,
    prometheus: Prometheus,
    operator: OperatorProcess,  # noqa: F811
    fake_pool: FakePool,
    targets_file: Path,
) -> None:
    """Tenant mallory's pod exports acme's sessions, handoffs and sessions-started counters under acme's
    namespace, tenant and pod names. acme's pool size, KEDA query and canary figures must not move."""
    victim = get_sd(cluster, namespace)
    (victim_pod,) = fake_pool.workers
    other_ns = f"{namespace}-m"[:63]
    cluster.kubectl("create", "namespace", other_ns)
    forger = FakePool(metrics_port=METRICS_PORT, serve_status=False)
    try:
        mallory = deploy_ready_tenant(cluster, other_ns, name="mallory", pool=POOL)
        pods = worker_pods(cluster, other_ns, "mallory")
        forger.sync(pods)
        (forger_pod,) = forger.workers
        forged = f'namespace="{namespace}",tenant="acme",pod="{victim_pod}",revision="1"'
        forger.workers[forger_pod].extra_metrics = (
            f'storyteller_sessions_active{{{forged},job="x"}} 40\n'
            f"storyteller_sessions_started_total{{{forged}}} 500\n"
            f'storyteller_handoffs_total{{{forged},from_agent="IntroAgent",to_agent="StoryAgent"}} 0\n'
        )
        write_targets(targets_file, (victim, list(worker_pods(cluster, namespace))), (mallory, pods))
        # The forged series arrive, as mallory's own: its namespace, tenant, pod and revision.
        mine = f'storyteller_sessions_started_total{{namespace="{other_ns}"}}'
        (series,) = prometheus.wait_for(mine, lambda r: bool(r), timeout=60)
        assert series["metric"]["tenant"] == "mallory" and series["metric"]["pod"] == forger_pod
        assert series["metric"]["revision"] == "1" and float(series["value"][1]) == 500
        assert not any(k.startswith("exported_") for k in series["metric"]), series["metric"]

        # acme's series are its pod's alone (each target is scraped at its own offset: wait for acme's).
        acme = prometheus.wait_for(
            f'storyteller_sessions_active{{namespace="{namespace}"}}', lambda r: bool(r), timeout=60
        )
        assert [(s["metric"]["pod"], s["value"][1]) for s in acme] == [(victim_pod, "0")]
        started = prometheus.query(f'storyteller_sessions_started_total{{namespace="{namespace}"}}')
        assert started == []
        # KEDA's query: acme's 0 sessions plus its 1 spare slot, not 41.
        (keda,) = prometheus.query(render.sessions_query(Tenant.from_object(victim)))
        assert float(keda["value"][1]) == POOL["spareSessions"]
        # The canary's figures for acme: none (mallory's 500 sessions stay mallory's).
        for field, query in revision_figures.queries(namespace, "acme", 300).items():
            assert prometheus.query(query) == [], field
        # The operator counts the forged gauge as mallory's sessions; acme follows only its own pod.
        wait_for(
            "mallory's own (forged) 40 sessions",
            lambda: get_sd(cluster, other_ns, "mallory")["status"].get("activeSessions") == 40,
            deadline=60,
        )
        fake_pool.set(victim_pod, 1)
        status = wait_for(
            "acme's 1 session",
            lambda: (s := get_sd(cluster, namespace)["status"]).get("activeSessions") == 1 and s,
            deadline=60,
        )
        assert status["desiredReplicas"] < POOL["maxReplicas"], status  # 41 sessions would fill it
    finally:
        forger.close()
        cluster.kubectl("delete", "namespace", other_ns, "--wait=false", check=False)

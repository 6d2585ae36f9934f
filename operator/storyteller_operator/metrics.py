"""The operator's own Prometheus metrics (names in storyteller_api.metric_names, fixed by DESIGN.md)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from storyteller_api import metric_names

RECONCILE_TOTAL = Counter(
    metric_names.RECONCILE_TOTAL,
    "Tenant reconciles by result: changed (something was written), unchanged (nothing written), error.",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    metric_names.RECONCILE_SECONDS,
    "Time to reconcile one tenant (reads, applies and the status write).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# `namespace` besides `tenant`: tenant names are only unique within a namespace.
POOL_DESIRED_REPLICAS = Gauge(
    metric_names.POOL_DESIRED_REPLICAS,
    "Worker pods the operator asks for, per tenant.",
    ["tenant", "namespace"],
)
POOL_ACTIVE_SESSIONS = Gauge(
    metric_names.POOL_ACTIVE_SESSIONS,
    "Sessions running across a tenant's pool (set once the session-aware autoscaler observes them).",
    ["tenant", "namespace"],
)
# The pool's ceiling, for the "pool at max replicas" alert (the workers do not know it: sizing is the
# operator's alone, so resizing never changes the workers' config).
POOL_MAX_REPLICAS = Gauge(
    metric_names.POOL_MAX_REPLICAS,
    "The tenant's pool.maxReplicas.",
    ["tenant", "namespace"],
)
# A gauge from the tenant's status, not a counter of rollbacks: it survives operator restarts and clears
# when the tenant's spec changes (what the StorytellerCanaryRolledBack alert waits for).
CANARY_FAILED = Gauge(
    metric_names.CANARY_FAILED,
    "1 while the tenant's newest revision stands rolled back by its canary analysis (Degraded, "
    "CanaryFailed) and an older revision serves; 0 otherwise.",
    ["tenant", "namespace"],
)

API_REQUESTS = Counter(
    metric_names.OPERATOR_API_REQUESTS,
    "Requests this operator sent the Kubernetes API server (tenants, children, pods, Secrets, Events), by "
    "verb and resource; the leader Lease's renewals are not counted.",
    ["verb", "resource"],
)

# Per replica (no label: each pod is its own scrape target). Exactly one replica should say 1.
OPERATOR_LEADER = Gauge(
    metric_names.OPERATOR_LEADER,
    "1 while this operator replica holds the leader Lease and reconciles; 0 while it waits as a follower.",
)

for _result in ("changed", "unchanged", "error"):
    RECONCILE_TOTAL.labels(result=_result)  # export zeros so rate() works from the first scrape


def forget_tenant(tenant: str, namespace: str) -> None:
    """Drop a deleted tenant's series so they do not linger at their last value."""
    for gauge in (POOL_DESIRED_REPLICAS, POOL_ACTIVE_SESSIONS, POOL_MAX_REPLICAS, CANARY_FAILED):
        with contextlib.suppress(KeyError):
            gauge.remove(tenant, namespace)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr)

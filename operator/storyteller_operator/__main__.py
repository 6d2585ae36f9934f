"""`python -m storyteller_operator`: run the operator against the current kubeconfig or in-cluster account.

Watches all namespaces unless --namespace is given. Exposes kopf's liveness endpoint (--liveness) and the
operator's Prometheus metrics (--metrics-port). Every flag has an environment variable so the chart can
set it without a command line.

Replicas elect a leader on a Lease (leadership.py): all of them watch, only the holder reconciles. A
leader that loses the Lease stays up: it starts no reconcile, its Kube client refuses every write (the
fence), and it is a candidate again; a stopped one (SIGTERM) lets its running reconciles finish and
releases the Lease, so another takes over within a second or two.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

import kopf

from storyteller_api.contract import HEALTH_PORT
from storyteller_operator import __version__, kube, leadership, logs, metrics
from storyteller_operator.backoff import Backoff
from storyteller_operator.cached import Caches
from storyteller_operator.handlers import Options, build_registry
from storyteller_operator.leadership import LeaderElection, LeaderGate, LeaseLock
from storyteller_operator.reconcile import Reconciler
from storyteller_operator.sessions import PrometheusSessionSource, SessionSource, WorkerStatusSource
from storyteller_operator.tenancy import TenancyRules

log = logging.getLogger("storyteller.operator")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"STORYTELLER_OPERATOR_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m storyteller_operator", description=__doc__)
    p.add_argument(
        "--namespace",
        action="append",
        default=[n for n in _env("NAMESPACES", "").split(",") if n],
        help="namespace to watch (repeatable; default: all namespaces) "
        "[STORYTELLER_OPERATOR_NAMESPACES, comma-separated]",
    )
    p.add_argument(
        "--liveness",
        default=_env("LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="kopf liveness endpoint URL; empty to disable [STORYTELLER_OPERATOR_LIVENESS]",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", "9090")),
        help="Prometheus /metrics port; 0 to disable [STORYTELLER_OPERATOR_METRICS_PORT]",
    )
    p.add_argument(
        "--metrics-address",
        default=_env("METRICS_ADDRESS", "0.0.0.0"),
        help="[STORYTELLER_OPERATOR_METRICS_ADDRESS]",
    )
    p.add_argument(
        "--recheck-seconds",
        type=float,
        default=float(_env("RECHECK_SECONDS", "5")),
        help="how often tenants are looked at again: sessions for the autoscaler, and the ones not Ready "
        "[STORYTELLER_OPERATOR_RECHECK_SECONDS]",
    )
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=float(_env("RESYNC_SECONDS", "300")),
        help="how often every tenant is fully re-applied [STORYTELLER_OPERATOR_RESYNC_SECONDS]",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "8")),
        help="reconcile threads [STORYTELLER_OPERATOR_WORKERS]",
    )
    p.add_argument(
        "--prometheus-url",
        default=_env("PROMETHEUS_URL", ""),
        help="the Prometheus that scrapes the workers: queried by keda tenants' ScaledObjects (none "
        "without it) and by --sessions-source prometheus [STORYTELLER_OPERATOR_PROMETHEUS_URL]",
    )
    p.add_argument(
        "--tenant-rules",
        default=_env("TENANT_RULES", "{}"),
        help="what tenants may use, as JSON (the chart's `tenants` value: secrets, maxPods, "
        "allowedTolerationKeys, allowedResources, maxResourcesPerPod, allowedPodAnnotationPrefixes); "
        "omitted keys take the safe defaults [STORYTELLER_OPERATOR_TENANT_RULES]",
    )
    p.add_argument(
        "--sessions-source",
        default=_env("SESSIONS_SOURCE", "workers"),
        choices=["workers", "prometheus"],
        help="where the builtin autoscaler reads each pod's sessions: the workers' "
        f":{HEALTH_PORT}/worker, or Prometheus (--prometheus-url) [STORYTELLER_OPERATOR_SESSIONS_SOURCE]",
    )
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=_env("LEADER_ELECTION", "true").lower() in ("1", "true", "yes"),
        help="only the replica holding the Lease reconciles; --no-leader-election for a single process "
        "whose account may not use Leases [STORYTELLER_OPERATOR_LEADER_ELECTION]",
    )
    p.add_argument(
        "--lease-name",
        default=_env("LEASE_NAME", "storyteller-leader"),
        help="the coordination.k8s.io Lease the replicas elect their leader on "
        "[STORYTELLER_OPERATOR_LEASE_NAME]",
    )
    p.add_argument(
        "--lease-namespace",
        default=_env("LEASE_NAMESPACE", ""),
        help="its namespace (default: the pod's own, else the kubeconfig context's, else default) "
        "[STORYTELLER_OPERATOR_LEASE_NAMESPACE]",
    )
    p.add_argument(
        "--identity",
        default=_env("IDENTITY", f"{socket.gethostname()}-{os.getpid()}"),
        help="this replica's name in the Lease, unique among the replicas (the chart: the pod's name) "
        "[STORYTELLER_OPERATOR_IDENTITY]",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="[STORYTELLER_OPERATOR_LOG_LEVEL]",
    )
    p.add_argument(
        "--log-format",
        default=_env("LOG_FORMAT", "json"),
        choices=["json", "text"],
        help="[STORYTELLER_OPERATOR_LOG_FORMAT]",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    api = kube.load_api_client(pool_size=args.workers * 2 + 4)
    client = kube.Kube(api)
    if urllib.parse.urlsplit(args.prometheus_url).username is not None:
        # It is copied into every keda tenant's ScaledObject, which the tenant can read.
        log.error("--prometheus-url must not carry credentials [STORYTELLER_OPERATOR_PROMETHEUS_URL]")
        return 2
    try:
        rules = TenancyRules.from_json(args.tenant_rules)
    except ValueError as err:
        log.error("--tenant-rules: %s", err)
        return 2
    # Sessions per pod: the workers' own status endpoint, or Prometheus (see sessions.py for why).
    sessions: SessionSource = WorkerStatusSource()
    if args.sessions_source == "prometheus":
        if not args.prometheus_url:
            log.error(
                "--sessions-source prometheus needs --prometheus-url [STORYTELLER_OPERATOR_PROMETHEUS_URL]"
            )
            return 2
        sessions = PrometheusSessionSource(args.prometheus_url)
    # Every replica keeps the caches warm, followers too: a new leader reconciles from memory at once.
    caches = Caches(api, args.namespace).start()
    reconciler = Reconciler(
        client,
        client.post_event,
        sessions=sessions,
        prometheus_url=args.prometheus_url or None,
        caches=caches,
        rules=rules,
    )
    # A failing tenant's first retry comes one recheck later, then the backoff doubles.
    reconciler.runner.backoff = Backoff(base=args.recheck_seconds)
    reconciler.applier.backoff = reconciler.runner.backoff  # a child that keeps failing, likewise
    election: LeaderElection | None = None
    leading: Callable[[], bool] = _always  # no election: this process leads
    lease = None
    if args.leader_election:
        lease_namespace = args.lease_namespace or leadership.operator_namespace()
        lease = f"{lease_namespace}/{args.lease_name}"
        lock = LeaseLock(leadership.lease_api_client(), lease_namespace, args.lease_name)
        election = LeaderElection(lock, args.identity, on_started=lambda _how: gate.take_over())
        leading = election.leading
        client.may_write = election.holds_lease  # the fence: no write once the Lease may be another's
    gate = LeaderGate(reconciler, leading, workers=args.workers)
    # Watch events' reconciles run on the runner's pool, and start only while this replica leads.
    reconciler.runner.workers = args.workers
    reconciler.runner.may_run = leading
    registry = build_registry(
        gate,
        Options(
            recheck_seconds=args.recheck_seconds, resync_seconds=args.resync_seconds, workers=args.workers
        ),
    )

    @kopf.on.probe(id="leader", registry=registry)
    def leader_probe(**_: Any) -> bool:
        # In /healthz next to the tenant count: which replica reconciles. Followers are live and ready too
        # (the PodDisruptionBudget and rollouts count them); they just wait.
        return gate.leading()

    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)
    log.info(
        "starting",
        extra={
            "version": __version__,
            "namespaces": args.namespace or "all",
            "metrics_port": args.metrics_port,
            "liveness": args.liveness,
            "identity": args.identity,
            "lease": lease,
        },
    )
    if election is None:
        metrics.OPERATOR_LEADER.set(1)
    else:
        election.start()
    kopf.run(
        registry=registry,
        # kopf's default identity asks the password database for the user's name, and a container's
        # uid need not have an entry there (OpenShift's arbitrary uids, distroless bases).
        identity=f"storyteller-operator@{args.identity}",  # type: ignore[arg-type]  # a NewType of str kopf does not export
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    # kopf has stopped (SIGTERM): let the reconciles it left running finish, then hand the Lease over.
    if election is not None:
        election.resign(gate.drain)
    caches.stop()
    return 0


def _always() -> bool:
    return True


if __name__ == "__main__":
    sys.exit(main())

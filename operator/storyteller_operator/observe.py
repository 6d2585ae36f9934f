"""Observe: everything one reconcile needs from the cluster, read into one snapshot (reads only).

Reads go through the operator's client, whose caches (cached.py) answer from watches: in a steady state a
reconcile makes no request to the API server. The tenant, its worker Deployment, which referenced Secrets
exist and their versions (metadata only: no key material enters the operator), its pods and the sessions
their workers report, which optional APIs the cluster serves, and, when the tenant may have to give one
up, its ScaledObject. For its rollout: the canary Deployment, the configs of the revisions that may run
besides the spec's (their immutable ConfigMaps), and, while a canary runs, each revision's figures.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes.client import ApiException

from storyteller_api import contract
from storyteller_operator import render, revisions, rollout
from storyteller_operator.agent_names import AgentNames
from storyteller_operator.canary import Figures
from storyteller_operator.discovery import ApiDiscovery
from storyteller_operator.fair_io import FairCalls
from storyteller_operator.kube import KubeClient
from storyteller_operator.revision_figures import FigureSource
from storyteller_operator.sessions import SessionSource
from storyteller_operator.tenant import InvalidSpec, Tenant

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Sessions:
    """What the session source said, for the pods it was asked about."""

    per_pod: dict[str, int]  # pod → sessions, for the pods that answered
    where: str  # where the counts come from, for messages
    settle_seconds: float  # how long a pod is Ready before its silence means something


@dataclasses.dataclass(frozen=True)
class Snapshot:
    tenant: Tenant
    status: Mapping[str, Any]  # the stored status
    deployment: Obj | None  # the worker Deployment this tenant owns (None: absent or somebody else's)
    missing_secrets: list[tuple[str, str]]  # (Secret, spec field) for each referenced one that is absent
    secret_versions: dict[str, str]  # referenced Secret → its resourceVersion, for those that exist
    # Another tenant claimed this one's agent name on its LiveKit server first (agent_names.py).
    agent_name_held: bool
    pod_monitor_served: bool  # the Prometheus Operator's PodMonitor is served (and detection is on)
    keda_served: bool | None  # KEDA's ScaledObject is served; None: not asked (not a keda tenant)
    # Whether the ScaledObject was looked up (a tenant that may have left keda), and what was found.
    scaled_object_checked: bool
    scaled_object: Obj | None
    pods: list[Obj]  # the tenant's pods (listed only with a session source)
    sessions: Sessions | None  # None: no session source
    observed_at: datetime.datetime
    canary_deployment: Obj | None = None  # the canary Deployment this tenant owns
    # Revision → its worker config, for the revisions that may run besides the spec's (stable, pinned).
    revision_configs: Mapping[int, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    figures: Mapping[int, Figures] | None = None  # per revision over figures_window_s, when read now
    figures_window_s: float = 0.0
    figures_source: bool = False  # the operator has somewhere to read figures (Prometheus)
    # Referenced Secret → its labels, for those found (None: the operator may not read it): whether the
    # tenant may use it (tenancy.py).
    secret_labels: Mapping[str, Mapping[str, str] | None] = dataclasses.field(default_factory=dict)

    @property
    def sized_by(self) -> str:
        return sized_by(self.deployment)

    @property
    def current_replicas(self) -> int | None:
        if self.deployment is None:
            return None
        return int((self.deployment.get("spec") or {}).get("replicas") or 0)


def sized_by(deployment: Mapping[str, Any] | None) -> str:
    """The autoscaler the Deployment was last sized by ("" when unknown)."""
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(contract.AUTOSCALER_ANNOTATION, ""))


_SECRET_NOT_FOUND = re.compile(r'secret "([^"]+)" not found')


def secrets_pods_cannot_find(pods: Sequence[Mapping[str, Any]]) -> set[str]:
    """Secrets the kubelet reports missing for these pods (CreateContainerConfigError)."""
    found = set()
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "CreateContainerConfigError":
                found.update(_SECRET_NOT_FOUND.findall(str(waiting.get("message", ""))))
    return found


def owned_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether `obj` exists and names the tenant with `uid` among its owners."""
    owners = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)


def _runnable_config(tenant: Tenant, cm: Mapping[str, Any], image: str) -> Mapping[str, Any] | None:
    """The worker config in a revision's ConfigMap, if the tenant can run it with `image` again (a config
    this operator's models refuse, written by an older release, cannot)."""
    try:
        config = json.loads((cm.get("data") or {})[contract.CONFIG_KEY])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    try:
        render.revision_tenant(tenant, config, image)
    except InvalidSpec:
        return None
    return config


# A tenant's last session counts stand in for an answer that did not come within its budget this long.
LAST_SESSIONS_S = 30.0
FIGURES_LIMIT = 8  # Prometheus queries in flight for figures, all tenants together
ANALYSIS_INTERVAL_S = 15.0  # a canary's figures are read at most this often (six Prometheus queries)
FIGURES_INTERVAL_S = 60.0  # the stable revision's (the sessions it served) at most this often
FIGURES_MAX_WINDOW_S = 7 * 86400.0  # ... over at most this long


class Observer:
    def __init__(
        self,
        kube: KubeClient,
        discovery: ApiDiscovery,
        *,
        sessions: SessionSource | None,
        detect_pod_monitor: bool,
        keda_configured: bool,
        agent_names: AgentNames | None = None,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        figures: FigureSource | None = None,
        analysis_interval_s: float = ANALYSIS_INTERVAL_S,
    ) -> None:
        self.kube = kube
        self.agent_names = agent_names or AgentNames()
        self.discovery = discovery
        self.sessions = sessions
        self.detect_pod_monitor = detect_pod_monitor
        self.keda_configured = keda_configured  # a Prometheus address for KEDA's trigger was given
        self.now = now
        self.figures = figures
        self.analysis_interval_s = analysis_interval_s
        self._figures_read: dict[str, float] = {}  # tenant uid → when its figures were last read (monotonic)
        # Other people's servers (pods, Prometheus), asked off the reconcile threads (fair_io.py).
        self._sessions_io: FairCalls[dict[str, int]] = FairCalls("sessions-io")
        self._figures_io: FairCalls[tuple[Mapping[int, Figures] | None, float]] = FairCalls(
            "figures-io", limit=FIGURES_LIMIT
        )
        self._last_sessions: dict[str, tuple[dict[str, int], float]] = {}  # uid → last answer, when
        # (tenant uid, ConfigMap, its resourceVersion, image) → the revision's config, None: it cannot run.
        self._configs: dict[tuple[str, str, str, str], Mapping[str, Any] | None] = {}
        self._guard = threading.Lock()

    def tenant_object(self, namespace: str, name: str) -> Obj | None:
        """The tenant (None when it is gone): the newest version the operator has seen, from its watch or
        from the kopf event that triggered this reconcile (see `Reconciler.seen`)."""
        return self.kube.get(contract.API_VERSION, contract.KIND, namespace, name)

    def observe(self, tenant: Tenant, *, check_scaled_object: Callable[[Tenant, str], bool]) -> Snapshot:
        """Read the rest of the tenant's world. `check_scaled_object(tenant, sized_by)`: whether the
        tenant's ScaledObject must be looked up (it may own one it no longer wants)."""
        ns, name = tenant.namespace, tenant.name
        deployment = self.kube.get("apps/v1", "Deployment", ns, render.worker_name(name))
        if not owned_by(deployment, tenant.uid):
            deployment = None  # absent, or left by an earlier tenant of the same name: nothing to go by
        keda = tenant.spec.pool.autoscaler == "keda"
        keda_served = self.discovery.served(render.KEDA_API) if keda and self.keda_configured else None
        checked = (
            not keda
            and check_scaled_object(tenant, sized_by(deployment))
            and self.discovery.served(render.KEDA_API)
        )
        scaled_object = self.kube.get(*render.KEDA_API, ns, render.worker_name(name)) if checked else None
        missing: list[tuple[str, str]] = []
        versions: dict[str, str] = {}
        labels: dict[str, dict[str, str] | None] = {}  # each Secret found → its labels (None: unreadable)
        # Where the operator may not read Secrets (see the chart's RBAC).
        unreadable: list[tuple[str, str]] = []
        for secret, field in render.referenced_secrets(tenant.spec):
            if secret in versions:
                continue
            try:
                meta = self.kube.metadata("v1", "Secret", ns, secret)
            except ApiException as err:
                if err.status != 403:
                    raise
                unreadable.append((secret, field))
                labels[secret] = None
                continue
            if meta is None:
                missing.append((secret, field))
            else:
                versions[secret] = str(meta.get("resourceVersion", ""))
                labels[secret] = dict(meta.get("labels") or {})
        pods: list[Obj] = []
        sessions: Sessions | None = None
        if self.sessions is not None or unreadable:
            pods = self.kube.list("v1", "Pod", ns, render.selector_string(name))
        if self.sessions is not None:
            sessions = Sessions(
                per_pod=self._sessions(tenant, self.sessions, pods),
                where=self.sessions.where,
                settle_seconds=self.sessions.settle_seconds,
            )
        if unreadable:
            # Without the right to read them, a missing Secret still shows where it hurts: the kubelet
            # cannot start the worker container and says which Secret it did not find.
            absent = secrets_pods_cannot_find(pods)
            missing += [(secret, field) for secret, field in unreadable if secret in absent]
        status = tenant.obj.get("status") or {}
        canary = self.kube.get("apps/v1", "Deployment", ns, render.canary_name(name))
        observed_at = self.now()
        figures, window = self._figures(tenant, status, observed_at)
        return Snapshot(
            tenant=tenant,
            status=status,
            deployment=deployment,
            missing_secrets=missing,
            secret_versions=versions,
            secret_labels=labels,
            agent_name_held=self.agent_names.held((ns, name)),
            pod_monitor_served=self.detect_pod_monitor and self.discovery.served(render.PODMONITOR_API),
            keda_served=keda_served,
            scaled_object_checked=checked,
            scaled_object=scaled_object,
            pods=pods,
            sessions=sessions,
            observed_at=observed_at,
            canary_deployment=canary if owned_by(canary, tenant.uid) else None,
            revision_configs=self._revision_configs(tenant, status),
            figures=figures,
            figures_window_s=window,
            figures_source=self.figures is not None,
        )

    def _sessions(self, tenant: Tenant, source: SessionSource, pods: list[Obj]) -> dict[str, int]:
        """Each pod's sessions, asked off this thread within the tenant's budget (fair_io.py). Without an
        answer in time, the tenant's last one (of at most LAST_SESSIONS_S ago), for the pods still there;
        else none, which holds the pool (the planner never shrinks it on a partial count)."""
        answered, counts = self._sessions_io.call(tenant.uid, lambda: source.active_sessions(pods))
        now = time.monotonic()
        with self._guard:
            if answered:
                self._last_sessions[tenant.uid] = (dict(counts or {}), now)
            last, at = self._last_sessions.get(tenant.uid, ({}, -LAST_SESSIONS_S))
        if now - at > LAST_SESSIONS_S:
            return {}
        names = {str(p["metadata"]["name"]) for p in pods}
        return {pod: n for pod, n in last.items() if pod in names}

    def forget(self, uid: str) -> None:
        """A tenant is gone: drop what the observer remembers of it."""
        self._sessions_io.forget(uid)
        self._figures_io.forget(uid)
        with self._guard:
            self._last_sessions.pop(uid, None)
            self._figures_read.pop(uid, None)
            for key in [k for k in self._configs if k[0] == uid]:
                del self._configs[key]

    def _revision_configs(self, tenant: Tenant, status: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
        """The configs of the revisions that may run besides the spec's (the pinned one; the stable one of a
        canary tenant), from their ConfigMaps; a missing or unreadable one leaves its revision out: it
        cannot run again. Read and checked once per version of the ConfigMap (it is immutable)."""
        wanted = {tenant.spec.rollout.pinned_revision}
        if tenant.spec.rollout.strategy == "Canary":
            wanted.add(status.get("revision"))
        out: dict[int, Mapping[str, Any]] = {}
        used: set[tuple[str, str, str, str]] = set()
        for entry in revisions.entries(status):
            number = int(entry[revisions.NUMBER])
            if number not in wanted:
                continue
            name = render.config_map_name(tenant.name, str(entry.get(revisions.CONFIG_HASH, "")))
            # Its metadata from the watch: whether it is there and the tenant's; its data is read once.
            meta = self.kube.metadata("v1", "ConfigMap", tenant.namespace, name)
            if meta is None or not owned_by({"metadata": meta}, tenant.uid):
                continue
            image = str(entry.get(revisions.IMAGE) or "")
            key = (tenant.uid, name, str(meta.get("resourceVersion", "")), image)
            used.add(key)
            with self._guard:
                known = key in self._configs
                config = self._configs.get(key)
            if not known:
                cm = self.kube.get("v1", "ConfigMap", tenant.namespace, name)
                config = _runnable_config(tenant, cm, image) if cm is not None else None
                with self._guard:
                    self._configs[key] = config
            if config is not None:
                out[number] = config
        with self._guard:  # only what this tenant still runs or may go back to
            for key in [k for k in self._configs if k[0] == tenant.uid and k not in used]:
                del self._configs[key]
        return out

    def _figures(
        self, tenant: Tenant, status: Mapping[str, Any], now: datetime.datetime
    ) -> tuple[Mapping[int, Figures] | None, float]:
        """Each revision's figures and their window: since the running canary started (its analysis, every
        ANALYSIS_INTERVAL_S), else since the stable revision was created, at most FIGURES_MAX_WINDOW_S (the
        sessions it served, every FIGURES_INTERVAL_S). None when not due or not readable."""
        if self.figures is None:
            return None, 0.0
        block = status.get("canary")
        revision = block.get("revision") if isinstance(block, Mapping) else None
        started = rollout.canary_started(status, revision) if isinstance(revision, int) else None
        interval = self.analysis_interval_s
        if started is None:
            serving = revisions.entry(revisions.entries(status), status.get("revision"))
            created = rollout.parse_time(serving.get(revisions.CREATED))
            if created is None:
                return None, 0.0
            started = max(created, now - datetime.timedelta(seconds=FIGURES_MAX_WINDOW_S))
            interval = FIGURES_INTERVAL_S
        with self._guard:
            last = self._figures_read.get(tenant.uid)
            if last is not None and time.monotonic() - last < interval:
                return None, 0.0
            self._figures_read[tenant.uid] = time.monotonic()
        window = max((now - started).total_seconds(), 1.0)
        source = self.figures

        def read() -> tuple[Mapping[int, Figures] | None, float]:
            return source.figures(tenant.namespace, tenant.name, window), window

        answered, found = self._figures_io.call(tenant.uid, read)
        if not answered or found is None:
            # Asked again once the interval has passed; a late answer is what that gets, with its window.
            return None, 0.0
        return found

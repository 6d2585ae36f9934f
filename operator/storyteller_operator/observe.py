"""Observe: everything one reconcile needs from the cluster, read into one snapshot (reads only).

Reads go through the operator's client, whose caches (cached.py) answer from watches: in a steady state a
reconcile makes no request to the API server. The tenant, its worker Deployment, which referenced Secrets
exist and their versions (metadata only: no key material enters the operator), its pods and the sessions
their workers report, which optional APIs the cluster serves, and, when the tenant may have to give one
up, its ScaledObject.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes.client import ApiException

from storyteller_api import contract
from storyteller_operator import render
from storyteller_operator.agent_names import AgentNames
from storyteller_operator.discovery import ApiDiscovery
from storyteller_operator.kube import KubeClient
from storyteller_operator.sessions import SessionSource
from storyteller_operator.tenant import Tenant

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
    # Other tenants (namespace, name) registering the same agent name on the same LiveKit server.
    agent_name_conflicts: list[tuple[str, str]]
    pod_monitor_served: bool  # the Prometheus Operator's PodMonitor is served (and detection is on)
    keda_served: bool | None  # KEDA's ScaledObject is served; None: not asked (not a keda tenant)
    # Whether the ScaledObject was looked up (a tenant that may have left keda), and what was found.
    scaled_object_checked: bool
    scaled_object: Obj | None
    pods: list[Obj]  # the tenant's pods (listed only with a session source)
    sessions: Sessions | None  # None: no session source
    observed_at: datetime.datetime

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
    ) -> None:
        self.kube = kube
        self.agent_names = agent_names or AgentNames()
        self.discovery = discovery
        self.sessions = sessions
        self.detect_pod_monitor = detect_pod_monitor
        self.keda_configured = keda_configured  # a Prometheus address for KEDA's trigger was given
        self.now = now

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
        unreadable: list[
            tuple[str, str]
        ] = []  # where the operator may not read Secrets (see the chart's RBAC)
        for secret, field in render.referenced_secrets(tenant.spec):
            if secret in versions:
                continue
            try:
                meta = self.kube.metadata("v1", "Secret", ns, secret)
            except ApiException as err:
                if err.status != 403:
                    raise
                unreadable.append((secret, field))
                continue
            if meta is None:
                missing.append((secret, field))
            else:
                versions[secret] = str(meta.get("resourceVersion", ""))
        pods: list[Obj] = []
        sessions: Sessions | None = None
        if self.sessions is not None or unreadable:
            pods = self.kube.list("v1", "Pod", ns, render.selector_string(name))
        if self.sessions is not None:
            sessions = Sessions(
                per_pod=self.sessions.active_sessions(pods),
                where=self.sessions.where,
                settle_seconds=self.sessions.settle_seconds,
            )
        if unreadable:
            # Without the right to read them, a missing Secret still shows where it hurts: the kubelet
            # cannot start the worker container and says which Secret it did not find.
            absent = secrets_pods_cannot_find(pods)
            missing += [(secret, field) for secret, field in unreadable if secret in absent]
        return Snapshot(
            tenant=tenant,
            status=tenant.obj.get("status") or {},
            deployment=deployment,
            missing_secrets=missing,
            secret_versions=versions,
            agent_name_conflicts=self.agent_names.others((ns, name)),
            pod_monitor_served=self.detect_pod_monitor and self.discovery.served(render.PODMONITOR_API),
            keda_served=keda_served,
            scaled_object_checked=checked,
            scaled_object=scaled_object,
            pods=pods,
            sessions=sessions,
            observed_at=self.now(),
        )

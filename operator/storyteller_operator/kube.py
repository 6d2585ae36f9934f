"""The operator's only door to the API server: get, server-side apply, status patch, existence checks.

Raw REST calls through the official client's ApiClient (authentication, kubeconfig/in-cluster loading,
connection pooling) with plain dicts in and out: the renderer produces dicts, and the typed models would
only add a lossy conversion. Every write is a server-side apply under one field manager, so the API
server itself computes "no change" and a reconcile of an unchanged tenant persists nothing.
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import kubernetes
from kubernetes.client import ApiClient, ApiException

from storyteller_api.contract import (
    API_VERSION,
    GROUP,
    KEDA_SCALED_OBJECT,
    KIND,
    MANAGER,
    PLURAL,
    POD_MONITOR,
)
from storyteller_operator.metrics import API_REQUESTS
from storyteller_operator.recent_events import RecentEvents, event_key

log = logging.getLogger("storyteller.operator.kube")

# (apiVersion, kind) → (URL prefix, plural). Only the kinds the operator manages: a fixed table is
# simpler than discovery and doubles as the list the ClusterRole has to grant.
KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    POD_MONITOR: (f"/apis/{POD_MONITOR[0]}", "podmonitors"),
    KEDA_SCALED_OBJECT: (f"/apis/{KEDA_SCALED_OBJECT[0]}", "scaledobjects"),
    (API_VERSION, KIND): (f"/apis/{API_VERSION}", PLURAL),
}
# Secrets are only read as metadata (existence, resourceVersion): key material never enters this process.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
REQUEST_TIMEOUT = 30.0


class KubeClient(Protocol):
    """What the reconciler needs; tests pass a fake."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]: ...

    def has_api(self, group_version: str, kind: str) -> bool: ...

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def annotate(
        self, api_version: str, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None: ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...

    def scale(self, namespace: str, name: str, replicas: int, *, resource_version: str) -> None: ...

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None: ...


def error_text(err: ApiException) -> str:
    """The API server's message (names the field), without the response headers."""
    try:
        message = json.loads(err.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{err.status} {err.reason}: {message or err.body}"


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KINDS[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def request_labels(method: str, path: str, *, watch: bool = False) -> tuple[str, str]:
    """(verb, resource) of a request, as the API server's own metrics name them: a GET of a collection is
    a LIST (or a WATCH), a subresource is `resource/sub`, a discovery request has resource "discovery"."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return method.upper(), "discovery"
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    verb = method.upper()
    if verb == "GET" and len(rest) == 1:
        verb = "WATCH" if watch else "LIST"
    return verb, resource


def load_api_client(pool_size: int = 32) -> ApiClient:
    """In-cluster credentials in a pod, else the current kubeconfig ($KUBECONFIG) on a laptop or in tests."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        log.info("using in-cluster credentials")
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
        log.info("using kubeconfig credentials")
    # Handlers run in a thread pool: one connection per concurrent reconcile avoids pool contention.
    config.connection_pool_maxsize = pool_size
    return ApiClient(config)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(
        self,
        api: ApiClient,
        field_manager: str = MANAGER,
        *,
        recent_events: RecentEvents | None = None,
        now: Callable[[], str] = utc_now,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.recent_events = RecentEvents() if recent_events is None else recent_events  # has a len()
        self._now = now  # an Event's timestamps (RFC 3339, seconds)
        # The write fence (leader election: whether this replica still holds the Lease), asked before every
        # request that writes: a reconcile still running when the Lease is lost cannot write on. None: no
        # election, every write goes.
        self.may_write = may_write

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        if method != "GET" and self.may_write is not None and not self.may_write():
            # Status 0, as the client's own refusals: callers treat it as any failed write (logged, retried).
            message = "this replica no longer holds the leader Lease: its writes are fenced"
            raise ApiException(status=0, reason="Not leading", body=json.dumps({"message": message}))
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        m, url, hdrs, data, post = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        API_REQUESTS.labels(*request_labels(method, path)).inc()
        resp = self.api.call_api(m, url, hdrs, data, post, _request_timeout=REQUEST_TIMEOUT)
        resp.read()  # type: ignore[no-untyped-call]
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        result: dict[str, Any] = json.loads(resp.data or b"{}")
        return result

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", object_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object's metadata only (None when it is absent): for Secrets, no key material is sent."""
        try:
            got = self._request("GET", object_path(api_version, kind, namespace, name), accept=METADATA_ONLY)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        meta: dict[str, Any] = got.get("metadata") or {}
        # kubectl apply's last-applied-configuration annotation holds a Secret's whole content.
        meta.pop("annotations", None)
        meta.pop("managedFields", None)
        return meta

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        # force: this operator is the only rightful owner of the fields it renders (conflicts come from
        # someone editing a child by hand, which reconciling is meant to undo).
        return self._request(
            "PATCH",
            path,
            query=[("fieldManager", self.field_manager), ("force", "true")],
            body=dict(manifest),
            content_type="application/apply-patch+yaml",
        )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        path = object_path(API_VERSION, KIND, namespace, name) + "/status"
        return self._request(
            "PATCH",
            path,
            query=[("fieldManager", self.field_manager)],
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` matching the label `selector`."""
        body = self._request(
            "GET", object_path(api_version, kind, namespace), query=[("labelSelector", selector)]
        )
        return list(body.get("items") or [])

    def annotate(
        self, api_version: str, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        """Merge `annotations` into an object's metadata (a small merge patch, not an apply: the
        annotations belong to the object's owner, e.g. the ReplicaSet's pods)."""
        try:
            self._request(
                "PATCH",
                object_path(api_version, kind, namespace, name),
                body={"metadata": {"annotations": annotations}},
                content_type="application/merge-patch+json",
            )
        except ApiException as err:
            if err.status != 404:  # gone since it was listed: nothing left to annotate
                raise

    def scale(self, namespace: str, name: str, replicas: int, *, resource_version: str) -> None:
        """Set a tenant's spec.replicas through its scale subresource (as kubectl scale and the HPA do),
        only if the tenant is still at `resource_version` (else 409 Conflict)."""
        self._request(
            "PATCH",
            object_path(API_VERSION, KIND, namespace, name) + "/scale",
            body={"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's spec.replicas through its scale subresource: its template, and so its pods,
        stay as they are."""
        self._request(
            "PATCH",
            object_path("apps/v1", "Deployment", namespace, name) + "/scale",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete one object; already gone is fine."""
        try:
            self._request("DELETE", object_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status != 404:
                raise

    def has_api(self, group_version: str, kind: str) -> bool:
        """Whether the API server serves `kind` in `group_version` (e.g. the Prometheus Operator's CRDs)."""
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            resources = self._request("GET", prefix).get("resources") or []
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return any(r.get("kind") == kind for r in resources)

    def post_event(self, obj: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """A core/v1 Event about `obj` (kubectl describe shows it). Best effort: never fails a reconcile.

        A repeat of an Event posted within `recent_events.window` (same object, type, reason, message)
        raises that Event's count and lastTimestamp instead of creating another (see recent_events.py).
        """
        meta = obj["metadata"]
        namespace, message = meta["namespace"], message[:1024]
        key = event_key(meta.get("uid") or f"{namespace}/{meta['name']}", type, reason, message)
        now = self._now()
        previous = self.recent_events.previous(key)
        try:
            if previous is not None and self._count_event(namespace, previous.name, previous.count + 1, now):
                self.recent_events.remember(key, previous.name, previous.count + 1)
                return
            created = self._request(
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                body=self._event(obj, type, reason, message, now),
            )
        except ApiException as err:
            log.warning(
                "cannot post event",
                extra={"reason": reason, "tenant": meta["name"], "error": f"{err.status} {err.reason}"},
            )
            return
        except OSError as err:
            log.warning(
                "cannot post event", extra={"reason": reason, "tenant": meta["name"], "error": str(err)}
            )
            return
        self.recent_events.remember(key, str(created["metadata"]["name"]), 1)

    def _count_event(self, namespace: str, name: str, count: int, now: str) -> bool:
        """Set an existing Event's count and lastTimestamp; False when it is gone or may not be patched
        (the caller then creates a new one, so no occurrence is lost)."""
        try:
            self._request(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/events/{name}",
                body={"count": count, "lastTimestamp": now},
                content_type="application/merge-patch+json",
            )
        except ApiException as err:
            if err.status != 404:  # 404: expired (--event-ttl) or deleted, the expected case
                # 403: a ClusterRole without `patch` on events (older than this operator).
                log.warning(
                    "cannot update event",
                    extra={"event": name, "namespace": namespace, "error": f"{err.status} {err.reason}"},
                )
            return False
        return True

    @staticmethod
    def _event(obj: Mapping[str, Any], type: str, reason: str, message: str, now: str) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", API_VERSION),
                "kind": obj.get("kind", KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": MANAGER},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": socket.gethostname()[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

"""Pure rendering: a StorytellerDeployment (as stored, defaults applied) → the manifests it owns.

Nothing here talks to the API server, so every rule about what a tenant gets is unit-tested without a
cluster. Functions take plain dicts (the object as the API returns it) and return plain dicts ready for
server-side apply: they always return the complete desired state, never a diff.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from storyteller_operator import scaling

GROUP = "storyteller.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "StorytellerDeployment"
PLURAL = "storytellerdeployments"

MANAGER = "storyteller-operator"
CONFIG_KEY = "tenant.json"
CONFIG_DIR = "/etc/storyteller"
CONFIG_HASH_ANNOTATION = "storyteller.dev/config-hash"
TENANT_LABEL = "storyteller.dev/tenant"
AUTOSCALER_ANNOTATION = "storyteller.dev/autoscaler"
HEALTH_PORT = 8081
# The worker's readiness (`GET /ready`): 200 only once registered with LiveKit and not draining.
READY_PORT = 8082
# The worker drains for up to drainTimeoutSeconds after SIGTERM; the margin covers process shutdown so
# the kubelet's SIGKILL never cuts a session that the drain was still allowed to finish.
GRACE_MARGIN_SECONDS = 30
WORKER_UID = 1000
PROMETHEUS_MULTIPROC_DIR = "/tmp/prometheus-multiproc"

# Spec fields that configure the pod rather than the agent: the worker's config model forbids them.
# spec.replicas too: a `kubectl scale` (or KEDA) must resize the pool, not roll every pod with a new config.
POD_LEVEL_FIELDS = ("worker", "suspend", "providerSecrets", "replicas")

Manifest = dict[str, Any]
MAX_HPA_WINDOW_SECONDS = 3600


# ---------------------------------------------------------------------------------------------- names


def config_map_name(tenant: str) -> str:
    return f"{tenant}-config"


def worker_name(tenant: str) -> str:
    """Deployment, ServiceAccount, PodDisruptionBudget, NetworkPolicy and PodMonitor share this name."""
    return f"{tenant}-worker"


def metrics_service_name(tenant: str) -> str:
    return f"{tenant}-metrics"


def selector_labels(tenant: str) -> dict[str, str]:
    """The worker pods' selector: immutable on a Deployment, so it never grows new keys."""
    return {"app.kubernetes.io/name": "storyteller-worker", "app.kubernetes.io/instance": tenant}


def common_labels(tenant: str) -> dict[str, str]:
    return {
        **selector_labels(tenant),
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": "storyteller",
        "app.kubernetes.io/managed-by": MANAGER,
        TENANT_LABEL: tenant,
    }


def selector_string(tenant: str) -> str:
    """The selector as the scale subresource wants it (status.selector)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(tenant).items()))


# --------------------------------------------------------------------------------------- worker config


def worker_config(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's tenant.json: the stored spec minus pod-level fields, plus tenant and namespace.

    Keys stay camelCase as in the CRD; nothing else is added because the worker refuses unknown keys.
    """
    config = {k: copy.deepcopy(v) for k, v in spec.items() if k not in POD_LEVEL_FIELDS}
    config["agentName"] = spec.get("agentName") or name
    config["tenant"] = name
    config["namespace"] = namespace
    return config


def config_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys) so the same config always has the same bytes and hash."""
    return json.dumps(config, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(config_json(config).encode()).hexdigest()[:16]


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def project(desired: Any, actual: Any) -> Any:
    """`actual` restricted to the fields `desired` sets (lists element by element).

    Comparing projections tells whether an apply changed anything the operator owns, unaffected by what
    controllers write elsewhere (status, revision annotations) or by server-side defaults.
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return actual
        return {k: project(v, actual.get(k)) for k, v in desired.items()}
    if isinstance(desired, list) and isinstance(actual, list) and len(desired) == len(actual):
        return [project(d, a) for d, a in zip(desired, actual, strict=True)]
    return actual


def owned_hash(manifest: Mapping[str, Any], actual: Mapping[str, Any] | None) -> str:
    """Digest of the fields `manifest` owns as they stand in `actual` (None: the object does not exist)."""
    if actual is None:
        return ""
    return manifest_hash(project(manifest, actual))


# ---------------------------------------------------------------------------------------------- helpers


def owner_reference(tenant: Mapping[str, Any]) -> dict[str, Any]:
    meta = tenant["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(tenant: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = tenant["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": common_labels(meta["name"]),
        "ownerReferences": [owner_reference(tenant)],
    }


def url_port(url: str) -> int:
    """The TCP port a URL connects to: explicit, else the scheme's default."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme in ("https", "wss") else 80


def model_blocks(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every model block of both phases, fallbacks included."""
    for phase in ("intro", "story"):
        for kind in ("llm", "stt", "tts"):
            block = (spec.get(phase) or {}).get(kind)
            if not block:
                continue
            yield block
            yield from block.get("fallbacks") or []


def provider_ports(spec: Mapping[str, Any]) -> list[int]:
    """Ports of the model providers: baseURL's when set, else HTTPS to the provider's public API."""
    return sorted({url_port(b["baseURL"]) if b.get("baseURL") else 443 for b in model_blocks(spec)})


def referenced_secrets(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(Secret name, the spec field naming it), in spec order; used to report a missing one precisely."""
    refs = [(spec["livekit"]["credentialsSecret"], "spec.livekit.credentialsSecret")]
    refs += [(s, f"spec.providerSecrets[{i}]") for i, s in enumerate(spec.get("providerSecrets") or [])]
    return refs


# ------------------------------------------------------------------------------------------- manifests


def config_map(tenant: Mapping[str, Any]) -> Manifest:
    meta = tenant["metadata"]
    config = worker_config(meta["name"], meta["namespace"], tenant["spec"])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(tenant, config_map_name(meta["name"])),
        "data": {CONFIG_KEY: config_json(config)},
    }


def service_account(tenant: Mapping[str, Any]) -> Manifest:
    # Workers never call the Kubernetes API: no token is mounted, so a compromised worker has none.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(tenant, worker_name(tenant["metadata"]["name"])),
        "automountServiceAccountToken": False,
    }


def _env(tenant: Mapping[str, Any]) -> list[dict[str, Any]]:
    meta, spec = tenant["metadata"], tenant["spec"]
    creds = spec["livekit"]["credentialsSecret"]

    def field_ref(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    def secret_ref(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": creds, "key": key}}

    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": field_ref("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field_ref("metadata.namespace")},
        {"name": "STORYTELLER_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        {"name": "PROMETHEUS_MULTIPROC_DIR", "value": PROMETHEUS_MULTIPROC_DIR},
        {"name": "LIVEKIT_API_KEY", "valueFrom": secret_ref("LIVEKIT_API_KEY")},
        {"name": "LIVEKIT_API_SECRET", "valueFrom": secret_ref("LIVEKIT_API_SECRET")},
    ]
    tracing = (spec.get("observability") or {}).get("tracing") or {}
    if tracing.get("otlpEndpoint"):
        ratio = tracing.get("sampleRatio", 1.0)
        env += [
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing["otlpEndpoint"]},
            {"name": "OTEL_SERVICE_NAME", "value": "storyteller-worker"},
            {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
            {"name": "OTEL_TRACES_SAMPLER_ARG", "value": str(float(ratio))},
            {
                # $(POD_NAME) is expanded by the kubelet because POD_NAME is defined earlier in the list.
                "name": "OTEL_RESOURCE_ATTRIBUTES",
                "value": f"storyteller.tenant={meta['name']},k8s.namespace.name={meta['namespace']},"
                "k8s.pod.name=$(POD_NAME)",
            },
        ]
    return env


def deployment(tenant: Mapping[str, Any], replicas: int | None = None) -> Manifest:
    meta, spec = tenant["metadata"], tenant["spec"]
    name = meta["name"]
    worker = spec.get("worker") or {}
    pool = spec.get("pool") or {}
    metrics_port = (spec.get("observability") or {}).get("metricsPort", 9100)
    drain = int(pool.get("drainTimeoutSeconds", 900))
    config = worker_config(name, meta["namespace"], spec)

    # User labels/annotations first so ours win: the selector and the hash must never be overridden.
    pod_labels = {**(worker.get("podLabels") or {}), **common_labels(name)}
    pod_annotations = {
        **(worker.get("podAnnotations") or {}),
        CONFIG_HASH_ANNOTATION: config_hash(config),
        "kubectl.kubernetes.io/default-container": "worker",
    }
    probe_get = {"httpGet": {"path": "/", "port": "http"}}
    # Ready means "can take a call" (registered with LiveKit): LiveKit drops a dispatch that finds no
    # worker, so a pod Ready before it registers loses calls during every rollout.
    ready_get = {"httpGet": {"path": "/ready", "port": "ready"}}
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker.get("image", "ghcr.io/storyteller-dev/storyteller-worker:0.1.0"),
        "imagePullPolicy": worker.get("imagePullPolicy", "IfNotPresent"),
        "command": ["python", "-m", "storyteller_worker", "start"],
        "env": _env(tenant),
        "envFrom": [{"secretRef": {"name": s}} for s in spec.get("providerSecrets") or []],
        "ports": [
            {"name": "http", "containerPort": HEALTH_PORT, "protocol": "TCP"},
            {"name": "ready", "containerPort": READY_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"},
        ],
        # Startup covers imports and prewarming; after that a lost LiveKit connection (503) first takes
        # the pod out of rotation and only restarts it when it does not come back within a minute.
        "startupProbe": {**probe_get, "periodSeconds": 2, "failureThreshold": 60, "timeoutSeconds": 2},
        "readinessProbe": {**ready_get, "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 2},
        "livenessProbe": {**probe_get, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if worker.get("resources"):
        container["resources"] = copy.deepcopy(worker["resources"])
    if not container["envFrom"]:
        del container["envFrom"]

    pod_spec: dict[str, Any] = {
        "serviceAccountName": worker_name(name),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": drain + GRACE_MARGIN_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "config",
                "configMap": {
                    "name": config_map_name(name),
                    "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
                    "defaultMode": 0o444,
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    for key in ("nodeSelector", "tolerations", "affinity"):
        if worker.get(key):
            pod_spec[key] = copy.deepcopy(worker[key])

    metadata = _metadata(tenant, worker_name(name))
    # Who sized it: the next reconcile knows a switch from builtin (see reconcile._seed_spec_replicas).
    metadata["annotations"] = {AUTOSCALER_ANNOTATION: scaling.autoscaler(spec)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": scaling.desired_replicas(spec) if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(name)},
            # Never take a serving worker away before its replacement is up: sessions are long-lived.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def metrics_service(tenant: Mapping[str, Any]) -> Manifest:
    spec = tenant["spec"]
    port = (spec.get("observability") or {}).get("metricsPort", 9100)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(tenant, metrics_service_name(tenant["metadata"]["name"])),
        "spec": {
            # Headless: Prometheus scrapes every pod; nothing load-balances over metrics.
            "clusterIP": "None",
            "selector": selector_labels(tenant["metadata"]["name"]),
            "ports": [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}],
        },
    }


def pod_monitor(tenant: Mapping[str, Any]) -> Manifest:
    name = tenant["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(tenant, worker_name(name)),
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            # honorLabels: the worker's own `tenant` label must not become `exported_tenant`.
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "honorLabels": True}],
        },
    }


def pod_disruption_budget(tenant: Mapping[str, Any]) -> Manifest:
    name = tenant["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(tenant, worker_name(name)),
        "spec": {
            # One voluntary eviction at a time: each evicted worker drains its sessions first, and a
            # one-pod pool can still be drained off a node (minAvailable would block that forever).
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def network_policy(tenant: Mapping[str, Any]) -> Manifest:
    """Egress only to DNS, the LiveKit port, the providers' ports and the OTLP port.

    NetworkPolicy selects by address, not host name, and these endpoints are host names outside the
    cluster: the policy therefore restricts ports (any address), which still blocks the cluster's other
    services and the cloud metadata endpoint on port 80 unless a URL names that port.
    """
    name, spec = tenant["metadata"]["name"], tenant["spec"]
    metrics_port = (spec.get("observability") or {}).get("metricsPort", 9100)

    def tcp(ports: list[int]) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": p} for p in ports]

    egress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": tcp([url_port(spec["livekit"]["url"])])},
        {"ports": tcp(provider_ports(spec))},
    ]
    otlp = ((spec.get("observability") or {}).get("tracing") or {}).get("otlpEndpoint")
    if otlp:
        egress.append({"ports": tcp([url_port(otlp)])})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(tenant, worker_name(name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress", "Egress"],
            # Inbound only to metrics (Prometheus), health and readiness (the kubelet's probes, /worker).
            "ingress": [{"ports": tcp([metrics_port, HEALTH_PORT, READY_PORT])}],
            "egress": egress,
        },
    }


def sessions_query(tenant: Mapping[str, Any]) -> str:
    """PromQL for the builtin policy's numerator: the tenant's active sessions plus its spare slots.

    `or vector(0)`: a pool with no pod scraped yet has no series, and no answer would stall KEDA.
    """
    meta = tenant["metadata"]
    selector = f'namespace="{meta["namespace"]}", tenant="{meta["name"]}"'
    spare = scaling.pool_limits(tenant["spec"]).spare_sessions
    return f"(sum(storyteller_sessions_active{{{selector}}}) or vector(0)) + {spare}"


def scaled_object(tenant: Mapping[str, Any], prometheus_url: str) -> Manifest:
    """A KEDA ScaledObject sizing the tenant through its scale subresource (`autoscaler: keda`).

    The HPA KEDA creates computes ceil(query / sessionsPerWorker) with an AverageValue target, which is
    the builtin formula ceil((active + spareSessions) / sessionsPerWorker) (without the builtin's lead
    term); it writes spec.replicas and the operator sizes the Deployment from that, so pod-deletion-cost
    protects busy pods here too. Tolerance 0: the HPA's default 10 % would leave a full pool of five or
    more pods (ratio (4N+2)/4N <= 1.1) unscaled. The field needs Kubernetes 1.35 (HPAConfigurableTolerance,
    beta); older clusters drop it, and need kube-controller-manager --horizontal-pod-autoscaler-tolerance=0.
    """
    meta, spec = tenant["metadata"], tenant["spec"]
    limits = scaling.pool_limits(spec)
    delay = int(limits.scale_down_delay_s)
    # The HPA refuses a stabilization window above an hour, and KEDA would then make no HPA at all.
    window = min(delay, MAX_HPA_WINDOW_SECONDS)
    max_replicas = limits.max_replicas
    metadata = _metadata(tenant, worker_name(meta["name"]))
    if spec.get("suspend"):
        # KEDA stops writing spec.replicas; suspend already holds the Deployment at zero.
        metadata["annotations"] = {"autoscaling.keda.sh/paused": "true"}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"]},
            "minReplicaCount": limits.min_replicas,
            "maxReplicaCount": max_replicas,
            "pollingInterval": 5,
            "cooldownPeriod": delay,  # KEDA's own delay before it deactivates to zero (minReplicas 0)
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Like the builtin policy: up at once to what demand asks, down only after the delay.
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "tolerance": "0",
                            "policies": [{"type": "Pods", "value": max_replicas, "periodSeconds": 15}],
                        },
                        "scaleDown": {"stabilizationWindowSeconds": window, "tolerance": "0"},
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "sessions",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": sessions_query(tenant),
                        "threshold": str(limits.sessions_per_worker),
                    },
                }
            ],
        },
    }


def children(
    tenant: Mapping[str, Any],
    *,
    pod_monitor_enabled: bool = False,
    replicas: int | None = None,
    keda_prometheus_url: str | None = None,
) -> list[Manifest]:
    """Everything a tenant owns, in apply order (what the pods mount and use exists before the pods).

    `replicas`: the autoscaler's decision; None for the static size (see scaling.static_size).
    `keda_prometheus_url`: where a ScaledObject's trigger queries; a keda tenant gets none without it.
    """
    out = [
        service_account(tenant),
        config_map(tenant),
        metrics_service(tenant),
        deployment(tenant, replicas),
        pod_disruption_budget(tenant),
        network_policy(tenant),
    ]
    if pod_monitor_enabled:
        out.append(pod_monitor(tenant))
    if scaling.autoscaler(tenant["spec"]) == "keda" and keda_prometheus_url:
        out.append(scaled_object(tenant, keda_prometheus_url))
    return out

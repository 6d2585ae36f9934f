"""Pure rendering: a StorytellerDeployment (as stored, defaults applied) → the manifests it owns.

Nothing here talks to the API server, so every rule about what a tenant gets is unit-tested without a
cluster. Builders take a `Tenant` (the object parsed once; a raw object is parsed on the way in) and read
its typed spec; they return plain dicts ready for server-side apply: always the complete desired state,
never a diff.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from storyteller_api import contract, metric_names
from storyteller_api.contract import API_VERSION, KIND
from storyteller_api.spec import OPERATOR_POOL_FIELDS, POD_LEVEL_FIELDS, TenantSpec
from storyteller_operator import scaling
from storyteller_operator.resources import container_resources, job_memory_limit_mb
from storyteller_operator.tenant import Tenant, as_tenant

# The worker drains for up to drainTimeoutSeconds after SIGTERM; the margin covers process shutdown so
# the kubelet's SIGKILL never cuts a session that the drain was still allowed to finish.
GRACE_MARGIN_SECONDS = 30
WORKER_UID = 1000
PROMETHEUS_MULTIPROC_DIR = "/tmp/prometheus-multiproc"
TenantLike = Tenant | Mapping[str, Any]

Manifest = dict[str, Any]
MAX_HPA_WINDOW_SECONDS = 3600
# Optional kinds (apiVersion, kind): rendered only where the cluster serves them.
KEDA_API = contract.KEDA_SCALED_OBJECT
PODMONITOR_API = contract.POD_MONITOR


# ---------------------------------------------------------------------------------------------- names


def config_map_name(tenant: str, config_hash: str) -> str:
    """One immutable ConfigMap per config revision: pods mount the one their revision was rendered with."""
    return f"{config_map_prefix(tenant)}{config_hash}"


def config_map_prefix(tenant: str) -> str:
    return f"{tenant}-config-"


def is_config_map_of(tenant: str, name: str) -> bool:
    """Whether `name` is one of the tenant's config revisions (or the single ConfigMap of operators that
    updated it in place, before revisions)."""
    return name.startswith(config_map_prefix(tenant)) or name == f"{tenant}-config"


def worker_name(tenant: str) -> str:
    """Deployment, ServiceAccount, PodDisruptionBudget, NetworkPolicy and PodMonitor share this name."""
    return f"{tenant}-worker"


def canary_name(tenant: str) -> str:
    """The canary Deployment: a new revision beside the stable one (see rollout.py)."""
    return f"{worker_name(tenant)}-canary"


def metrics_service_name(tenant: str) -> str:
    return f"{tenant}-metrics"


def selector_labels(tenant: str) -> dict[str, str]:
    """The worker pods' selector: immutable on a Deployment, so it never grows new keys."""
    return {contract.LABEL_NAME: contract.WORKER_APP_NAME, contract.LABEL_INSTANCE: tenant}


def common_labels(tenant: str) -> dict[str, str]:
    return {
        **selector_labels(tenant),
        contract.LABEL_COMPONENT: "worker",
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_MANAGED_BY: contract.MANAGER,
        contract.TENANT_LABEL: tenant,
    }


def canary_selector_labels(tenant: str) -> dict[str, str]:
    """The canary Deployment's selector: the worker pods' plus the track, so its ReplicaSets never count the
    stable pods (the stable selector, immutable, stays as it was and also matches the canary's pods: the
    Service, the PodDisruptionBudget and the operator's session counts cover both)."""
    return {**selector_labels(tenant), contract.TRACK_LABEL: contract.CANARY_TRACK}


def selector_string(tenant: str) -> str:
    """The selector as the scale subresource wants it (status.selector)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(tenant).items()))


# --------------------------------------------------------------------------------------- worker config


def worker_config(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's tenant.json: the stored spec minus pod-level fields and the pool's sizing, plus
    tenant and namespace.

    Keys stay camelCase as in the CRD; nothing else is added because the worker refuses unknown keys.
    """
    config = {k: copy.deepcopy(v) for k, v in spec.items() if k not in POD_LEVEL_FIELDS}
    if isinstance(config.get("pool"), dict):
        config["pool"] = {k: v for k, v in config["pool"].items() if k not in OPERATOR_POOL_FIELDS}
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


def owner_reference(t: Tenant) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": t.name,
        "uid": t.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(t: Tenant, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": t.namespace,
        "labels": common_labels(t.name),
        "ownerReferences": [owner_reference(t)],
    }


def url_port(url: str) -> int:
    """The TCP port a URL connects to: explicit, else the scheme's default."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme in ("https", "wss") else 80


def provider_ports(spec: TenantSpec) -> list[int]:
    """Ports of the model providers: baseURL's when set, else HTTPS to the provider's public API."""
    return sorted({url_port(b.base_url) if b.base_url else 443 for _, b in spec.model_blocks()})


def referenced_secrets(spec: TenantSpec) -> list[tuple[str, str]]:
    """(Secret name, the spec field naming it), in spec order; used to report a missing one precisely."""
    refs = [(spec.livekit.credentials_secret, "spec.livekit.credentialsSecret")]
    refs += [(s, f"spec.providerSecrets[{i}]") for i, s in enumerate(spec.provider_secrets)]
    return refs


# ------------------------------------------------------------------------------------------- manifests


def tenant_config(t: Tenant) -> dict[str, Any]:
    return worker_config(t.name, t.namespace, t.stored_spec)


def revision_tenant(t: Tenant, config: Mapping[str, Any], image: str) -> Tenant:
    """The tenant as it was when it rendered `config` with `image` (an earlier revision, to keep running
    or to go back to): the config's agent-facing fields over the current pod-level ones, so
    tenant_config() gives `config` back and the pods mount its ConfigMap."""
    stored = {k: copy.deepcopy(v) for k, v in t.stored_spec.items() if k in POD_LEVEL_FIELDS}
    agent = {k: copy.deepcopy(v) for k, v in config.items() if k not in ("tenant", "namespace")}
    # The pool's sizing is the operator's (the current spec's), its worker part the config's.
    sizing = {k: v for k, v in (t.stored_spec.get("pool") or {}).items() if k in OPERATOR_POOL_FIELDS}
    pool = {**copy.deepcopy(sizing), **(agent.pop("pool", None) or {})}
    worker = {**(stored.get("worker") or {}), "image": image}
    return Tenant.from_object({**t.obj, "spec": {**stored, **agent, "pool": pool, "worker": worker}})


def config_map(tenant: TenantLike) -> Manifest:
    """The config of the tenant's current revision. Immutable: a pod of an older revision keeps reading the
    config it started with (its job processes re-read the file) until it is gone; see apply.py for when
    old revisions are deleted."""
    t = as_tenant(tenant)
    config = tenant_config(t)
    metadata = _metadata(t, config_map_name(t.name, config_hash(config)))
    metadata["labels"][contract.LABEL_COMPONENT] = "config"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": {contract.CONFIG_KEY: config_json(config)},
    }


def secrets_hash(secret_versions: Mapping[str, str]) -> str:
    """The referenced Secrets' resourceVersions, hashed: a rotated key changes it, which rolls the pool
    (env from a Secret is read only when a container starts)."""
    pairs = sorted(secret_versions.items())
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def service_account(tenant: TenantLike) -> Manifest:
    # Workers never call the Kubernetes API: no token is mounted, so a compromised worker has none.
    t = as_tenant(tenant)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(t, worker_name(t.name)),
        "automountServiceAccountToken": False,
    }


def literal_env(value: str) -> str:
    """`value` as the container sees it: the kubelet expands `$(NAME)` in env values (any earlier variable,
    the Secrets' keys included) and turns `$$` into `$`, so every `$` from a spec is doubled."""
    return value.replace("$", "$$")


def _env(t: Tenant) -> list[dict[str, Any]]:
    creds = t.spec.livekit.credentials_secret

    def field_ref(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    def secret_ref(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": creds, "key": key}}

    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": field_ref("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field_ref("metadata.namespace")},
        {"name": contract.CONFIG_PATH_ENV, "value": contract.DEFAULT_CONFIG_PATH},
        {"name": "PROMETHEUS_MULTIPROC_DIR", "value": PROMETHEUS_MULTIPROC_DIR},
        *({"name": key, "valueFrom": secret_ref(key)} for key in contract.LIVEKIT_KEY_ENVS),
    ]
    tracing = t.spec.observability.tracing
    if tracing.otlp_endpoint:
        env += [
            # A spec string: `$(OPENAI_API_KEY)` in it must reach the exporter as written, not as the key.
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": literal_env(tracing.otlp_endpoint)},
            {"name": "OTEL_SERVICE_NAME", "value": "storyteller-worker"},
            {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
            {"name": "OTEL_TRACES_SAMPLER_ARG", "value": str(float(tracing.sample_ratio))},
            {
                # $(POD_NAME) is expanded by the kubelet because POD_NAME is defined earlier in the list.
                "name": "OTEL_RESOURCE_ATTRIBUTES",
                "value": f"storyteller.tenant={literal_env(t.name)},"
                f"k8s.namespace.name={literal_env(t.namespace)},k8s.pod.name=$(POD_NAME)",
            },
        ]
    return env


def deployment(
    tenant: TenantLike,
    replicas: int | None = None,
    secret_versions: Mapping[str, str] | None = None,
    revision: int | None = None,
    *,
    canary: bool = False,
) -> Manifest:
    """The worker pool. Its pod template depends only on what the pods read (the worker's config, the pod
    fields, the referenced Secrets' versions): resizing the pool never rolls it.

    `secret_versions`: Secret name → resourceVersion of the referenced Secrets that exist.
    `revision`: the number of what the pods run (see revisions.py), on the pods as a label and to the worker
    as an environment variable; it changes only with what the pods run, so it rolls nothing by itself.
    `canary`: the canary Deployment (its own name and selector, see canary_selector_labels).
    """
    t = as_tenant(tenant)
    name, spec = t.name, t.spec
    worker = spec.worker
    metrics_port = spec.observability.metrics_port
    drain = spec.pool.drain_timeout_seconds
    hashed_config = config_hash(tenant_config(t))

    # User labels/annotations first so ours win: the selector and the hash must never be overridden.
    pod_labels = {**(worker.pod_labels or {}), **common_labels(name)}
    if revision is not None:
        pod_labels[contract.REVISION_LABEL] = str(revision)
    selector = canary_selector_labels(name) if canary else selector_labels(name)
    pod_labels.update(selector)
    pod_annotations = {
        **(worker.pod_annotations or {}),
        contract.CONFIG_HASH_ANNOTATION: hashed_config,
        contract.SECRETS_HASH_ANNOTATION: secrets_hash(secret_versions or {}),
        "kubectl.kubernetes.io/default-container": "worker",
    }
    probe_get = {"httpGet": {"path": "/", "port": "http"}}
    # Ready means "can take a call" (registered with LiveKit): LiveKit drops a dispatch that finds no
    # worker, so a pod Ready before it registers loses calls during every rollout.
    ready_get = {"httpGet": {"path": contract.READY_PATH, "port": "ready"}}
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker.image,
        "imagePullPolicy": worker.image_pull_policy,
        "command": ["python", "-m", "storyteller_worker", "start"],
        "env": _env(t),
        "envFrom": [{"secretRef": {"name": s}} for s in spec.provider_secrets],
        "ports": [
            {"name": "http", "containerPort": contract.HEALTH_PORT, "protocol": "TCP"},
            {"name": "ready", "containerPort": contract.READY_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"},
        ],
        # Startup covers imports and prewarming; after that a lost LiveKit connection (503) first takes
        # the pod out of rotation and only restarts it when it does not come back within a minute.
        "startupProbe": {**probe_get, "periodSeconds": 2, "failureThreshold": 60, "timeoutSeconds": 2},
        "readinessProbe": {**ready_get, "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 2},
        "livenessProbe": {**probe_get, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
        "volumeMounts": [
            {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
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
    container["resources"] = container_resources(spec)
    memory_limit = job_memory_limit_mb(spec, container["resources"])
    if memory_limit:
        container["env"].append({"name": contract.JOB_MEMORY_LIMIT_ENV, "value": str(memory_limit)})
    if not container["envFrom"]:
        del container["envFrom"]
    if revision is not None:
        container["env"].append({"name": contract.REVISION_ENV, "value": str(revision)})

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
                    "name": config_map_name(name, hashed_config),
                    "items": [{"key": contract.CONFIG_KEY, "path": contract.CONFIG_KEY}],
                    "defaultMode": 0o444,
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    scheduling = {
        "nodeSelector": worker.node_selector,
        "tolerations": worker.tolerations,
        "affinity": worker.affinity,
    }
    pod_spec.update({key: copy.deepcopy(value) for key, value in scheduling.items() if value})

    metadata = _metadata(t, canary_name(name) if canary else worker_name(name))
    # Who sized it: the next reconcile knows a switch from builtin (see plan.seed_replicas).
    metadata["annotations"] = {contract.AUTOSCALER_ANNOTATION: spec.pool.autoscaler}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": scaling.desired_replicas(spec) if replicas is None else replicas,
            "selector": {"matchLabels": selector},
            # Never take a serving worker away before its replacement is up: sessions are long-lived.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def metrics_service(tenant: TenantLike) -> Manifest:
    t = as_tenant(tenant)
    port = t.spec.observability.metrics_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(t, metrics_service_name(t.name)),
        "spec": {
            # Headless: Prometheus scrapes every pod; nothing load-balances over metrics.
            "clusterIP": "None",
            "selector": selector_labels(t.name),
            "ports": [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}],
        },
    }


# The series labels that decide anything (KEDA's query, the canary's figures, the sessions the operator
# reads), each from the pod label the operator sets; `namespace` and `pod` are the target's own.
SCRAPED_FROM_POD_LABELS = {"tenant": contract.TENANT_LABEL, "revision": contract.REVISION_LABEL}


def pod_label_meta(label: str) -> str:
    """Prometheus' Kubernetes discovery label for the pod label `label`."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_monitor(tenant: TenantLike) -> Manifest:
    t = as_tenant(tenant)
    name = t.name
    # Never honorLabels: a pod that exports storyteller_sessions_active{namespace="b",tenant="b"} would write
    # into tenant b's series (b's pool size, b's canary verdict). The target's labels win; what a pod
    # exports under those names is dropped, so its series count only as its own.
    relabelings = [
        {"action": "replace", "sourceLabels": [pod_label_meta(label)], "targetLabel": target}
        for target, label in SCRAPED_FROM_POD_LABELS.items()
    ]
    exported = "|".join(["namespace", "pod", *SCRAPED_FROM_POD_LABELS])
    endpoint = {
        "port": "metrics",
        "path": "/metrics",
        "honorLabels": False,
        "relabelings": relabelings,
        "metricRelabelings": [{"action": "labeldrop", "regex": f"exported_({exported})"}],
    }
    return {
        "apiVersion": PODMONITOR_API[0],
        "kind": PODMONITOR_API[1],
        "metadata": _metadata(t, worker_name(name)),
        "spec": {"selector": {"matchLabels": selector_labels(name)}, "podMetricsEndpoints": [endpoint]},
    }


def pod_disruption_budget(tenant: TenantLike) -> Manifest:
    t = as_tenant(tenant)
    name = t.name
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(t, worker_name(name)),
        "spec": {
            # One voluntary eviction at a time: each evicted worker drains its sessions first, and a
            # one-pod pool can still be drained off a node (minAvailable would block that forever).
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def network_policy(tenant: TenantLike, also: Sequence[Tenant] = ()) -> Manifest:
    """Egress only to DNS, the LiveKit port, LiveKit's media ports, the providers' ports and the OTLP port.

    NetworkPolicy selects by address, not host name, and these endpoints are host names outside the
    cluster: the policy therefore restricts ports (any address), which still blocks the cluster's other
    services and the cloud metadata endpoint on port 80 unless a URL names that port. The media (WebRTC:
    ICE over UDP and TCP, TURN) goes to addresses the signalling hands out, so spec.worker.livekitMedia
    names its ports, and may limit it to CIDRs. `also`: the tenant as other revisions that run beside this
    one render it (the stable one during a canary): their LiveKit and providers' ports stay open too.
    """
    t = as_tenant(tenant)
    name, spec = t.name, t.spec
    metrics_port = spec.observability.metrics_port

    def tcp(ports: list[int]) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": p} for p in ports]

    media = spec.worker.livekit_media
    udp_range: dict[str, Any] = {"protocol": "UDP", "port": media.udp_port_range_start}
    if media.udp_port_range_end != media.udp_port_range_start:
        udp_range["endPort"] = media.udp_port_range_end
    udp_ports = [{"protocol": "UDP", "port": p} for p in media.udp_ports]
    media_rule: dict[str, Any] = {"ports": [udp_range, *udp_ports, *tcp(media.tcp_ports)]}
    if media.cidrs:
        media_rule["to"] = [{"ipBlock": {"cidr": cidr}} for cidr in media.cidrs]
    egress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": tcp(sorted({url_port(x.spec.livekit.url) for x in (t, *also)}))},
        # Without it a worker registers (signalling) but never hears the room.
        media_rule,
        {"ports": tcp(sorted({p for x in (t, *also) for p in provider_ports(x.spec)}))},
    ]
    otlp = spec.observability.tracing.otlp_endpoint
    if otlp:
        egress.append({"ports": tcp([url_port(otlp)])})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(t, worker_name(name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress", "Egress"],
            # Inbound only to metrics (Prometheus), health and readiness (the kubelet's probes, /worker).
            "ingress": [{"ports": tcp([metrics_port, *contract.RESERVED_PORTS])}],
            "egress": egress,
        },
    }


def sessions_query(t: Tenant) -> str:
    """PromQL for the builtin policy's numerator: the tenant's active sessions plus its spare slots.

    `or vector(0)`: a pool with no pod scraped yet has no series, and no answer would stall KEDA.
    """
    selector = f'namespace="{t.namespace}", tenant="{t.name}"'
    spare = t.spec.pool.spare_sessions
    return f"(sum({metric_names.SESSIONS_ACTIVE}{{{selector}}}) or vector(0)) + {spare}"


def scaled_object(tenant: TenantLike, prometheus_url: str) -> Manifest:
    """A KEDA ScaledObject sizing the tenant through its scale subresource (`autoscaler: keda`).

    The HPA KEDA creates computes ceil(query / sessionsPerWorker) with an AverageValue target, which is
    the builtin formula ceil((active + spareSessions) / sessionsPerWorker) (without the builtin's lead
    term); it writes spec.replicas and the operator sizes the Deployment from that, so pod-deletion-cost
    protects busy pods here too. Tolerance 0: the HPA's default 10 % would leave a full pool of five or
    more pods (ratio (4N+2)/4N <= 1.1) unscaled. The field needs Kubernetes 1.35 (HPAConfigurableTolerance,
    beta); older clusters drop it, and need kube-controller-manager --horizontal-pod-autoscaler-tolerance=0.
    """
    t = as_tenant(tenant)
    spec = t.spec
    limits = scaling.pool_limits(spec)
    delay = int(limits.scale_down_delay_s)
    # The HPA refuses a stabilization window above an hour, and KEDA would then make no HPA at all.
    window = min(delay, MAX_HPA_WINDOW_SECONDS)
    max_replicas = limits.max_replicas
    metadata = _metadata(t, worker_name(t.name))
    if spec.suspend:
        # KEDA stops writing spec.replicas; suspend already holds the Deployment at zero.
        metadata["annotations"] = {"autoscaling.keda.sh/paused": "true"}
    return {
        "apiVersion": KEDA_API[0],
        "kind": KEDA_API[1],
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": t.name},
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
                        "query": sessions_query(t),
                        "threshold": str(limits.sessions_per_worker),
                    },
                }
            ],
        },
    }


def children(
    tenant: TenantLike,
    *,
    pod_monitor_enabled: bool = False,
    replicas: int | None = None,
    keda_prometheus_url: str | None = None,
    secret_versions: Mapping[str, str] | None = None,
    revision: int | None = None,
    stable: Tenant | None = None,
    canary_revision: int | None = None,
    canary_replicas: int = 0,
) -> list[Manifest]:
    """Everything a tenant owns, in apply order (what the pods mount and use exists before the pods).

    `replicas`: the autoscaler's decision; None for the static size (see scaling.static_size).
    `keda_prometheus_url`: where a ScaledObject's trigger queries; a keda tenant gets none without it.
    `secret_versions`: the referenced Secrets' resourceVersions.
    `stable`, `revision`: the tenant as the revision the worker Deployment runs renders it (revision_tenant;
    None: the tenant itself) and that revision's number. `canary_revision`: the tenant's own revision run as
    a canary of `canary_replicas` pods beside it (see rollout.py); None: no canary.
    """
    t = as_tenant(tenant)
    s = stable or t
    configs = [config_map(t)]
    if tenant_config(s) != tenant_config(t):
        configs.append(config_map(s))  # immutable and already there: applied so a deleted one comes back
    out = [
        service_account(t),
        *configs,
        metrics_service(t),
        # Before the pods: none runs a moment unconfined (apply.py holds the pods back while it fails).
        network_policy(t, also=[s] if s is not t else []),
        deployment(s, replicas, secret_versions, revision),
    ]
    if canary_revision is not None:
        out.append(deployment(t, canary_replicas, secret_versions, canary_revision, canary=True))
    out.append(pod_disruption_budget(t))
    if pod_monitor_enabled:
        out.append(pod_monitor(t))
    if t.spec.pool.autoscaler == "keda" and keda_prometheus_url:
        out.append(scaled_object(t, keda_prometheus_url))
    return out

"""Names both sides of the platform agree on: the API's identity, ports, labels, annotations, env, paths.

The operator writes them into the objects it renders, the worker reads them at run time, the chart,
dashboards and tests import them. Each lives here once; nothing else spells the literal.
"""

from __future__ import annotations

from typing import Final

# ------------------------------------------------------------------------------- the API's identity
GROUP: Final = "storyteller.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "StorytellerDeployment"
LIST_KIND: Final = f"{KIND}List"
PLURAL: Final = "storytellerdeployments"
SINGULAR: Final = "storytellerdeployment"
SHORT_NAMES: Final = ("sd",)
CATEGORY: Final = "storyteller"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
PART_OF: Final = "storyteller"  # app.kubernetes.io/part-of of everything the platform installs

# Optional kinds the operator renders where the cluster serves them: (apiVersion, kind).
KEDA_SCALED_OBJECT: Final = ("keda.sh/v1alpha1", "ScaledObject")
POD_MONITOR: Final = ("monitoring.coreos.com/v1", "PodMonitor")

# The operator's field manager, event source and app.kubernetes.io/managed-by value.
MANAGER: Final = "storyteller-operator"

# -------------------------------------------------------------------------------- the worker's ports
# Health (GET /, liveness and startup) and the framework's status page (GET /worker).
HEALTH_PORT: Final = 8081
# Readiness (GET /ready): 200 only once registered with LiveKit and not draining.
READY_PORT: Final = 8082
READY_PATH: Final = "/ready"
# Prometheus /metrics; the tenant may move it (spec.observability.metricsPort), never onto the two above.
DEFAULT_METRICS_PORT: Final = 9100
RESERVED_PORTS: Final = (HEALTH_PORT, READY_PORT)

# ------------------------------------------------------------------------- labels and annotations
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
WORKER_APP_NAME: Final = "storyteller-worker"  # app.kubernetes.io/name of worker pods
TENANT_LABEL: Final = f"{GROUP}/tenant"
CONFIG_HASH_ANNOTATION: Final = f"{GROUP}/config-hash"
# On the worker pods: a hash of the referenced Secrets' resourceVersions (a rotated key rolls the pool).
SECRETS_HASH_ANNOTATION: Final = f"{GROUP}/secrets-hash"
AUTOSCALER_ANNOTATION: Final = f"{GROUP}/autoscaler"
# On the worker pods: the revision (status.revisions) they run; not in the Deployment's selector.
REVISION_LABEL: Final = f"{GROUP}/revision"
# On a canary's pods and in its Deployment's selector (storyteller_operator.render.canary_selector_labels).
TRACK_LABEL: Final = f"{GROUP}/track"
CANARY_TRACK: Final = "canary"
# Label prefixes a tenant may not set on its pods (spec.worker.podLabels): the operator owns them.
RESERVED_LABEL_PREFIXES: Final = ("app.kubernetes.io/", f"{GROUP}/")
# Kubernetes' own: the ReplicaSet removes the cheapest pods first.
POD_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
# Pod annotations a tenant may not set (spec.worker.podAnnotations). pod-deletion-cost: the operator prices
# pods with it, a template value would fight it. The operator's own prefix (config hash). kubectl's
# (`rollout restart` writes restartedAt; from the spec, the operator would own it and undo the restart).
RESERVED_ANNOTATION_KEYS: Final = (POD_DELETION_COST,)
RESERVED_ANNOTATION_PREFIXES: Final = (f"{GROUP}/", "kubectl.kubernetes.io/")

# --------------------------------------------------------------- the worker's configuration, in the pod
CONFIG_PATH_ENV: Final = "STORYTELLER_CONFIG"
CONFIG_DIR: Final = "/etc/storyteller"
CONFIG_KEY: Final = "tenant.json"
DEFAULT_CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIG_KEY}"
READY_PORT_ENV: Final = "STORYTELLER_READY_PORT"
# The revision the pod runs (the label above), for the worker's metrics.
REVISION_ENV: Final = "STORYTELLER_REVISION"
# The memory one job process (one session) may use, in MB, before the worker kills it (only that session
# ends, not the pod's others); set by the operator from the pod's memory limit, 0 or unset: no limit.
JOB_MEMORY_LIMIT_ENV: Final = "STORYTELLER_JOB_MEMORY_LIMIT_MB"

# Which environment variable carries each provider's key. The operator fills them from the Secrets named
# in spec.providerSecrets; the worker only checks they are present and never reads them itself.
PROVIDER_KEY_ENV: Final[dict[str, str]] = {
    "openai": "OPENAI_API_KEY",
    "openai-realtime": "OPENAI_API_KEY",
    "deepgram": "DEEPGRAM_API_KEY",
}
LIVEKIT_API_KEY_ENV: Final = "LIVEKIT_API_KEY"
LIVEKIT_API_SECRET_ENV: Final = "LIVEKIT_API_SECRET"
LIVEKIT_KEY_ENVS: Final = (LIVEKIT_API_KEY_ENV, LIVEKIT_API_SECRET_ENV)

"""The platform on a cluster: the chart installed, tenants applied, and their state polled.

:func:`install_chart` is ``helm install`` with the operator image built here, its pod on the real node,
in a namespace that enforces Pod Security ``restricted`` (:func:`restrict`). :func:`provider_secrets`,
:func:`tenant_spec` and :func:`deploy_tenant` make a tenant whose worker pods run the worker image on the
real node, against the LiveKit and model servers on the node's bridge address. :func:`tenant_yaml`,
:func:`get_sd`, :func:`condition` and :func:`is_ready` read and write ``StorytellerDeployment`` objects;
:func:`wait_for` polls cluster state with a deadline.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from storyteller_api import contract
from storyteller_devkit.cluster import REPO_ROOT, Cluster
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.model_server import ThreadedServer
from storyteller_devkit.process import wait_until
from storyteller_devkit.real_node import RealNode

T = TypeVar("T")

CHART = REPO_ROOT / "helm" / "storyteller"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
# kwok's fake kubelet can take tens of seconds to report a pod Running or gone on the local plane.
POLL_DEADLINE = 180.0
# Real pods start Python and prewarm job processes on 2 shared cores: minutes, not the kwok seconds.
POD_DEADLINE = 300.0
# What the API answers while an object is still being created or its status filled in: not yet.
POLL_ERRORS = (AssertionError, subprocess.CalledProcessError, KeyError, IndexError, TypeError)


def wait_for(
    what: str, check: Callable[[], T | None], deadline: float = POLL_DEADLINE, every: float = 0.5
) -> T:
    """Poll `check` until it returns something truthy (returned); past the deadline, fail naming `what`.

    Every half second by default: a check is usually a kubectl run or two (about 0.06 s of CPU each, and
    several test workers poll at once), and what it waits on takes seconds.

    The errors of :data:`POLL_ERRORS` count as "not yet"; the last one is in the failure's message.
    """
    return wait_until(what, check, deadline, every=every, retry_on=POLL_ERRORS)


def wait_established(cluster: Cluster, crd: str, deadline: float = POLL_DEADLINE) -> None:
    """Until the CRD `crd` is Established (served). Not `kubectl wait --for=condition=Established`: on a
    CRD just created, status.conditions may still be null, and kubectl wait then fails at once
    (".status.conditions accessor error: <nil>") instead of waiting."""

    def established() -> bool:
        conditions = (cluster.kubectl_json("get", "crd", crd).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    wait_for(f"CRD {crd} Established", established, deadline)


def tenant_yaml(ns: str, name: str = "acme", **spec: Any) -> str:
    """A StorytellerDeployment manifest; every top-level field of `spec` replaces its default.

    Each namespace's tenants name their own LiveKit server: a tenant of an earlier test lingers while its
    namespace is deleted (its pods go first, and take their grace period), and one of the same name on the
    same server would share its agent name (AgentNameConflict) meanwhile."""
    body: dict[str, Any] = {
        "livekit": {
            "url": f"ws://livekit.{ns}.example.test:7880",
            "credentialsSecret": "livekit-credentials",
        },
        "providerSecrets": ["acme-openai"],
        "pool": {"minReplicas": 1, "drainTimeoutSeconds": 1},
    }
    body.update(spec)
    return yaml.safe_dump(
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": name, "namespace": ns},
            "spec": body,
        }
    )


def get_sd(cluster: Cluster, ns: str, name: str = "acme") -> dict[str, Any]:
    result: dict[str, Any] = cluster.kubectl_json("-n", ns, "get", "sd", name)
    return result


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    """The status condition of type `ctype`, or {}."""
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), {})


def is_ready(cluster: Cluster, ns: str, name: str = "acme") -> dict[str, Any] | None:
    """The tenant when it is Ready for its current generation, else None."""
    sd = get_sd(cluster, ns, name)
    st = sd.get("status", {})
    ok = (
        st.get("observedGeneration") == sd["metadata"]["generation"]
        and st.get("phase") == "Ready"
        and condition(sd, "Ready").get("status") == "True"
    )
    return sd if ok else None


def _image(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def restrict(cluster: Cluster, ns: str) -> None:
    """Make namespace `ns` enforce Pod Security `restricted`."""
    cluster.kubectl("label", "namespace", ns, "--overwrite", *(f"{k}={v}" for k, v in RESTRICTED.items()))


def install_chart(
    cluster: Cluster, node: RealNode, release: str, ns: str, prometheus_url: str = "", **operator: Any
) -> None:
    """The chart with the operator image built here, its pod on the real node, in a restricted namespace;
    `prometheus_url`: the chart's prometheus.url (canary analysis reads it), reachable from the pod."""
    cluster.kubectl("create", "namespace", ns, check=False)
    restrict(cluster, ns)
    repository, tag = _image(node.operator_image)
    values = {
        "operator": {
            "image": {"registry": "", "repository": repository, "tag": tag, "pullPolicy": "Never"},
            **node.placement,
            **operator,
        },
        "prometheus": {"url": prometheus_url},
        # The tenants here tolerate the real node's taint, as a platform team allows for a node pool.
        "tenants": {"allowedTolerationKeys": [node.placement["tolerations"][0]["key"]]},
    }
    cluster.helm(
        "upgrade", "--install", release, str(CHART), "--namespace", ns,
        "--values", "-", "--wait", "--timeout", "5m", input=yaml.safe_dump(values),
    )  # fmt: skip


# A Secret tenants may name carries this label (the operator's tenancy rules); "true": any tenant of its
# namespace.
TENANT_SECRET_LABEL = f"{contract.GROUP}/tenant-secret"


def tenant_secret(ns: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    """A Secret as a namespace's owner gives it to the tenants there: labelled for them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": {TENANT_SECRET_LABEL: "true"}},
        "stringData": data,
    }


def secret_metadata_grant(ns: str, release: str, release_ns: str) -> dict[str, Any]:
    """What the chart README tells a namespace's owner to apply so the operator of `release` may read the
    namespace's Secret metadata (whether a Secret exists, its labels and version; never its data)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{release}-secrets", "namespace": ns},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"{release}-secrets",
        },
        "subjects": [{"kind": "ServiceAccount", "name": release, "namespace": release_ns}],
    }


def provider_secrets(ns: str, livekit: LiveKitServer, release: str, release_ns: str) -> str:
    """The LiveKit credentials and the provider keys (the local servers take any) a tenant names, given to
    the tenants of `ns` and readable by the operator of `release`."""
    docs = [
        tenant_secret(
            ns,
            "livekit-credentials",
            {"LIVEKIT_API_KEY": livekit.api_key, "LIVEKIT_API_SECRET": livekit.api_secret},
        ),
        tenant_secret(
            ns, "providers", {"OPENAI_API_KEY": "sk-test-local", "DEEPGRAM_API_KEY": "dg-test-local"}
        ),
        secret_metadata_grant(ns, release, release_ns),
    ]
    return yaml.safe_dump_all(docs)


def tenant_spec(
    node: RealNode, livekit: LiveKitServer, models: ThreadedServer, **pool: Any
) -> dict[str, Any]:
    """A tenant on the real node: the worker image, the servers on the bridge address, a small pool."""
    base = models.base_url
    return {
        "agentName": f"real-{uuid.uuid4().hex[:6]}",
        "livekit": {"url": livekit.url_on(node.ip), "credentialsSecret": "livekit-credentials"},
        "providerSecrets": ["providers"],
        "intro": {
            # An outage with a working fallback, so provider errors reach the dashboards too.
            "llm": {
                "provider": "openai",
                "model": "broken-primary",
                "baseURL": base,
                "fallbacks": [{"provider": "openai", "model": "gpt-4o-mini", "baseURL": base}],
            },
            "stt": {"provider": "deepgram", "model": "nova-3", "language": "en", "baseURL": base},
            "tts": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "echo", "baseURL": base},
        },
        "story": {"llm": {"provider": "openai", "model": "gpt-4o", "baseURL": base}},
        "pool": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "sessionsPerWorker": 2,
            "idleProcesses": 1,
            "spareSessions": 0,
            "scaleDownDelaySeconds": 0,
            "drainTimeoutSeconds": 120,
            **pool,
        },
        "worker": {
            "image": node.worker_image,
            "imagePullPolicy": "Never",
            **node.placement,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
            "livekitMedia": livekit.livekit_media(),  # its NetworkPolicy admits exactly this server's media
        },
    }


def deploy_tenant(cluster: Cluster, ns: str, spec: dict[str, Any], name: str = "acme") -> dict[str, Any]:
    """Apply the tenant and wait until it is Ready with every wanted pod Ready (through real probes)."""
    cluster.apply(tenant_yaml(ns, name, **spec))  # every top-level field of `spec` replaces its default

    def ready() -> dict[str, Any] | None:
        sd = is_ready(cluster, ns, name)
        want = spec["pool"]["minReplicas"]
        return sd if sd and sd["status"].get("readyReplicas") == want else None

    return wait_for(f"tenant {ns}/{name} Ready on real pods", ready, deadline=POD_DEADLINE)

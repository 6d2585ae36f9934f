"""`helm install` as a platform engineer's first step: the operator runs from its image, in its pod.

The namespace enforces Pod Security `restricted` at admission and the container really runs as what the
chart says: uid 1000, a read-only root filesystem, no capabilities. The kubelet's probes keep it Ready,
`kubectl logs` reaches it through the node's own identity, and `helm test` passes through the Service
(kube-proxy) and its DNS name (CoreDNS).
"""

from __future__ import annotations

from typing import Any

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.real_node import RealNode
from storyteller_devkit.real_platform import POD_DEADLINE, wait_for
from tests.realnode.real_platform import RELEASE, RELEASE_NS


def operator_pod(cluster: Cluster) -> dict[str, Any] | None:
    items = cluster.kubectl_json(
        "-n", RELEASE_NS, "get", "pods", "-l", "app.kubernetes.io/component=operator"
    )["items"]
    ready = [
        p
        for p in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    # The chart runs two replicas (one leads, the other waits on the Lease): once all are Ready, any of them.
    return ready[0] if ready and len(ready) == len(items) else None


def exec_in(cluster: Cluster, pod: str, *argv: str) -> tuple[int, str]:
    proc = cluster.kubectl("-n", RELEASE_NS, "exec", pod, "-c", "operator", "--", *argv, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_operator_runs_from_its_image_under_restricted_pod_security(
    cluster: Cluster, platform: RealNode
) -> None:
    pod = wait_for("the operator pod Ready", lambda: operator_pod(cluster), deadline=POD_DEADLINE)
    name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] == platform.name
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, status
    assert status["imageID"], "the image the kubelet ran is recorded"

    # What the securityContext asks, as the running process sees it.
    code, out = exec_in(cluster, name, "python3", "-c", "import os; print(os.getuid(), os.getgid())")
    assert (code, out.split()) == (0, ["1000", "1000"]), out
    code, out = exec_in(cluster, name, "python3", "-c", "open('/opt/probe', 'w')")
    assert code != 0 and "Read-only file system" in out, out
    code, out = exec_in(cluster, name, "grep", "^CapEff", "/proc/self/status")
    assert code == 0 and out.split()[1] == "0000000000000000", out

    # The API server reaches the kubelet (its own client certificate, the kubelet's webhook authz).
    logs = cluster.kubectl("-n", RELEASE_NS, "logs", name).stdout
    assert logs.strip(), "the operator logged nothing"

    # The liveness endpoint the kubelet probes answers inside the pod too.
    code, out = exec_in(
        cluster, name, "python3", "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status)",
    )  # fmt: skip
    assert code == 0 and out.strip() == "200", out


def test_helm_test_passes(cluster: Cluster, platform: RealNode) -> None:
    proc = cluster.helm("test", RELEASE, "--namespace", RELEASE_NS, "--timeout", "3m", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Phase:          Succeeded" in proc.stdout, proc.stdout

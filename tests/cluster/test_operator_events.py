"""The operator's Events on a real API server: a repeat counts up on the first Event (kubectl describe's
"x5 over ..."), a different message is a new Event, and which RBAC verbs that takes.

The Events are posted by `kube.Kube.post_event` (what the reconciler calls) as a ServiceAccount that
has only the verbs under test on events, so the test also proves the verbs the chart must grant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import yaml

from storyteller_devkit.cluster import Cluster
from storyteller_operator.kube import Kube

SA = "events-poster"


def _poster(cluster: Cluster, namespace: str, verbs: list[str], tmp_path: Path) -> Kube:
    """A Kube client authenticated as a ServiceAccount allowed only `verbs` on events in `namespace`."""
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SA, "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": verbs}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": SA, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA},
            "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
        },
    ]
    cluster.apply(yaml.safe_dump_all(rbac))
    token = cluster.kubectl("-n", namespace, "create", "token", SA, "--duration", "1h").stdout.strip()
    server = cluster.kubectl_json("config", "view", "--raw", "--minify")["clusters"][0]["cluster"]
    path = tmp_path / "poster.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return Kube(kubernetes.config.new_client_from_config(config_file=str(path)))  # type: ignore[no-untyped-call]


def _involved(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """A real object to post about (its uid is part of what makes two Events identical)."""
    cluster.kubectl("-n", namespace, "create", "configmap", "subject")
    obj: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "configmap", "subject")
    return obj


def _events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    found = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=subject"
    )
    return sorted(found["items"], key=lambda e: (e["message"], e["metadata"]["name"]))


def test_the_same_event_five_times_is_one_event_counted_five_times(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    kube = _poster(cluster, namespace, ["create", "patch"], tmp_path)
    obj = _involved(cluster, namespace)
    for _ in range(5):
        kube.post_event(obj, type="Warning", reason="SecretNotFound", message="secret lk-creds not found")
    kube.post_event(obj, type="Warning", reason="SecretNotFound", message="secret acme-openai not found")

    events = _events(cluster, namespace)
    assert [(e["message"], e["count"]) for e in events] == [
        ("secret acme-openai not found", 1),
        ("secret lk-creds not found", 5),
    ]
    counted = events[1]
    assert counted["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert counted["type"] == "Warning" and counted["reason"] == "SecretNotFound"
    assert counted["firstTimestamp"] <= counted["lastTimestamp"]


def test_with_create_alone_every_occurrence_is_a_new_event(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """What an operator gets from a ClusterRole granting only `create` on events: nothing is lost, but
    nothing is aggregated either; `patch` is the verb aggregation needs."""
    kube = _poster(cluster, namespace, ["create"], tmp_path)
    obj = _involved(cluster, namespace)
    for _ in range(3):
        kube.post_event(obj, type="Normal", reason="Applied", message="applied Deployment")
    assert [e["count"] for e in _events(cluster, namespace)] == [1, 1, 1]

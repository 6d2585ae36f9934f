"""What the stand-in for Kubernetes service discovery keeps of a pod list, as a PodMonitor's scrape job
would: selected pods with the named port, running or terminating, labelled by namespace and pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from storyteller_devkit.pod_discovery import pod_targets, scrape_config
from storyteller_devkit.real_platform import tenant_yaml
from storyteller_operator import render

PM = render.pod_monitor(yaml.safe_load(tenant_yaml("team-a")))


def pod(name: str, ip: str | None = "10.0.0.5", phase: str = "Running", **labels: str) -> dict[str, Any]:
    pm_labels = PM["spec"]["selector"]["matchLabels"]
    return {
        "metadata": {"name": name, "namespace": "team-a", "labels": {**pm_labels, **labels}},
        "spec": {"containers": [{"ports": [{"name": "health", "containerPort": 8081},
                                           {"name": "metrics", "containerPort": 9100}]}]},
        "status": {"phase": phase, **({"podIP": ip} if ip else {})},
    }  # fmt: skip


def shown(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups with the labels a scraped series keeps (the discovery's `__` labels go after relabeling)."""
    return [{**g, "labels": {k: v for k, v in g["labels"].items() if not k.startswith("__")}} for g in groups]


def test_selected_running_pods_with_the_named_port_become_targets_labelled_by_namespace_and_pod() -> None:
    assert shown(pod_targets(PM, [pod("b"), pod("a", ip="10.0.0.4")])) == [
        {"targets": ["10.0.0.4:9100"], "labels": {"namespace": "team-a", "pod": "a"}},
        {"targets": ["10.0.0.5:9100"], "labels": {"namespace": "team-a", "pod": "b"}},
    ]


def test_the_pods_labels_are_there_for_the_relabelings_as_kubernetes_discovery_names_them() -> None:
    (group,) = pod_targets(
        PM, [pod("a", **{"storyteller.dev/revision": "3", "storyteller.dev/tenant": "acme"})]
    )
    assert group["labels"]["__meta_kubernetes_pod_label_storyteller_dev_revision"] == "3"
    assert group["labels"]["__meta_kubernetes_namespace"] == "team-a"
    # Every relabeling the operator renders reads a label this stand-in provides.
    (endpoint,) = PM["spec"]["podMetricsEndpoints"]
    for rule in endpoint["relabelings"]:
        assert all(source in group["labels"] for source in rule["sourceLabels"]), rule


def test_the_scrape_job_carries_the_pod_monitors_relabelings_as_prometheus_writes_them() -> None:
    job = scrape_config(PM, Path("/tmp/pods.json"))
    assert job["honor_labels"] is False
    assert {"source_labels": ["__meta_kubernetes_pod_label_storyteller_dev_tenant"], "target_label": "tenant",
            "action": "replace"} in job["relabel_configs"]  # fmt: skip
    assert job["metric_relabel_configs"] == [
        {"regex": "exported_(namespace|pod|tenant|revision)", "action": "labeldrop"}
    ]


def test_other_tenants_finished_pods_pods_without_an_address_or_the_port_are_left_out() -> None:
    other = pod("other", **{"app.kubernetes.io/instance": "globex"})
    portless = pod("portless")
    portless["spec"]["containers"][0]["ports"] = [{"name": "health", "containerPort": 8081}]
    left_out = [
        other,
        pod("done", phase="Succeeded"),
        pod("failed", phase="Failed"),
        pod("new", ip=None),
        portless,
    ]
    assert shown(pod_targets(PM, [*left_out, pod("kept")])) == [
        {"targets": ["10.0.0.5:9100"], "labels": {"namespace": "team-a", "pod": "kept"}}
    ]

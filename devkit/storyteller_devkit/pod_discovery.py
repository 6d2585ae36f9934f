"""Kubernetes pod discovery for Debian's ``prometheus``, which is built without ``kubernetes_sd_configs``.

:func:`pod_targets` (pure) is what the Prometheus Operator's scrape job for a PodMonitor keeps of a pod
list: the pods its ``matchLabels`` select that declare its named port, not finished (a terminating pod is
kept: a draining worker's last sessions are scraped), as file_sd groups labelled ``namespace`` and
``pod``, with the discovery's ``__meta_kubernetes_*`` labels the PodMonitor's relabelings read (the pod's
labels among them). :class:`PodDiscovery` lists those pods through the API server every 2 s in a thread
and rewrites a file_sd file when they change; :meth:`PodDiscovery.scrape_config` is the job that reads it,
with the PodMonitor's ``honorLabels``, ``relabelings`` and ``metricRelabelings`` as the Prometheus
Operator writes them into Prometheus' configuration (:func:`relabel_configs`).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from storyteller_devkit.cluster import Cluster

log = logging.getLogger("storyteller.devkit.pod_discovery")

Group = dict[str, Any]
EVERY_S = 2.0  # a kubectl run costs ~0.1 s of CPU: the real node's pods share the two cores
FINISHED = ("Failed", "Succeeded")


def _port(pod: dict[str, Any], name: str) -> int | None:
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def meta_label(pod_label: str) -> str:
    """Kubernetes discovery's label for a pod label (any character not valid in a label name is `_`)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


# PodMonitor relabeling fields → Prometheus relabel_config keys (the Prometheus Operator's translation).
_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "separator": "separator",
    "regex": "regex",
    "replacement": "replacement",
    "modulus": "modulus",
}


def relabel_configs(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A PodMonitor's relabelings (or metricRelabelings) as Prometheus' relabel_configs."""
    out = []
    for rule in rules:
        config = {_RELABEL_KEYS[k]: v for k, v in rule.items() if k in _RELABEL_KEYS}
        if "action" in rule:
            config["action"] = str(rule["action"]).lower()
        out.append(config)
    return out


def pod_targets(pod_monitor: dict[str, Any], pods: list[dict[str, Any]]) -> list[Group]:
    """The file_sd groups of `pods` that `pod_monitor` scrapes, sorted by namespace and name."""
    spec = pod_monitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    wanted = spec["selector"]["matchLabels"].items()
    groups = []
    for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        labels = pod["metadata"].get("labels") or {}
        status = pod.get("status") or {}
        port = _port(pod, endpoint["port"])
        if any(labels.get(k) != v for k, v in wanted) or port is None or status.get("phase") in FINISHED:
            continue
        if ip := status.get("podIP"):
            meta = pod["metadata"]
            discovered = {
                "__meta_kubernetes_namespace": meta["namespace"],
                "__meta_kubernetes_pod_name": meta["name"],
                **{meta_label(k): str(v) for k, v in sorted(labels.items())},
            }
            groups.append(
                {
                    "targets": [f"{ip}:{port}"],
                    "labels": {"namespace": meta["namespace"], "pod": meta["name"], **discovered},
                }
            )
    return groups


def scrape_config(pod_monitor: dict[str, Any], path: Path) -> dict[str, Any]:
    """The scrape job of `pod_monitor`'s one endpoint, reading its targets from the file_sd file `path`."""
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    return {
        "job_name": pod_monitor["metadata"]["name"],
        "honor_labels": endpoint.get("honorLabels", False),
        "metrics_path": endpoint.get("path", "/metrics"),
        "file_sd_configs": [{"files": [str(path)]}],
        "relabel_configs": relabel_configs(endpoint.get("relabelings") or []),
        "metric_relabel_configs": relabel_configs(endpoint.get("metricRelabelings") or []),
    }


class PodDiscovery:
    """The pods `pod_monitor` selects, in every namespace, kept current in the file_sd file `path`."""

    def __init__(self, cluster: Cluster, pod_monitor: dict[str, Any], path: Path) -> None:
        self.cluster, self.pod_monitor, self.path = cluster, pod_monitor, path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-discovery", daemon=True)
        self._written: list[Group] | None = None
        self._write([])

    def scrape_config(self) -> dict[str, Any]:
        return scrape_config(self.pod_monitor, self.path)

    def start(self) -> PodDiscovery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        selector = ",".join(
            f"{k}={v}" for k, v in self.pod_monitor["spec"]["selector"]["matchLabels"].items()
        )
        while not self._stop.wait(EVERY_S):
            try:
                pods = self.cluster.kubectl_json("get", "pods", "--all-namespaces", "-l", selector)["items"]
            except (subprocess.SubprocessError, ValueError) as err:  # the API server restarting: next round
                log.warning("pod discovery: listing pods failed: %s", err)
                continue
            self._write(pod_targets(self.pod_monitor, pods))

    def _write(self, groups: list[Group]) -> None:
        if groups == self._written:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.path)  # atomic: Prometheus never reads half a file
        self._written = groups

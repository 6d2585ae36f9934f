"""The real node: containers that really run, from images built on this machine.

:func:`add_real_node` builds (or reuses) the operator, worker and pause images with
``tests/cluster/images.sh build``, then ``up.sh --real-node`` adds ``storyteller-real-0`` (containerd +
runc + CNI bridge + kubelet + kube-proxy + CoreDNS) to the local control plane and imports them;
``down.sh`` removes it with the rest. :class:`RealNode` is the node as ``tests/cluster/lib.sh`` names
it; pods land there only with :attr:`RealNode.placement` (node selector and toleration of its taint),
the kwok nodes keep every other pod.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyteller_devkit.cluster import CLUSTER_DIR, ScriptFailed, cluster_up, lib_value

IMAGES_TIMEOUT_S = 2400  # a cold build installs the worker's dependencies into its image
NODE_TIMEOUT_S = 600
NODE_LABEL = "storyteller.dev/real-node"


@dataclass(frozen=True)
class RealNode:
    name: str
    ip: str  # the bridge's address: pods reach the host's servers (LiveKit, models) here
    operator_image: str
    worker_image: str

    @classmethod
    def from_lib(cls) -> RealNode:
        """The node as tests/cluster/lib.sh names it."""
        return cls(
            name=lib_value("real_node_name"),
            ip=lib_value("node_ip"),
            operator_image=lib_value("operator_image"),
            worker_image=lib_value("worker_image"),
        )

    @property
    def placement(self) -> dict[str, Any]:
        """Pod spec fields that put a pod on this node (it is tainted so nothing else lands there)."""
        return {
            "nodeSelector": {NODE_LABEL: "true"},
            "tolerations": [{"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
        }


def build_images(env: dict[str, str], *, show_output: bool = False) -> None:
    """``images.sh build``: the operator, worker and pause images (an unchanged one is not rebuilt).

    `show_output` lets a long build print as it goes; otherwise its output is in :class:`ScriptFailed`.
    """
    argv = [str(CLUSTER_DIR / "images.sh"), "build"]
    proc = subprocess.run(argv, env=env, capture_output=not show_output, text=True, timeout=IMAGES_TIMEOUT_S)
    if proc.returncode != 0:
        raise ScriptFailed("images.sh build", proc.returncode, proc.stdout or "", proc.stderr or "")


def add_real_node(env: dict[str, str], *, show_build: bool = False) -> Path:
    """Build the images and add the real node to the local control plane (started if needed).

    Returns the control plane's kubeconfig; raises :class:`ScriptFailed` naming the script that failed.
    """
    build_images(env, show_output=show_build)
    return cluster_up("--real-node", env=env, timeout=NODE_TIMEOUT_S)

"""The local Kubernetes cluster: its scripts, its tools, and a :class:`Cluster` handle to drive it.

The control plane is started and stopped by the shell scripts in ``tests/cluster/`` (``up.sh``,
``down.sh``; ``lib.sh`` holds the paths they share). This module finds the repository from its own file
(the devkit is installed editable from the checkout), reads those paths from ``lib.sh`` so Python and
shell share one definition, and runs the scripts.

* :func:`find_tool`, :func:`tool_dirs`, :func:`tools_env`, :func:`keda_crd`, :func:`lib_value`: the
  cached binaries (``~/.cache/storyteller/...``, built by ``make tools``) and ``lib.sh``'s settings.
* :class:`Cluster`: a reachable API server with ``kubectl``/``helm`` bound to its kubeconfig.
* :func:`cluster_up`, :func:`cluster_down`: ``up.sh`` and ``down.sh``.
* :func:`local_cluster`: a cluster for the length of a ``with`` block: ``$STORYTELLER_KUBECONFIG``, or one
  ``up.sh`` already started (left running), or one started here and stopped again at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "tests" / "cluster"
UP_TIMEOUT_S = 300  # up.sh has its own 120 s readiness deadline; this only guards against a hung script
DOWN_TIMEOUT_S = 180


class ClusterError(RuntimeError):
    """The cluster cannot be used: a script failed, or a configured API server does not answer."""


class ClusterUnavailable(ClusterError):
    """No cluster can be started on this machine (tools not installed, no Docker engine for kind)."""


class ScriptFailed(ClusterError):
    """One of tests/cluster's scripts exited non-zero; keeps what it printed."""

    def __init__(self, script: str, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{script} failed ({returncode}):\n{stdout[-2000:]}\n{stderr[-6000:]}")
        self.script, self.returncode, self.stdout, self.stderr = script, returncode, stdout, stderr


def plane_env(plane: int) -> dict[str, str]:
    """What selects control plane `plane` for lib.sh and the scripts (0 is the default one).

    Each plane has its own state directory, ports and kwok pod range (lib.sh derives them), so test
    workers can each run one side by side; the real node joins plane 0 only.
    """
    return {"STORYTELLER_PLANE": str(plane)}


@functools.cache
def _lib_values(plane: int = 0) -> dict[str, str]:
    """Paths from tests/cluster/lib.sh, so the shell scripts and Python share one definition."""
    names = {
        "tools_path": "TOOLS_PATH",
        "state_dir": "STATE_DIR",
        "kubeconfig": "KUBECONFIG_PATH",
        "keda_crds": "KEDA_CRDS",
        "node_ip": "NODE_IP",
        "real_node_name": "REAL_NODE_NAME",
        "operator_image": "OPERATOR_IMAGE",
        "worker_image": "WORKER_IMAGE",
    }
    script = 'source "$1/lib.sh" && printf "%s\\n" ' + " ".join(f'"${v}"' for v in names.values())
    out = subprocess.run(
        ["bash", "-c", script, "lib", str(CLUSTER_DIR)],
        env={**os.environ, **plane_env(plane)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    return dict(zip(names, out, strict=True))


def lib_value(name: str, plane: int = 0) -> str:
    """One setting of tests/cluster/lib.sh: node_ip, real_node_name, operator_image, worker_image, ..."""
    return _lib_values(plane)[name]


def keda_crd(name: str = "keda.sh_scaledobjects.yaml") -> Path:
    """One of KEDA's own CRDs (install.sh copies them from KEDA's Go module); raises naming `make tools`."""
    path = Path(_lib_values()["keda_crds"]) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make tools`")
    return path


def tool_dirs() -> tuple[Path, ...]:
    """The versioned cache bin directories install.sh fills (they may not exist yet)."""
    return tuple(Path(p) for p in _lib_values()["tools_path"].split(":"))


def find_tool(name: str) -> Path:
    """A cached binary (kubectl, helm, kwok, livekit-server, kube-*) or one on PATH (prometheus, promtool)."""
    for d in tool_dirs():
        candidate = d / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{name} not found in {[str(d) for d in tool_dirs()]} or PATH: run `make tools`")


def tools_env(kubeconfig: Path | None = None, plane: int = 0) -> dict[str, str]:
    """The process environment with the cached tools first on PATH (and KUBECONFIG when given), on `plane`."""
    env = {**os.environ, **plane_env(plane)}
    env["PATH"] = os.pathsep.join([*(str(d) for d in tool_dirs()), env.get("PATH", "")])
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def _run(
    argv: list[str], *, env: dict[str, str], input: str | None, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=input, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class Cluster:
    """A reachable Kubernetes API and the tools to drive it.

    ``mode`` is ``"local"`` (kwok nodes: Pods get Running/Ready but run no containers), ``"kind"`` or
    ``"external"``; ``env`` is the process environment plus ``KUBECONFIG`` and the cached tools first on
    ``PATH`` (pass it to run the operator as a local process). ``kubectl`` and ``helm`` return text
    output and raise AssertionError on a non-zero exit unless ``check=False``.
    """

    kubeconfig: Path
    mode: str
    bin_dirs: tuple[Path, ...]
    env: dict[str, str] = field(repr=False)

    @staticmethod
    def tools_env() -> dict[str, str]:
        """The process environment with the cached tools first on PATH (for scripts run outside pytest)."""
        return tools_env()

    @classmethod
    def at(cls, kubeconfig: Path, mode: str, plane: int = 0) -> Cluster:
        """The cluster behind `kubeconfig` (the scripts run with `env` act on local control plane `plane`)."""
        return cls(kubeconfig, mode, tool_dirs(), tools_env(kubeconfig, plane))

    def tool(self, name: str) -> Path:
        return find_tool(name)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(find_tool("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        return _run(argv, env=self.env, input=input, check=check, timeout=timeout)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        ns = ["--namespace", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(find_tool("helm")), "--kubeconfig", str(self.kubeconfig), *args]
        return _run(argv, env=self.env, input=input, check=check, timeout=timeout)


def reachable(kubeconfig: Path) -> bool:
    """The API server behind `kubeconfig` answers `/readyz` (False also when kubectl is not installed)."""
    try:
        kubectl = find_tool("kubectl")
    except FileNotFoundError:
        return False
    proc = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "--request-timeout=5s", "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode == 0


def _can_start() -> str | None:
    """None when up.sh can start a cluster here, else why not."""
    local_bins = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
    local_ok = shutil.which("etcd") is not None and all(
        any((d / b).is_file() for d in tool_dirs()) for b in local_bins
    )
    if local_ok:
        return None
    if shutil.which("kind") and shutil.which("docker"):
        docker_ok = subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
        if docker_ok:
            return None
    return (
        "no Kubernetes cluster available: the local control plane is not installed (run `make tools`, "
        "which builds kube-apiserver & co. and installs etcd) and no Docker engine with kind was found; "
        "or point STORYTELLER_KUBECONFIG at a cluster"
    )


def cluster_up(*args: str, env: dict[str, str] | None = None, timeout: float = UP_TIMEOUT_S) -> Path:
    """Run ``tests/cluster/up.sh [args]`` (a no-op for what already runs); returns the kubeconfig path.

    Raises :class:`ScriptFailed` with the script's output when it fails.
    """
    argv = [str(CLUSTER_DIR / "up.sh"), *args]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ScriptFailed(
            " ".join(["tests/cluster/up.sh", *args]), proc.returncode, proc.stdout, proc.stderr
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def cluster_down(
    *, check: bool = False, timeout: float = DOWN_TIMEOUT_S, env: dict[str, str] | None = None
) -> None:
    """Run ``tests/cluster/down.sh``: the control plane and the real node, with everything they made."""
    proc = subprocess.run(
        [str(CLUSTER_DIR / "down.sh")], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise ScriptFailed("tests/cluster/down.sh", proc.returncode, proc.stdout, proc.stderr)


@contextlib.contextmanager
def local_cluster(*, up_timeout: float = UP_TIMEOUT_S, plane: int = 0) -> Iterator[Cluster]:
    """A reachable cluster for the length of the block.

    ``$STORYTELLER_KUBECONFIG`` when set (it must answer; never torn down), else the control plane
    ``up.sh`` already started (left running for whoever started it), else one started here with
    ``up.sh`` (local etcd + kube-apiserver + controller-manager + scheduler + kwok nodes, or kind when
    Docker and kind work) and stopped with ``down.sh`` at the end, also when the process exits early.
    `plane` picks which local control plane (:func:`plane_env`).

    Raises :class:`ClusterUnavailable` when none can be started here, :class:`ClusterError` when the
    configured one does not answer or ``up.sh`` fails.
    """
    configured = os.environ.get("STORYTELLER_KUBECONFIG")
    if configured:
        kubeconfig = Path(configured)
        if not reachable(kubeconfig):
            raise ClusterError(
                f"STORYTELLER_KUBECONFIG={configured} is set but its API server does not answer"
            )
        yield Cluster.at(kubeconfig, "external")
        return

    state_kubeconfig = Path(_lib_values(plane)["kubeconfig"])
    state_mode_file = Path(_lib_values(plane)["state_dir"]) / "mode"
    if state_kubeconfig.exists() and reachable(state_kubeconfig):
        # Started by hand with up.sh: use it and leave it running for the user.
        mode = state_mode_file.read_text().strip() if state_mode_file.exists() else "local"
        yield Cluster.at(state_kubeconfig, mode, plane)
        return
    env = tools_env(plane=plane)

    reason = _can_start()
    if reason:
        raise ClusterUnavailable(reason)

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            cluster_down(env=env)

    # atexit as well as the finally: covers an interrupted run that never reaches the end of the block.
    atexit.register(stop)
    try:
        kubeconfig = cluster_up(timeout=up_timeout, env=env)
        yield Cluster.at(kubeconfig, state_mode_file.read_text().strip(), plane)
    finally:
        stop()
        atexit.unregister(stop)

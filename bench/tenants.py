"""Tenants created → all Ready, for 1, 50 and 200 tenants, and the operator's memory at each size.

Runs against the local control plane (tests/cluster/up.sh; started here when none answers, and stopped
again at the end) or any cluster given with --kubeconfig / $STORYTELLER_KUBECONFIG. Installs the chart
(CRD + RBAC, operator Deployment disabled), runs the operator as a local process, then for each size
creates a namespace with the Secrets and N tenants in one `kubectl apply`, and polls until every tenant
reports phase Ready for its current generation. Prints figures; asserts nothing.

    .venv/bin/python bench/tenants.py [--sizes 1 50 200]

On the local control plane the pods are kwok fakes, so "Ready" includes kwok's (sometimes slow) pod
status updates; the operator's own share is reported separately (time until every tenant was first
reconciled, i.e. has children and a status).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from storyteller_devkit.cluster import find_tool, local_cluster, reachable
from storyteller_devkit.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[1]


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        [str(find_tool("kubectl")), "--kubeconfig", str(kubeconfig), *args],
        input=input, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifests(ns: str, n: int) -> str:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "livekit-credentials", "namespace": ns},
            "stringData": {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai", "namespace": ns},
            "stringData": {"OPENAI_API_KEY": "sk-bench"},
        },
    ]
    for i in range(n):
        docs.append(
            {
                "apiVersion": "storyteller.dev/v1alpha1",
                "kind": "StorytellerDeployment",
                "metadata": {"name": f"t{i:03d}", "namespace": ns},
                "spec": {
                    "livekit": {
                        "url": "ws://livekit.example.test:7880",
                        "credentialsSecret": "livekit-credentials",
                    },
                    "providerSecrets": ["openai"],
                    "pool": {"minReplicas": 1, "drainTimeoutSeconds": 1},
                },
            }
        )
    return yaml.safe_dump_all(docs)


def run_size(kubeconfig: Path, n: int, op_pid: int, deadline: float) -> dict[str, float]:
    ns = f"bench-tenants-{n}"
    started = time.monotonic()
    kubectl(kubeconfig, "apply", "-f", "-", input=manifests(ns, n))
    applied = time.monotonic() - started
    first_reconciled: dict[str, float] = {}
    ready_at: dict[str, float] = {}
    while len(ready_at) < n and time.monotonic() - started < deadline:
        items = json.loads(kubectl(kubeconfig, "-n", ns, "get", "sd", "-o", "json"))["items"]
        now = time.monotonic() - started
        for item in items:
            name, st = item["metadata"]["name"], item.get("status") or {}
            if "observedGeneration" in st:
                first_reconciled.setdefault(name, now)
            if st.get("phase") == "Ready" and st.get("observedGeneration") == item["metadata"]["generation"]:
                ready_at.setdefault(name, now)
        time.sleep(0.5)
    times = sorted(ready_at.values())
    result = {
        "tenants": n,
        "apply_s": applied,
        "all_reconciled_s": max(first_reconciled.values()) if len(first_reconciled) == n else float("nan"),
        "all_ready_s": times[-1] if len(times) == n else float("nan"),
        "ready_p50_s": statistics.median(times) if times else float("nan"),
        "ready_count": len(times),
        "operator_rss_mib": rss_mib(op_pid),
    }
    kubectl(kubeconfig, "delete", "namespace", ns, "--wait=true", "--timeout=300s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--kubeconfig", default=os.environ.get("STORYTELLER_KUBECONFIG", ""))
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait per size")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.kubeconfig:
            kubeconfig = Path(args.kubeconfig)
        else:
            # The running control plane, else one started here and stopped at the end.
            kubeconfig = stack.enter_context(local_cluster(up_timeout=600)).kubeconfig
        if not reachable(kubeconfig):
            print(f"cluster at {kubeconfig} does not answer", file=sys.stderr)
            return 1
        return measure(kubeconfig, args.sizes, args.deadline)


def measure(kubeconfig: Path, sizes: list[int], deadline: float) -> int:
    """Install the chart, start the operator, and time each size; prints the figures."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    helm = str(find_tool("helm"))
    subprocess.run(
        [helm, "--kubeconfig", str(kubeconfig), "upgrade", "--install", "storyteller",
         str(REPO / "helm" / "storyteller"), "--namespace", "storyteller-system", "--create-namespace",
         "--set", "operator.enabled=false", "--wait"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    (REPO / ".state").mkdir(exist_ok=True)
    log_path = REPO / ".state" / "bench-operator.log"  # git-ignored
    log_path.unlink(missing_ok=True)  # this run's log only
    print(f"operator log: {log_path}")
    op = OperatorProcess(env, log_path, ["--log-level", "warning"])
    try:
        op.start()
        idle = rss_mib(op.pid)
        print(f"operator idle RSS: {idle:.1f} MiB")
        print(f"{'tenants':>8} {'apply s':>8} {'reconciled s':>13} {'all Ready s':>12} {'p50 Ready s':>12} "
              f"{'Ready':>6} {'RSS MiB':>8}")  # fmt: skip
        for n in sizes:
            r = run_size(kubeconfig, n, op.pid, deadline)
            print(
                f"{r['tenants']:>8} {r['apply_s']:>8.1f} {r['all_reconciled_s']:>13.1f} "
                f"{r['all_ready_s']:>12.1f} {r['ready_p50_s']:>12.1f} {r['ready_count']:>6} "
                f"{r['operator_rss_mib']:>8.1f}",
                flush=True,
            )
        for line in op.metrics().splitlines():
            if line.startswith(
                ("storyteller_operator_reconcile_total", "storyteller_operator_reconcile_seconds_")
            ):
                print(line)
    finally:
        op.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

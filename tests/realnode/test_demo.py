"""`make demo` works: chart, operator pod, example tenant Ready on a real worker pod, a call to it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.real_node import RealNode
from tests.realnode.real_platform import RELEASE, RELEASE_NS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_removed(cluster: Cluster) -> Iterator[None]:
    # The other real-node tests' operator (a release of its own, watching every namespace) is stopped
    # while the demo's runs: two operators would both reconcile the example tenant, each with its own
    # rights and rules (it may not read the example's Secrets), and write their own status over the other's.
    found = cluster.kubectl(
        "-n", RELEASE_NS, "get", "deployment", RELEASE, "-o", "jsonpath={.spec.replicas}",
        "--ignore-not-found", check=False,
    ).stdout.strip()  # fmt: skip
    if found:
        cluster.kubectl("-n", RELEASE_NS, "scale", "deployment", RELEASE, "--replicas=0")
        cluster.kubectl(
            "-n", RELEASE_NS, "wait", "--for=delete", "pod", "-l", f"app.kubernetes.io/instance={RELEASE}",
            "--timeout=120s", check=False, timeout=150,
        )  # fmt: skip
    try:
        yield
    finally:
        # The demo leaves the release and the example tenant for the user to look at; the suite removes
        # them so that no second operator pod runs beside the other real-node tests' one.
        cluster.helm("uninstall", "storyteller", "--namespace", "storyteller-system", "--wait", check=False)
        cluster.kubectl(
            "delete", "namespace", "storyteller-example", "--wait=false", "--ignore-not-found", check=False
        )
        if found:
            cluster.kubectl("-n", RELEASE_NS, "scale", "deployment", RELEASE, f"--replicas={found}")
            cluster.kubectl(
                "-n", RELEASE_NS, "rollout", "status", "deployment", RELEASE, "--timeout=180s",
                check=False, timeout=210,
            )  # fmt: skip


def test_platform_demo_runs_a_call_against_the_example_tenant_on_real_pods(
    cluster: Cluster, real_node: RealNode, demo_removed: None
) -> None:
    # --keep-cluster: the cluster belongs to the test session, which stops it at the end.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "platform_demo.py"), "--keep-cluster"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "FALLBACK" not in out, out[-3000:]
    lines = [line.strip() for line in out.splitlines()]
    # The operator's and the worker's pods, Running on the real node (kubectl get pods -o wide).
    pod_rows = [line.split() for line in lines if line.startswith(("storyteller-", "pod/acme-worker-"))]
    on_node = [row for row in pod_rows if "Running" in row and real_node.name in row]
    assert any(r[0].startswith("storyteller-") for r in on_node), pod_rows
    assert any(r[0].startswith("pod/acme-worker-") for r in on_node), pod_rows
    sd_row = next(
        line.split() for line in lines if line.startswith("storytellerdeployment.storyteller.dev/acme")
    )
    assert sd_row[1:3] == ["True", "Ready"], sd_row
    assert "(acme-storyteller joined room" in out
    assert lines.index("caller: My name is Ada and I live in Lisbon") < next(
        i for i, line in enumerate(lines) if line.startswith("agent: Once upon a time in Lisbon, Ada")
    )
    assert "agent: Goodbye, Ada! Thank you for listening." in lines
    assert "room deleted by the agent: True" in out
    # The caller was heard, not scripted; the story (the example's realtime model) heard the goodbye itself.
    assert "heard by speech-to-text: ['My name is Ada and I live in Lisbon.']" in lines
    assert (
        "heard by the realtime model: ['No thanks, that is all.']; its tool calls: ['story_finished']"
        in lines
    )

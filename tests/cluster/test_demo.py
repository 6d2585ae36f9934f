"""`make demo` works: chart, operator, example tenant Ready, and a voice call to its worker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example_namespace_removed(cluster: Cluster) -> Iterator[None]:
    yield
    # The demo leaves the example tenant for the user to look at; the suite cleans it up.
    cluster.kubectl(
        "delete", "namespace", "storyteller-example", "--wait=false", "--ignore-not-found", check=False
    )


def test_platform_demo_runs_a_call_against_the_example_tenant(
    cluster: Cluster, example_namespace_removed: None
) -> None:
    if cluster.mode != "local":
        pytest.skip("the demo drives the local control plane (tests/cluster/up.sh), this run uses another")
    # --keep-cluster: the cluster belongs to the test session, which stops it at the end.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "platform_demo.py"), "--keep-cluster"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    lines = [line.strip() for line in out.splitlines()]
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

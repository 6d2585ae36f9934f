"""A stall of the API server under two operator replicas: its process paused (SIGSTOP) for 3 s, then resumed
(SIGCONT). The leader stays the leader (the same holder, acquireTime and leaseTransitions on the Lease, the
same process still running, no "leadership lost") and the follower never reconciles.

On a control plane of its own (STALL_PLANE), started for this module and stopped after it: under `make
test` the cluster tests' plane is theirs alone, but a run without xdist uses plane 0, which the real node's
tests and any other session on this machine may be using, and a paused API server can fail their waits. The
price is one more plane: about 10 s to start it and install the chart, up to 20 s to stop it. Waits are
polls with deadlines; the 3 s pause is the stimulus.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storyteller_devkit.cluster import Cluster, find_tool, lib_value
from storyteller_devkit.operator_process import OperatorProcess
from storyteller_devkit.real_platform import wait_for
from storyteller_operator.leadership import LEASE_DURATION_S
from tests.cluster.test_operator_leadership import (  # noqa: F401  (a fixture used by name)
    lease,
    logged,
    reconciles_counted,
    replicas,
)
from tests.cluster.test_operator_lifecycle import (  # noqa: F401  (a fixture used by name)
    chart,
    deploy_ready_tenant,
)
from tests.fixtures.cluster import running_cluster

STALL_PLANE = 9  # lib.sh's last: xdist workers take the first ones, the real node plane 0
STALL_S = 3.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Local control plane STALL_PLANE: always local processes, whose kube-apiserver can be paused."""
    if os.environ.get("STORYTELLER_KUBECONFIG"):
        pytest.skip("pauses the API server of a local control plane, not of STORYTELLER_KUBECONFIG's")
    try:
        find_tool("kube-apiserver")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STORYTELLER_CLUSTER", "local")  # never kind: its cluster is one for every plane
        yield from running_cluster(STALL_PLANE)


def apiserver_pid() -> int:
    """The plane's kube-apiserver, from up.sh's pid file (checked to be one: it is about to be stopped)."""
    pid = int((Path(lib_value("state_dir", STALL_PLANE)) / "kube-apiserver.pid").read_text())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "kube-apiserver", f"pid {pid}"
    return pid


def process_state(pid: int) -> str:
    """R, S, T (stopped), ...: the field after the command in /proc/PID/stat."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP) for the block, and continued (SIGCONT) after it, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for("the API server stopped", lambda: process_state(pid) == "T", deadline=10, every=0.05)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for("the API server running again", lambda: process_state(pid) != "T", deadline=10, every=0.05)


def micro(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def test_a_stalled_api_server_keeps_its_leader_and_no_second_replica_reconciles(
    cluster: Cluster,
    namespace: str,
    replicas: dict[str, OperatorProcess],  # noqa: F811  (the fixture, imported above)
) -> None:
    a, b = replicas["a"], replicas["b"]
    a.start()
    wait_for("replica a to lead", a.leading, deadline=LEASE_DURATION_S + 15)
    b.start()
    wait_for(
        "replica b to follow a", lambda: [r for r in logged(b, "following") if r["holder"] == a.identity]
    )
    deploy_ready_tenant(cluster, namespace)
    wait_for("a few rechecks by the leader", lambda: len(logged(a, "reconciled")) >= 3, deadline=30)
    before = lease(cluster)
    assert before["holderIdentity"] == a.identity
    processes = [(op, op.pid) for op in (a, b)]

    pid = apiserver_pid()
    with stopped(pid):
        stalled_at = datetime.datetime.now(datetime.UTC)
        time.sleep(STALL_S)  # the stimulus: the API server answers nothing for this long
    resumed_at = datetime.datetime.now(datetime.UTC)

    def renewed_a_lease_after_the_stall() -> bool:
        spec = lease(cluster)
        if spec["holderIdentity"] != a.identity or spec.get("acquireTime") != before.get("acquireTime"):
            pytest.fail(f"the Lease changed hands after the stall: {spec}, before: {before}")
        return micro(spec["renewTime"]) >= stalled_at + datetime.timedelta(seconds=LEASE_DURATION_S)

    # Renewed by the same holder a whole lease after the stall began: any renew deadline the stall could
    # have broken has passed, and a follower that saw the last record before the stall would have taken
    # over by now.
    wait_for("the leader's renewals a lease after the stall", renewed_a_lease_after_the_stall, deadline=60)
    wait_for(
        "the leader reconciling after the stall",
        lambda: [r for r in logged(a, "reconciled") if micro(r["time"]) > resumed_at],
        deadline=30,
    )

    after = lease(cluster)
    assert after["holderIdentity"] == a.identity
    assert after.get("leaseTransitions") == before.get("leaseTransitions")
    assert after.get("acquireTime") == before.get("acquireTime")  # not even lost and taken back
    # Neither process restarted: the same ones, still running.
    for op, started_pid in processes:
        assert op.proc is not None and op.pid == started_pid and op.proc.poll() is None, op.identity
    assert len(logged(a, "leading")) == 1 and not logged(a, "leadership lost")
    # The follower never led and never reconciled: no log line, no count.
    assert not logged(b, "leading") and not b.leading() and a.leading()
    assert logged(b, "reconciled") == [] and reconciles_counted(b) == 0

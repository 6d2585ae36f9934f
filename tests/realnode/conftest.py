"""Fixtures of the realnode tests.

``cluster`` (session): local control plane 0, the one the real node joins, on any xdist worker.
``platform`` (session): ``helm install`` of the chart with the operator image built here, its pod on the
real node in a namespace that enforces Pod Security ``restricted``, the chart's own RBAC and
``prometheus.url`` set to ``node_prometheus``; uninstalled at the end (so no operator pod outlives these
tests). ``tenant_ns``: a fresh restricted namespace holding
the LiveKit and provider Secrets.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storyteller_devkit.cluster import Cluster
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.real_node import RealNode
from storyteller_devkit.real_platform import install_chart, provider_secrets, restrict
from tests.fixtures.cluster import running_cluster
from tests.realnode.real_platform import RELEASE, RELEASE_NS


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Plane 0 whatever the xdist worker: the real node's bridge and chains are the machine's, one node."""
    yield from running_cluster(0)


@pytest.fixture(scope="session")
def platform(cluster: Cluster, real_node: RealNode, node_prometheus: Prometheus) -> Iterator[RealNode]:
    install_chart(cluster, real_node, RELEASE, RELEASE_NS, node_prometheus.url, recheckSeconds=2)
    try:
        yield real_node
    finally:
        cluster.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", check=False)
        cluster.kubectl("delete", "namespace", RELEASE_NS, "--wait=false", check=False)


@pytest.fixture
def tenant_ns(cluster: Cluster, namespace: str, node_livekit_server: LiveKitServer) -> str:
    restrict(cluster, namespace)
    cluster.apply(provider_secrets(namespace, node_livekit_server, RELEASE, RELEASE_NS))
    return namespace

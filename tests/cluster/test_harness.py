"""The test harness itself: the control plane behaves like a real cluster, helm works, down.sh cleans up.

Every wait here is a condition with a deadline (kubectl rollout/wait, helm --wait); no sleeps, no timing
assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from livekit import api as lkapi

from storyteller_devkit.cluster import CLUSTER_DIR, Cluster, find_tool
from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.process import free_port
from storyteller_devkit.real_platform import wait_established

# Restricted-PodSecurity-compliant pod spec: the same manifest passes on kwok nodes and on kind.
# The image is never pulled on kwok; on kind it resolves through the engine's default registry.
_RESTRICTED_POD_SPEC = """
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: main
        image: busybox:1.36
        command: [sleep, "86400"]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
"""


def test_deployment_reaches_three_ready_replicas(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: pause}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: pause}}}}
  template:
    metadata: {{labels: {{app: pause}}}}
    spec:{_RESTRICTED_POD_SPEC}
""",
        namespace=namespace,
    )
    cluster.kubectl("rollout", "status", "deployment/pause", "-n", namespace, "--timeout=60s", timeout=90)
    deployment = cluster.kubectl_json("get", "deployment", "pause", "-n", namespace)
    assert deployment["status"]["readyReplicas"] == 3
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=pause")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")]
    assert len(running) == 3


def test_crd_and_custom_object_with_status(cluster: Cluster, namespace: str) -> None:
    crd_name = "harnesswidgets.harness.storyteller.dev"
    cluster.apply(
        f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {crd_name}}}
spec:
  group: harness.storyteller.dev
  scope: Namespaced
  names: {{plural: harnesswidgets, singular: harnesswidget, kind: HarnessWidget}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {{size: {{type: integer, minimum: 1}}}}
          status:
            type: object
            properties: {{phase: {{type: string}}}}
"""
    )
    try:
        wait_established(cluster, crd_name)
        cluster.apply(
            "apiVersion: harness.storyteller.dev/v1\nkind: HarnessWidget\n"
            "metadata: {name: w1}\nspec: {size: 3}\n",
            namespace=namespace,
        )
        # The schema is enforced by the real API server.
        rejected = cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", check=False,
            input="apiVersion: harness.storyteller.dev/v1\nkind: HarnessWidget\n"
            "metadata: {name: w2}\nspec: {size: 0}\n",
        )  # fmt: skip
        assert rejected.returncode != 0 and "spec.size" in rejected.stderr
        cluster.kubectl(
            "patch", "harnesswidget", "w1", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Ready"}}),
        )  # fmt: skip
        widget = cluster.kubectl_json("get", "harnesswidget", "w1", "-n", namespace)
        assert widget["status"] == {"phase": "Ready"}
        assert widget["spec"] == {"size": 3}
    finally:
        cluster.kubectl("delete", "crd", crd_name, "--ignore-not-found", "--wait=false", check=False)


def test_rbac_and_pod_security_are_enforced(cluster: Cluster, namespace: str) -> None:
    can_i = cluster.kubectl(
        "auth", "can-i", "create", "pods", "-n", namespace,
        f"--as=system:serviceaccount:{namespace}:default", check=False,
    )  # fmt: skip
    assert can_i.stdout.strip() == "no"

    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    privileged = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", check=False,
        input="apiVersion: v1\nkind: Pod\nmetadata: {name: privileged}\n"
        "spec: {containers: [{name: c, image: busybox:1.36, securityContext: {privileged: true}}]}\n",
    )  # fmt: skip
    assert privileged.returncode != 0 and "PodSecurity" in privileged.stderr


def test_helm_install_of_a_tiny_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    # kubeVersion makes helm check the server's version: it fails on unstamped (v0.0.0-master) builds.
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-tiny\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    cluster.helm("install", "tiny", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait",
                 "--timeout", "60s")  # fmt: skip
    configmap = cluster.kubectl_json("get", "configmap", "tiny-tiny", "-n", namespace)
    assert configmap["data"] == {"greeting": "hi"}
    assert cluster.helm("version", "--short").stdout.startswith("v3.")
    releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("tiny", "deployed")]


# livekit-server --dev's secret is the documented 6-byte "secret"; PyJWT warns about its length.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_livekit_server_answers(livekit_server: LiveKitServer) -> None:
    with urllib.request.urlopen(livekit_server.http_url, timeout=5) as resp:
        assert resp.status == 200
    assert livekit_server.port not in (7880, 7881, 7882)

    async def create_and_list() -> list[str]:
        client = lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret)
        try:
            await client.room.create_room(lkapi.CreateRoomRequest(name="harness"))
            listed = await client.room.list_rooms(lkapi.ListRoomsRequest())
            return [room.name for room in listed.rooms]
        finally:
            await client.aclose()

    assert "harness" in asyncio.run(create_and_list())


def _pids(state_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in state_dir.glob("*.pid")}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone: it holds no ports and no memory)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER_DIR / name), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_up_and_down_leave_no_process_behind(tmp_path: Path) -> None:
    """A second, throw-away local control plane on other ports: down.sh must stop every process it started."""
    try:
        for name in ("kube-apiserver", "kwok", "etcd"):
            find_tool(name)
    except FileNotFoundError as e:
        pytest.skip(f"the local control plane is not installed: {e}")
    state = tmp_path / "state"
    env = dict(os.environ)
    env.update(
        STORYTELLER_STATE=str(state),
        STORYTELLER_FAKE_NODES="1",
        **{
            f"STORYTELLER_{name}_PORT": str(free_port())
            for name in ("API", "ETCD", "ETCD_PEER", "KCM", "SCHED", "KWOK")
        },
    )
    pids: dict[str, int] = {}
    try:
        up = _script("up.sh", "--local", env=env)
        assert up.returncode == 0, up.stderr
        kubeconfig = Path(up.stdout.strip().splitlines()[-1])
        assert kubeconfig.is_file() and kubeconfig.is_relative_to(state)
        pids = _pids(state)
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        assert all(_alive(pid) for pid in pids.values())
    finally:
        down = _script("down.sh", env=env)
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not state.exists()


def test_a_tenant_naming_the_servers_media_ports_is_admitted_to_exactly_them(
    livekit_server: LiveKitServer,
) -> None:
    """The ports come from the running server itself (its start-up log line), not from the devkit's config."""
    from storyteller_operator import render
    from tests.unit.test_operator_render import egress_admits, tenant

    (line,) = [
        ln for ln in livekit_server.log_path.read_text().splitlines() if "starting LiveKit server" in ln
    ]
    started = json.loads(line[line.index("{") :])
    tcp, udp = started["rtc.portTCP"], started["rtc.portUDP"]["Start"]
    assert (tcp, udp) == (livekit_server.rtc_tcp_port, livekit_server.rtc_udp_port)
    spec = {
        "livekit": {"url": livekit_server.url, "credentialsSecret": "lk"},
        "worker": {"livekitMedia": livekit_server.livekit_media()},
    }
    policy = render.network_policy(tenant(spec))
    for protocol, port in (("TCP", started["portHttp"]), ("TCP", tcp), ("UDP", udp)):
        assert egress_admits(policy, protocol, port, "127.0.0.1"), (protocol, port)
    other = next(p for p in range(20000, 65535) if p not in (started["portHttp"], tcp, udp))
    assert not egress_admits(policy, "UDP", other) and not egress_admits(policy, "TCP", other)

"""`make demo`: the whole platform on this machine, no cloud account needed.

1. a local Kubernetes control plane with one real node (tests/cluster/up.sh --real-node: containerd,
   runc, a CNI bridge and a kubelet beside the kwok nodes), and the two images built here
   (tests/cluster/images.sh) and imported into the node;
2. the Helm chart installed (CRD, RBAC, operator Deployment): the operator runs from its image, in its
   pod on the real node;
3. examples/tenant-secrets.yaml and examples/tenant.yaml applied, with what only this machine knows
   filled in (the local LiveKit and model servers' addresses, the worker image built here, the real
   node), until the tenant's worker pod is Ready;
4. the worker pod registers with a local `livekit-server --dev` on the node's bridge address; the models
   are a local scripted server (TTS by espeak-ng), unless OPENAI_API_KEY and DEEPGRAM_API_KEY are set, in
   which case the real providers are used;
5. a caller joins a room, the tenant's agent is dispatched to it, and they talk (the caller's voice is
   espeak-ng): greeting, name and city, handoff, story, goodbye. The transcript is printed.

Where the real node cannot start (not root, no containerd), the demo says so and falls back to local
processes: the operator as a process with the chart's ServiceAccount and one worker process running the
config the operator rendered into the tenant's ConfigMap. Everything the demo started is stopped at the
end; `--keep-cluster` leaves the cluster running (stop it with tests/cluster/down.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from livekit import api  # noqa: E402

from demo.text_session import local_models  # noqa: E402
from storyteller_devkit.caller import CALLER_SCRIPT, Caller, caller_token  # noqa: E402
from storyteller_devkit.cluster import (  # noqa: E402
    CLUSTER_DIR,
    Cluster,
    ScriptFailed,
    cluster_down,
    cluster_up,
    find_tool,
)
from storyteller_devkit.livekit_server import LiveKitServer, running_livekit_server  # noqa: E402
from storyteller_devkit.model_server import ThreadedServer  # noqa: E402
from storyteller_devkit.operator_process import OperatorProcess  # noqa: E402
from storyteller_devkit.process import WaitFailed, free_port, wait_until  # noqa: E402
from storyteller_devkit.real_node import RealNode, add_real_node  # noqa: E402
from storyteller_devkit.worker_process import WorkerProcess  # noqa: E402
from storyteller_operator.render import config_map_name  # noqa: E402

CHART = ROOT / "helm" / "storyteller"
RELEASE, RELEASE_NS = "storyteller", "storyteller-system"
TENANT, TENANT_NS = "acme", "storyteller-example"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> str:
    proc = subprocess.run([str(a) for a in argv], env=env, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, argv))}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def start_real_node(env: dict[str, str]) -> str | None:
    """Build the images and add the real node; None when it works, else why not (for the fallback)."""
    if os.geteuid() != 0:
        return "the real node needs root (containerd, network namespaces, iptables)"
    try:
        add_real_node(env)
    except ScriptFailed as e:
        return f"{e.script} failed: {e.stderr.strip().splitlines()[-1:]}"
    return None


@contextmanager
def cluster(keep: bool) -> Iterator[dict[str, str]]:
    """The local control plane's environment (KUBECONFIG, tools on PATH)."""
    kubeconfig = cluster_up()
    env = {**Cluster.tools_env(), "KUBECONFIG": str(kubeconfig)}
    try:
        yield env
    finally:
        if keep:
            print(
                f"\nthe cluster keeps running: export KUBECONFIG={kubeconfig}; stop it: {CLUSTER_DIR}/down.sh"
            )
        else:
            cluster_down(check=True)


def wait_ready(env: dict[str, str], ready_pods: int = 0, deadline_s: float = 300) -> dict[str, Any]:
    """The tenant Ready for its current spec, with at least `ready_pods` worker pods Ready."""
    kubectl = find_tool("kubectl")
    status: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        nonlocal status
        sd: dict[str, Any] = json.loads(
            run(kubectl, "-n", TENANT_NS, "get", "sd", TENANT, "-o", "json", env=env)
        )
        status = sd.get("status", {})
        ok = (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == sd["metadata"]["generation"]
            and status.get("readyReplicas", 0) >= ready_pods
        )
        return sd if ok else None

    try:
        return wait_until(f"tenant {TENANT_NS}/{TENANT} Ready", ready, deadline_s, every=0.5)
    except WaitFailed:
        raise SystemExit(f"tenant not Ready after {deadline_s} s: {json.dumps(status, indent=2)}") from None


def example_tenant() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """examples/tenant-secrets.yaml's Secrets and examples/tenant.yaml's tenant, as a user has them."""
    examples = ROOT / "examples"
    secrets = [d for d in yaml.safe_load_all((examples / "tenant-secrets.yaml").read_text()) if d]
    tenant = next(d for d in yaml.safe_load_all((examples / "tenant.yaml").read_text()) if d)
    return secrets, tenant


async def converse(livekit: LiveKitServer, agent_name: str) -> Caller:
    room = f"demo-{uuid.uuid4().hex[:6]}"
    caller = Caller(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room))
    await caller.join()
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
        )
    printed = 0

    def show() -> bool:
        nonlocal printed
        for text in caller.transcripts[printed:]:
            print(f"      agent: {text}", flush=True)
        printed = len(caller.transcripts)
        return False

    async def until(what: str, predicate: Any, deadline_s: float = 90) -> None:
        await caller.wait_for(what, lambda: show() or predicate(), deadline_s)

    def asked(after: int) -> Any:
        """The agent's latest line (after the first `after`) asks the caller something, and it listens."""
        return lambda: (
            len(caller.transcripts) > after
            and caller.transcripts[-1].rstrip().endswith("?")
            and caller.agent_states[-1:] == ["listening"]
        )

    try:
        await until("the agent", lambda: bool(caller.agent_identity))
        print(f"      ({caller.agent_name} joined room {room})")
        await until("the greeting", asked(0))
        for i, text in enumerate(CALLER_SCRIPT):
            print(f"     caller: {text}", flush=True)
            heard = len(caller.transcripts)
            await caller.say(text)
            if i < len(CALLER_SCRIPT) - 1:
                await until("the agent's answer", asked(heard))
        await until("the hang-up", caller.disconnected.is_set)
        show()
    finally:
        await caller.leave()
    return caller


def local_servers(stack: ExitStack, host: str, real: bool) -> tuple[LiveKitServer, ThreadedServer | None]:
    """livekit-server --dev, and the scripted model server unless the real providers are used."""
    livekit = stack.enter_context(running_livekit_server(also_bind=(host,) if host != "127.0.0.1" else ()))
    print(f"      LiveKit: a local livekit-server --dev on {livekit.url_on(host)}")
    if real:
        print("      models: the real providers (OPENAI_API_KEY and DEEPGRAM_API_KEY are set)")
        return livekit, None
    models = ThreadedServer(host=host).start()
    stack.callback(models.stop)
    print(f"      models: the local scripted server {models.base_url} (set OPENAI_API_KEY and "
          "DEEPGRAM_API_KEY for the real ones)")  # fmt: skip
    return livekit, models


Servers = tuple[LiveKitServer, str, ThreadedServer | None]  # LiveKit, the agent to call, the local models


def on_pods(stack: ExitStack, env: dict[str, str], real: bool) -> Servers:
    """The operator and the worker in pods on the real node; the LiveKit server and agent to call."""
    node, kubectl = RealNode.from_lib(), find_tool("kubectl")
    node_ip, placement = node.ip, node.placement
    repository, _, tag = node.operator_image.rpartition(":")
    image = {"registry": "", "repository": repository, "tag": tag, "pullPolicy": "Never"}
    # The example tenant tolerates the real node's taint: the platform allows that toleration key.
    values = {
        "operator": {"image": image, **placement},
        "tenants": {"allowedTolerationKeys": [placement["tolerations"][0]["key"]]},
    }
    step("helm install the chart (CRD, RBAC, operator): the operator runs from its image on the real node")
    run(find_tool("helm"), "upgrade", "--install", RELEASE, CHART, "-n", RELEASE_NS, "--create-namespace",
        "--wait", "--timeout", "5m", "--values", "-", env=env, input=yaml.safe_dump(values))  # fmt: skip
    print(run(kubectl, "-n", RELEASE_NS, "get", "pods", "-o", "wide", env=env))

    step("local servers the pods reach on the node's bridge address")
    livekit, models = local_servers(stack, node_ip, real)
    secrets, tenant = example_tenant()
    spec = tenant["spec"]
    if models is not None:
        spec.update(local_models({"intro": spec["intro"], "story": spec["story"]}, models.base_url))
        for secret in secrets:  # the local servers take any key
            data = secret.get("stringData", {})
            for key in ("OPENAI_API_KEY", "DEEPGRAM_API_KEY"):
                if key in data:
                    data[key] = "local-demo-key"
    for secret in secrets:
        data = secret.get("stringData", {})
        if "LIVEKIT_API_KEY" in data:
            data.update(LIVEKIT_API_KEY=livekit.api_key, LIVEKIT_API_SECRET=livekit.api_secret)
    spec["livekit"]["url"] = livekit.url_on(node_ip)
    spec["worker"].update(image=node.worker_image, imagePullPolicy="Never", **placement)
    step("kubectl apply examples/tenant-secrets.yaml and examples/tenant.yaml, with this machine's "
         "servers, worker image and node filled in")  # fmt: skip
    run(kubectl, "apply", "-f", "-", env=env, input=yaml.safe_dump_all([*secrets, tenant]))
    wait_ready(env, ready_pods=1)
    print(run(kubectl, "-n", TENANT_NS, "get", "sd,deploy,pods", "-o", "wide", env=env))
    return livekit, spec["agentName"], models


def as_processes(stack: ExitStack, env: dict[str, str], real: bool, workdir: Path) -> Servers:
    """The fallback: the operator and one worker as local processes (the kwok nodes run no containers)."""
    step("helm install the chart (CRD, RBAC, operator)")
    run(find_tool("helm"), "upgrade", "--install", RELEASE, CHART, "-n", RELEASE_NS, "--create-namespace",
        "--wait", env=env)  # fmt: skip
    step("the operator, as a local process (fallback: no real node)")
    operator = OperatorProcess(env, workdir / "operator.log")
    stack.callback(operator.stop)
    operator.start()
    step("kubectl apply -f examples/tenant-secrets.yaml -f examples/tenant.yaml")
    kubectl = find_tool("kubectl")
    examples = ROOT / "examples"
    run(kubectl, "apply", "-f", examples / "tenant-secrets.yaml", "-f", examples / "tenant.yaml", env=env)
    wait_ready(env)
    print(run(kubectl, "-n", TENANT_NS, "get", "sd,deploy,pods,cm", env=env))

    sd = json.loads(run(kubectl, "-n", TENANT_NS, "get", "sd", TENANT, "-o", "json", env=env))
    config_map = config_map_name(TENANT, sd["status"]["configHash"])
    step(f"the worker, with the config the operator rendered into ConfigMap {config_map} (its revision)")
    cm = json.loads(run(kubectl, "-n", TENANT_NS, "get", "cm", config_map, "-o", "json", env=env))
    config: dict[str, Any] = json.loads(cm["data"]["tenant.json"])
    livekit, models = local_servers(stack, "127.0.0.1", real)
    config["livekit"]["url"] = livekit.url
    config["observability"]["metricsPort"] = free_port()
    extra_env: dict[str, str] = {}
    if models is not None:
        config = local_models(config, models.base_url)
        extra_env = {"OPENAI_API_KEY": "sk-local-demo", "DEEPGRAM_API_KEY": "dg-local-demo"}
    worker = WorkerProcess(config, livekit, workdir, extra_env=extra_env).start()
    stack.callback(worker.stop)
    worker.wait_registered()
    return livekit, config["agentName"], models


def main(keep_cluster: bool) -> None:
    real = bool(os.environ.get("OPENAI_API_KEY") and os.environ.get("DEEPGRAM_API_KEY"))
    workdir = Path(tempfile.mkdtemp(prefix="storyteller-demo-"))
    with ExitStack() as stack:
        step("local Kubernetes control plane with a real node (tests/cluster/up.sh --real-node)")
        env = stack.enter_context(cluster(keep_cluster))
        why_not = start_real_node(env)
        if why_not is None:
            livekit, agent_name, models = on_pods(stack, env, real)
        else:
            print(f"      FALLBACK: no real node ({why_not});")
            print("      the operator and the worker run as local processes instead of pods")
            livekit, agent_name, models = as_processes(stack, env, real, workdir)
        step(f"a call: the caller joins, {agent_name!r} is dispatched, they talk")
        caller = asyncio.run(converse(livekit, agent_name))
        print(f"\n      room deleted by the agent: {caller.disconnected.is_set()}; logs in {workdir}")
        if models is not None:
            realtime = models.recorder.realtime
            calls = [name for name, _ in realtime.function_calls]
            print(f"      heard by speech-to-text: {models.recorder.transcribed}")
            print(f"      heard by the realtime model: {realtime.heard}; its tool calls: {calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep-cluster", action="store_true", help="leave the local cluster running")
    logging.basicConfig(level=logging.CRITICAL)
    warnings.filterwarnings("ignore", message="The HMAC key is")  # livekit-server --dev's short secret
    try:
        main(parser.parse_args().keep_cluster)
    except ScriptFailed as e:  # up.sh or down.sh: what it printed, without a traceback
        raise SystemExit(f"failed: {e}") from None

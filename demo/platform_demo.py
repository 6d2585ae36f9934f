"""`make demo`: the whole platform on this machine, no cloud account needed.

1. a local Kubernetes control plane (tests/cluster/up.sh; kind where Docker works);
2. the Helm chart installed (CRD, RBAC, operator Deployment) and the operator running as a local
   process with the chart's ServiceAccount (the local cluster's pods run no containers);
3. examples/tenant-secrets.yaml and examples/tenant.yaml applied, until the tenant is Ready;
4. a worker process running the very config the operator rendered into the tenant's ConfigMap, on a
   local `livekit-server --dev`; the models are a local scripted server (TTS by espeak-ng), unless
   OPENAI_API_KEY and DEEPGRAM_API_KEY are set, in which case the real providers are used;
5. a caller joins a room, the tenant's agent is dispatched to it, and they talk (the caller's voice is
   espeak-ng): greeting, name and city, handoff, story, goodbye. The transcript is printed.

Everything the demo started is stopped at the end; `--keep-cluster` leaves the cluster running
(stop it with tests/cluster/down.sh).
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
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livekit import api  # noqa: E402

from demo.text_session import local_models  # noqa: E402
from storyteller_operator.render import config_map_name  # noqa: E402
from tests.e2e.caller import Caller, caller_token  # noqa: E402
from tests.e2e.worker_process import WorkerProcess  # noqa: E402
from tests.fakes.openai_server import ThreadedServer  # noqa: E402
from tests.fixtures.cluster import LiveKitServer, find_tool, free_port, running_livekit_server  # noqa: E402

CLUSTER = ROOT / "tests" / "cluster"
CHART = ROOT / "helm" / "storyteller"
RELEASE, RELEASE_NS = "storyteller", "storyteller-system"
TENANT, TENANT_NS = "acme", "storyteller-example"
CALLER_SAYS = ["My name is Ada and I live in Lisbon", "No thanks, that is all"]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> str:
    proc = subprocess.run([str(a) for a in argv], env=env, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, argv))}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


@contextmanager
def cluster(keep: bool) -> Iterator[dict[str, str]]:
    """The local control plane's environment (KUBECONFIG, tools on PATH)."""
    kubeconfig = Path(run(CLUSTER / "up.sh").strip().splitlines()[-1])
    env_lines = run("bash", "-c", f'source "{CLUSTER}/lib.sh"; printf "%s" "$TOOLS_PATH"')
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{env_lines}:{os.environ['PATH']}"}
    try:
        yield env
    finally:
        if keep:
            print(f"\nthe cluster keeps running: export KUBECONFIG={kubeconfig}; stop it: {CLUSTER}/down.sh")
        else:
            run(CLUSTER / "down.sh")


@contextmanager
def operator(env: dict[str, str], workdir: Path) -> Iterator[None]:
    log = (workdir / "operator.log").open("wb")
    health = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "storyteller_operator", "--liveness", f"http://127.0.0.1:{health}/healthz",
         "--metrics-port", str(free_port()), "--metrics-address", "127.0.0.1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_ready(env: dict[str, str], deadline_s: float = 120) -> dict[str, Any]:
    kubectl = find_tool("kubectl")
    deadline = time.monotonic() + deadline_s
    while True:
        sd: dict[str, Any] = json.loads(
            run(kubectl, "-n", TENANT_NS, "get", "sd", TENANT, "-o", "json", env=env)
        )
        status = sd.get("status", {})
        if (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == sd["metadata"]["generation"]
        ):
            return sd
        if time.monotonic() > deadline:
            raise SystemExit(f"tenant not Ready after {deadline_s} s: {json.dumps(status, indent=2)}")
        time.sleep(0.5)


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
        for i, text in enumerate(CALLER_SAYS):
            print(f"     caller: {text}", flush=True)
            heard = len(caller.transcripts)
            await caller.say(text)
            if i < len(CALLER_SAYS) - 1:
                await until("the agent's answer", asked(heard))
        await until("the hang-up", caller.disconnected.is_set)
        show()
    finally:
        await caller.leave()
    return caller


def main(keep_cluster: bool) -> None:
    real = bool(os.environ.get("OPENAI_API_KEY") and os.environ.get("DEEPGRAM_API_KEY"))
    workdir = Path(tempfile.mkdtemp(prefix="storyteller-demo-"))
    with ExitStack() as stack:
        step("local Kubernetes control plane (tests/cluster/up.sh)")
        env = stack.enter_context(cluster(keep_cluster))
        step("helm install the chart (CRD, RBAC, operator)")
        run(find_tool("helm"), "upgrade", "--install", RELEASE, CHART, "-n", RELEASE_NS, "--create-namespace",
            "--wait", env=env)  # fmt: skip
        step("the operator, as a local process (the local cluster's pods run no containers)")
        stack.enter_context(operator(env, workdir))
        step("kubectl apply -f examples/tenant-secrets.yaml -f examples/tenant.yaml")
        kubectl = find_tool("kubectl")
        examples = ROOT / "examples"
        run(kubectl, "apply", "-f", examples / "tenant-secrets.yaml", "-f", examples / "tenant.yaml", env=env)
        wait_ready(env)
        print(run(kubectl, "-n", TENANT_NS, "get", "sd,deploy,pods,cm", env=env))

        step(f"the worker, with the config the operator rendered into ConfigMap {config_map_name(TENANT)}")
        cm = json.loads(
            run(kubectl, "-n", TENANT_NS, "get", "cm", config_map_name(TENANT), "-o", "json", env=env)
        )
        config: dict[str, Any] = json.loads(cm["data"]["tenant.json"])
        livekit = stack.enter_context(running_livekit_server())
        named = config["livekit"]["url"]
        print(f"      LiveKit: {livekit.url} (a local livekit-server --dev; the tenant names {named})")
        config["livekit"]["url"] = livekit.url
        config["observability"]["metricsPort"] = free_port()
        extra_env: dict[str, str] = {}
        if real:
            print("      models: the real providers (OPENAI_API_KEY and DEEPGRAM_API_KEY are set)")
        else:
            models = ThreadedServer().start()
            stack.callback(models.stop)
            models.recorder.stt_script.extend(CALLER_SAYS)
            config = local_models(config, models.base_url)
            print(f"      models: the local scripted server {models.base_url} (set OPENAI_API_KEY and "
                  "DEEPGRAM_API_KEY for the real ones)")  # fmt: skip
            extra_env = {"OPENAI_API_KEY": "sk-local-demo", "DEEPGRAM_API_KEY": "dg-local-demo"}
        worker = WorkerProcess(config, livekit, workdir, extra_env=extra_env).start()
        stack.callback(worker.stop)
        worker.wait_registered()

        step(f"a call: the caller joins, {config['agentName']!r} is dispatched, they talk")
        caller = asyncio.run(converse(livekit, config["agentName"]))
        print(f"\n      room deleted by the agent: {caller.disconnected.is_set()}; logs in {workdir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep-cluster", action="store_true", help="leave the local cluster running")
    logging.basicConfig(level=logging.CRITICAL)
    warnings.filterwarnings("ignore", message="The HMAC key is")  # livekit-server --dev's short secret
    main(parser.parse_args().keep_cluster)

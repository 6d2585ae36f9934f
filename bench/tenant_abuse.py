"""Tenants that do what they can to the operator's memory, and a calm tenant that must still scale.

The hostile-tenant issue's abuse run: --tenants tenants (40) in one namespace, each with the longest
instructions its spec allows (persona 8 KiB, intro and story 16 KiB each: a ~40 KiB config) and
revisionHistoryLimit 100, edited --edits times each (100): every edit is a new config, so a new revision,
a new immutable ConfigMap kept with the history, and a rollout. Beside them, one calm tenant in a
namespace of its own. While the edits run, --load-steps times, one of the calm tenant's pods starts
reporting a full pool (as in bench/tenants.py) and the time until the operator grows its worker Deployment
is one step: it should take at most one recheck interval plus a reconcile, abuse or not.

Runs against the local control plane (started here when none answers) with the chart's CRD and RBAC and
the operator as a local process (admin kubeconfig, --recheck-seconds given). Prints:
   edits, edits/s          the merge patches sent (8 at a time) and their rate
   converged s             from the first edit until every tenant reports its last generation
   RSS MiB peak / end      the operator's VmRSS, sampled every 0.5 s (the chart's limit is 512 MiB)
   exited                  whether the operator process ended on its own (a crash, an OOM kill)
   ConfigMaps              the abusers' config revisions left in the API server (what history keeps)
   calm scale-up s         each step, p50 and max, and how many missed --load-deadline

    .venv/bin/python bench/tenant_abuse.py [--tenants 40] [--edits 100] [--recheck-seconds 5]
        [--load-steps 5] [--plane N]

The local cluster is shared: hold its lock, `flock /tmp/storyteller-cluster.lock .venv/bin/python
bench/tenant_abuse.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: bench.tenants

from bench.tenants import (
    GROUP,
    PLURAL,
    POOL,
    REPO,
    VERSION,
    WORKER,
    Load,
    install_chart_without_operator,
    kubectl,
    load_step,
    operator_env,
    rss_mib,
)
from storyteller_devkit.cluster import local_cluster, reachable
from storyteller_devkit.operator_process import OperatorProcess
from storyteller_devkit.real_platform import tenant_secret

ABUSE_NS, CALM_NS, CALM = "bench-abuse", "bench-calm", "calm"
LIMITS = {"persona": 8192, "intro": 16384, "story": 16384}  # the spec's max_length of each
RSS_EVERY_S = 0.5
PATCHERS = 8


def text(n: int, edit: int) -> str:
    """n characters, different for every edit (a new config, so a new revision)."""
    word = f"edit{edit} "
    return (word * (n // len(word) + 1))[:n]


def tenant(ns: str, name: str, history: int, edit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StorytellerDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "livekit": {
                "url": f"ws://livekit.{ns}.example.test:7880",
                "credentialsSecret": "livekit-credentials",
            },
            "providerSecrets": ["openai"],
            "pool": dict(POOL),
            "worker": WORKER,
            "revisionHistoryLimit": history,
            **prompts(edit),
        },
    }


def prompts(edit: int) -> dict[str, Any]:
    return {
        "persona": text(LIMITS["persona"], edit),
        "intro": {"instructions": text(LIMITS["intro"], edit)},
        "story": {"instructions": text(LIMITS["story"], edit)},
    }


def namespace(ns: str, tenants: list[dict[str, Any]]) -> str:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        tenant_secret(
            ns, "livekit-credentials", {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"}
        ),
        tenant_secret(ns, "openai", {"OPENAI_API_KEY": "sk-bench"}),
        *tenants,
    ]
    return yaml.safe_dump_all(docs)


def converged(custom: Any, ns: str, deadline_s: float) -> float:
    """Seconds until every tenant of `ns` reports its current generation (NaN past the deadline)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        if items and all(
            (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"] for i in items
        ):
            return time.monotonic() - started
        time.sleep(1.0)
    return float("nan")


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.samples = pid, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            with contextlib.suppress(OSError, ValueError):
                self.peak = max(self.peak, rss_mib(self.pid))
                self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=40)
    parser.add_argument("--edits", type=int, default=100, help="edits per tenant")
    parser.add_argument("--recheck-seconds", type=float, default=5)
    parser.add_argument("--load-steps", type=int, default=5, help="calm tenant scale-ups during the edits")
    parser.add_argument("--load-deadline", type=float, default=60)
    parser.add_argument("--deadline", type=float, default=900, help="seconds to converge after the edits")
    parser.add_argument("--plane", type=int, default=0, help="which local control plane (0: the shared one)")
    args = parser.parse_args()
    with local_cluster(up_timeout=600, plane=args.plane) as cluster:
        kubeconfig = cluster.kubeconfig
        if not reachable(kubeconfig):
            print(f"cluster at {kubeconfig} does not answer", file=sys.stderr)
            return 1
        return run(kubeconfig, args)


def run(kubeconfig: Path, args: argparse.Namespace) -> int:
    install_chart_without_operator(kubeconfig)
    log_path = REPO / ".state" / "bench-abuse-operator.log"  # git-ignored
    log_path.parent.mkdir(exist_ok=True)
    log_path.unlink(missing_ok=True)
    op = OperatorProcess(
        operator_env(kubeconfig, ""),
        log_path,
        ["--log-level", "warning", "--recheck-seconds", f"{args.recheck_seconds:g}"],
    ).start()
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api)
    names = [f"a{i:02d}" for i in range(args.tenants)]
    try:
        calm = tenant(CALM_NS, CALM, 10)
        calm["spec"]["pool"]["maxReplicas"] = args.load_steps + 2  # room to grow at every step
        kubectl(kubeconfig, "apply", "-f", "-", input=namespace(CALM_NS, [calm]))
        abusers = [tenant(ABUSE_NS, n, 100) for n in names]
        kubectl(kubeconfig, "apply", "-f", "-", input=namespace(ABUSE_NS, abusers), timeout=600)
        ready_s = converged(custom, ABUSE_NS, args.deadline)
        print(f"operator log: {log_path}\n{args.tenants} abusers reconciled in {ready_s:.1f} s; "
              f"RSS {rss_mib(op.pid):.1f} MiB")  # fmt: skip
        rss = RssSampler(op.pid)
        load = Load()
        done = threading.Event()

        def calm_steps() -> None:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            for _ in range(args.load_steps):
                if done.is_set():
                    return
                # Each step reports one more pod's worth of sessions than the pool has: it grows by one.
                load_step(apps, core, CALM_NS, CALM, args.load_deadline, load)

        def edit(pair: tuple[int, str]) -> None:
            n, name = pair
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, ABUSE_NS, PLURAL, name, {"spec": prompts(n)}
            )

        started = time.monotonic()
        steps = threading.Thread(target=calm_steps, daemon=True)
        steps.start()
        with ThreadPoolExecutor(PATCHERS) as pool:
            list(pool.map(edit, itertools.product(range(1, args.edits + 1), names)))
        sent_s = time.monotonic() - started
        settle_s = converged(custom, ABUSE_NS, args.deadline)
        done.set()
        steps.join()
        rss.stop()
        end_rss = rss_mib(op.pid)
        exited = op.proc is not None and op.proc.poll() is not None
        cms = len(client.CoreV1Api(api).list_namespaced_config_map(ABUSE_NS).items)
        edits = args.edits * args.tenants
        print(
            f"edits {edits} in {sent_s:.1f} s ({edits / sent_s:.1f}/s); "
            f"converged {settle_s:.1f} s after the last"
        )
        print(
            f"operator RSS MiB: peak {rss.peak:.1f} ({rss.samples} samples), end {end_rss:.1f}; "
            f"exited: {exited}"
        )
        print(f"abusers' ConfigMaps left: {cms}")
        seconds = " ".join(f"{s:.2f}" for s in load.seconds) or "-"
        p50 = statistics.median(load.seconds) if load.seconds else float("nan")
        worst = max(load.seconds) if load.seconds else float("nan")
        print(
            f"calm scale-up s: {seconds} (p50 {p50:.2f}, max {worst:.2f}, "
            f"timeouts {load.timeouts}/{load.steps})"
        )
        for why in load.skipped:
            print(f"  step skipped: {why}")
        print(
            f"summary tenants={args.tenants} edits={edits} rss_peak_mib={rss.peak:.1f} "
            f"rss_end_mib={end_rss:.1f} "
            f"exited={exited} configmaps={cms} calm_p50_s={p50:.2f} calm_max_s={worst:.2f} "
            f"calm_timeouts={load.timeouts}/{load.steps} recheck_s={args.recheck_seconds:g}"
        )
        return 0
    finally:
        op.stop()
        for ns in (ABUSE_NS, CALM_NS):
            kubectl(kubeconfig, "delete", "namespace", ns, "--ignore-not-found", "--wait=false")


if __name__ == "__main__":
    sys.exit(main())

"""N tenants against one operator: time to all Ready, then the steady state and the scale-up reaction.

Runs against the local control plane (tests/cluster/up.sh; started here when none answers, and stopped
again at the end) or any cluster given with --kubeconfig / $STORYTELLER_KUBECONFIG. Installs the chart
(CRD + RBAC, operator Deployment disabled) and runs the operator as a local process (--recheck-seconds
given explicitly, so "one recheck interval" is known). Then, for each size in --sizes:

1. Ready. Creates a namespace with the Secrets and N tenants in one `kubectl apply` and polls the tenants
   every 0.5 s until each reports phase Ready for its current generation.
   apply s        the `kubectl apply` itself (part of every figure below)
   reconciled s   until every tenant was first reconciled (has a status): the operator's own share
   all Ready s    until the last tenant was Ready, p50 Ready s the median tenant (both from the apply)
   RSS MiB        the operator's resident memory then
   On the local control plane the pods are kwok fakes, so Ready includes kwok's (sometimes slow) pod
   status updates.

2. Steady state. After --settle-seconds, a window of --steady-seconds in which the bench itself sends
   nothing to the API server (no polling at all), so the window holds only what the operator, kwok and
   the control plane do. From the kube-apiserver's `apiserver_request_total` (its /metrics, scraped with
   the kubeconfig's credentials at both ends of the window):
   API req/s      every completed request except the long-running ones (WATCH, CONNECT), all clients.
                  On the local control plane it includes the endpoint and endpoint-slice controllers
                  retrying the tenants' metrics Services for ever (PUT endpoints/endpointslices, PATCH
                  events FailedToUpdateEndpoint): kwok's pod addresses are loopback ones, which Endpoints
                  may not hold. Not the operator's; they are writes, so no read figure counts them.
   reads/s        the GET and LIST part of it; `reads by resource` below lists the top resources
                  (path:/api and path:/apis are discovery), `writes by verb and resource` the rest
   reads/tenant/min  GET+LIST on the resources a tenant's reconcile touches (storytellerdeployments,
                  deployments, pods, secrets, configmaps, services, serviceaccounts,
                  poddisruptionbudgets, networkpolicies) / tenants / window minutes. The controllers and
                  kwok read through informers (watches), so in a steady state these are the operator's.
   watch ends/s   WATCH requests are long-running: the counter counts one when it ends (a watch timing
                  out and being re-established), not while it is open; `open watches` is the
                  apiserver_longrunning_requests gauge at the end of the window (all clients).
   op CPU %       the operator process's utime+stime (all its threads, /proc/<pid>/stat) over the
                  window, in % of one core; RSS MiB its VmRSS at the end of the window
   The operator's own reconciles in the window (storyteller_operator_reconcile_total) are listed too.
   During the window no pod answers `GET :8081/worker` (kwok runs no containers), so the operator's
   session requests are refused at once and every tenant's pool is held (WorkersNotReporting).

3. Scale-up reaction, with all the tenants still there: --load-steps tenants spread over the set, one
   at a time. For each, one of its Running pods (kwok gives pods loopback addresses, 127.77.0.0/16)
   starts answering `GET <podIP>:8081/worker` with its pool's full capacity (sessionsPerWorker ×
   replicas active jobs, as the livekit-agents framework prints it); the time from then until the
   operator raises the worker Deployment's spec.replicas (polled every 0.1 s, --load-deadline) is one
   step. Prints p50 and p95 (nearest rank) of the steps that scaled, and how many timed out. Expect up
   to one recheck interval plus a reconcile. Each step first waits a different fraction of the recheck
   interval (a golden-ratio sequence), so that the steps meet the operator's recheck loop at phases
   spread over it: started back to back, each would begin just after a recheck and measure the worst
   case every time.

Prints the figures, then one `summary` line per size for a note; asserts nothing. The namespace is
deleted at the end of each size.

    .venv/bin/python bench/tenants.py [--sizes 1 50 200] [--steady-seconds 60] [--settle-seconds 20]
        [--load-steps 20] [--recheck-seconds 5] [--operator-pythonpath DIR[:DIR]]
        [--hanging N] [--slow-prometheus SECONDS]

--hanging N: during the scale-up steps, N other tenants' pods accept connections on :8081 and never
answer; --slow-prometheus S: the operator's --prometheus-url is a local server that answers every query
after S seconds (every tenant's revision figures are read there). Neither may delay another tenant's
scale-up beyond one recheck interval (the hostile-tenant issue's fairness figure).

--operator-pythonpath is prepended to the operator process's PYTHONPATH, to time another checkout's
operator with the same bench (`--operator-pythonpath /tmp/before/operator:/tmp/before/api`); the chart
(CRD, RBAC) stays this checkout's. The operator source that ran is printed.

Goals (the scaling issue): 1,000 tenants all Ready ≤ 120 s and 200 ≤ 30 s; in the steady state ≤ 1 API
read per tenant per minute, operator CPU ≤ 10 % of one core and RSS ≤ 250 MB; scale-up p95 ≤ 5 s at
1,000 tenants.

The local cluster is shared: hold its lock, `flock /tmp/storyteller-cluster.lock .venv/bin/python
bench/tenants.py ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from storyteller_devkit.cluster import find_tool, local_cluster, reachable
from storyteller_devkit.operator_process import OperatorProcess
from storyteller_devkit.real_platform import tenant_secret

REPO = Path(__file__).resolve().parents[1]

GROUP, VERSION, PLURAL = "storyteller.dev", "v1alpha1", "storytellerdeployments"
# The bench's tenant pool, explicit so the load steps know the capacity: idle, ceil((0 + 2 spare) / 4)
# = 1 pod; full (4 sessions on it), ceil((4 + 2) / 4) = 2 pods.
SESSIONS_PER_WORKER = 4
# The local cluster's two kwok nodes hold 110 pods each: the bench adds nodes of its own for the larger
# sizes (a pod per tenant, plus the load steps' scale-ups), and asks little of each, since kwok pods run
# nothing and only the scheduler reads their requests.
PODS_PER_NODE = 110
BENCH_NODE_LABEL = "storyteller.dev/bench-node"
WORKER = {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}
POOL = {
    "minReplicas": 1,
    "maxReplicas": 3,
    "sessionsPerWorker": SESSIONS_PER_WORKER,
    "spareSessions": 2,
    "drainTimeoutSeconds": 1,
}
WORKER_STATUS_PORT = 8081  # the worker's `GET /worker` (storyteller_api.contract.HEALTH_PORT)
READY_POLL_S = 0.5
LOAD_POLL_S = 0.1
GOLDEN = (math.sqrt(5) - 1) / 2  # phase offsets of the load steps, as fractions of the recheck interval
SLOW_KUBECTL_S = 900  # applying or deleting a namespace of 1,000 tenants (and their children)
TENANT_RESOURCES = frozenset(
    {
        PLURAL,
        "deployments",
        "pods",
        "secrets",
        "configmaps",
        "services",
        "serviceaccounts",
        "poddisruptionbudgets",
        "networkpolicies",
    }
)
READ_VERBS = frozenset({"GET", "LIST"})
LONG_RUNNING_VERBS = frozenset({"WATCH", "WATCHLIST", "CONNECT"})
TOP_RESOURCES = 8
NAN = float("nan")


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(find_tool("kubectl")), "--kubeconfig", str(kubeconfig), *args],
        input=input, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


# ------------------------------------------------------------------------------------ the operator process


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return NAN


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, all its threads (/proc/<pid>/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def operator_env(kubeconfig: Path, pythonpath: str) -> dict[str, str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
    return env


def operator_source(env: dict[str, str]) -> str:
    """Where `python -m storyteller_operator` imports the operator (and its API package) from with `env`."""
    code = (
        "import storyteller_operator as o, storyteller_api as a; "
        "print(o.__file__, getattr(o, '__version__', '?'), a.__file__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"(cannot import: {proc.stderr.strip().splitlines()[-1:]})"
    op_file, version, api_file = proc.stdout.split()
    return f"{op_file} (version {version}; api {api_file})"


# ---------------------------------------------------------------------------------- Prometheus text samples

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
Labels = tuple[tuple[str, str], ...]


def samples(text: str, name: str) -> dict[Labels, float]:
    """Every sample of metric `name` in Prometheus text: its (sorted) labels → value."""
    out: dict[Labels, float] = {}
    prefix = name + "{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, _, value = line[len(prefix) :].rpartition("} ")
            out[tuple(sorted(_LABEL.findall(labels)))] = float(value.split()[0])
        elif line.startswith(name + " "):
            out[()] = float(line.split()[1])
    return out


def deltas(
    before: Mapping[Labels, float], after: Mapping[Labels, float]
) -> list[tuple[dict[str, str], float]]:
    """Counter increases per label set (a series that is new counts from 0)."""
    return [(dict(k), v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0) > 0]


def apiserver_metrics(kubeconfig: Path) -> str:
    return kubectl(kubeconfig, "get", "--raw", "/metrics", timeout=60)


def resource_of(labels: Mapping[str, str]) -> str:
    """resource[/subresource]; a request for a non-resource path (discovery: /api, /apis) carries the path
    in `subresource`."""
    resource, sub = labels.get("resource"), labels.get("subresource")
    if not resource:
        return f"path:{sub or '?'}"
    return f"{resource}/{sub}" if sub else resource


def top(counts: Mapping[str, float], k: int = TOP_RESOURCES) -> list[tuple[str, float]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


# ------------------------------------------------------------------------------------------- steady state


@dataclass
class Options:
    deadline_s: float
    settle_s: float
    steady_s: float
    load_steps: int
    load_deadline_s: float
    recheck_s: float
    hanging: int = 0  # tenants whose pods accept and never answer during the scale-up steps
    slow_prometheus_s: float = 0.0  # a Prometheus answering after this long (0: none)


@dataclass
class Steady:
    window_s: float = NAN
    requests_per_s: float = NAN  # completed, not long-running
    reads_per_s: float = NAN
    reads_per_tenant_min: float = NAN
    watch_ends_per_s: float = NAN
    open_watches: float = NAN
    cpu_pct: float = NAN
    rss_mib: float = NAN
    reads_by_resource: dict[str, float] = field(default_factory=dict)  # per second
    writes: dict[str, float] = field(default_factory=dict)  # "VERB:resource" → per second
    open_watches_by_resource: dict[str, float] = field(default_factory=dict)
    reconciles: dict[str, float] = field(default_factory=dict)  # result → count in the window
    # "VERB:resource" → count in the window, by the operator's own counter (newer operators only)
    operator_requests: dict[str, float] = field(default_factory=dict)


def steady_state(kubeconfig: Path, op: OperatorProcess, tenants: int, window_s: float) -> Steady:
    """The window: a scrape of the API server's and the operator's counters at both ends, nothing between."""
    api0, op0 = apiserver_metrics(kubeconfig), op.metrics()
    cpu0, t0 = cpu_seconds(op.pid), time.monotonic()
    time.sleep(window_s)  # the measured window itself: the bench sends nothing meanwhile
    cpu1, t1 = cpu_seconds(op.pid), time.monotonic()
    api1, op1 = apiserver_metrics(kubeconfig), op.metrics()
    s = Steady(window_s=t1 - t0, cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0), rss_mib=rss_mib(op.pid))

    requests = deltas(samples(api0, "apiserver_request_total"), samples(api1, "apiserver_request_total"))
    total = reads = tenant_reads = watch_ends = 0.0
    by_resource: dict[str, float] = defaultdict(float)
    writes: dict[str, float] = defaultdict(float)
    for labels, n in requests:
        verb = labels.get("verb", "")
        if verb in LONG_RUNNING_VERBS:
            watch_ends += n
            continue
        total += n
        if verb in READ_VERBS:
            reads += n
            by_resource[f"{verb}:{resource_of(labels)}:{labels.get('scope', '')}"] += n
            if labels.get("resource") in TENANT_RESOURCES:
                tenant_reads += n
        else:
            writes[f"{verb}:{resource_of(labels)}"] += n
    w = s.window_s
    s.requests_per_s, s.reads_per_s, s.watch_ends_per_s = total / w, reads / w, watch_ends / w
    s.reads_per_tenant_min = tenant_reads / tenants / (w / 60) if tenants else NAN
    s.reads_by_resource = {r: n / w for r, n in by_resource.items()}
    s.writes = {k: n / w for k, n in writes.items()}

    open_by_resource: dict[str, float] = defaultdict(float)
    for key, n in samples(api1, "apiserver_longrunning_requests").items():
        labels = dict(key)
        if labels.get("verb") == "WATCH":
            open_by_resource[resource_of(labels)] += n
    s.open_watches = sum(open_by_resource.values())
    s.open_watches_by_resource = dict(open_by_resource)

    for labels, n in deltas(
        samples(op0, "storyteller_operator_reconcile_total"),
        samples(op1, "storyteller_operator_reconcile_total"),
    ):
        s.reconciles[labels.get("result", "?")] = n
    for labels, n in deltas(
        samples(op0, "storyteller_operator_api_requests_total"),
        samples(op1, "storyteller_operator_api_requests_total"),
    ):
        if n:
            s.operator_requests[f"{labels.get('verb', '?')}:{labels.get('resource', '?')}"] = n
    return s


# ------------------------------------------------------------------------------------------- load steps


class HangingPod:
    """A pod's `:8081` that accepts connections and never answers (a tenant's broken or hostile worker)."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.create_server((ip, WORKER_STATUS_PORT), backlog=64)
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # read nothing, answer nothing

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


class SlowPrometheus:
    """A Prometheus that takes `delay_s` to answer any query (an empty vector), on loopback."""

    def __init__(self, delay_s: float) -> None:
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay_s)  # the slowness being benchmarked, not a wait for anything
                with contextlib.suppress(OSError):  # the operator gave up first: its deadline is shorter
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeWorker:
    """`GET /worker` on one pod's own address, with `active_jobs` sessions, as livekit-agents 1.8 answers
    it (WorkerInfo as proto3 JSON: active_jobs is a float)."""

    def __init__(self, ip: str, active_jobs: int) -> None:
        body = json.dumps(
            {
                "agent_name": "storyteller",
                "worker_type": "JT_ROOM",
                "active_jobs": float(active_jobs),
                "sdk_version": "1.8.0",
                "project_type": "python",
            }
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/worker"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((ip, WORKER_STATUS_PORT), Handler)  # listening from here on
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Load:
    steps: int = 0
    seconds: list[float] = field(default_factory=list)  # the steps that scaled
    timeouts: int = 0
    skipped: list[str] = field(default_factory=list)  # why a step could not run

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) if self.seconds else NAN

    @property
    def p95(self) -> float:
        """Nearest rank."""
        if not self.seconds:
            return NAN
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def spread(n: int, k: int) -> list[int]:
    """k distinct indices out of range(n), evenly spread."""
    k = min(k, n)
    return [int((i + 0.5) * n / k) for i in range(k)]


def running_pod_ip(core: Any, ns: str, selector: Mapping[str, str]) -> str | None:
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    for pod in core.list_namespaced_pod(ns, label_selector=labels).items:
        if pod.status.phase == "Running" and pod.status.pod_ip and not pod.metadata.deletion_timestamp:
            return str(pod.status.pod_ip)
    return None


def load_step(apps: Any, core: Any, ns: str, tenant: str, deadline_s: float, load: Load) -> None:
    """One tenant's pod reports a full pool; the seconds until its worker Deployment grows."""
    name = f"{tenant}-worker"  # render.worker_name: the Deployment shares the tenant's name + "-worker"
    dep = apps.read_namespaced_deployment(name, ns)
    before = dep.spec.replicas or 0
    ip = running_pod_ip(core, ns, dep.spec.selector.match_labels or {})
    if ip is None:
        load.skipped.append(f"{tenant}: no Running pod with an address")
        return
    if not ipaddress.ip_address(ip).is_loopback:
        load.skipped.append(f"{tenant}: pod address {ip} is not on loopback")
        return
    worker = FakeWorker(ip, SESSIONS_PER_WORKER * max(before, 1))
    try:
        started = time.monotonic()
        load.steps += 1
        while time.monotonic() - started < deadline_s:
            replicas = apps.read_namespaced_deployment(name, ns).spec.replicas or 0
            if replicas > before:
                load.seconds.append(time.monotonic() - started)
                return
            time.sleep(LOAD_POLL_S)
        load.timeouts += 1
    finally:
        worker.close()


def scale_up(api: Any, ns: str, n: int, opts: Options) -> Load:
    """The steps one after another. A step that ends has just seen a recheck, so the next one would start
    right after a recheck too and measure nearly a whole interval every time: each waits a different
    fraction of the interval first (a golden-ratio sequence), so the steps meet the recheck loop at phases
    spread over it, as real load does."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    load = Load()
    steps = spread(n, opts.load_steps)
    hanging = [hang(core, ns, f"t{i:03d}") for i in range(n) if i not in steps][: opts.hanging]
    try:
        for k, i in enumerate(steps):
            time.sleep((k * GOLDEN) % 1 * opts.recheck_s)  # the phase offset, not a wait for anything
            load_step(apps, core, ns, f"t{i:03d}", opts.load_deadline_s, load)
    finally:
        for pod in hanging:
            if pod is not None:
                pod.close()
    if opts.hanging:
        print(f"  tenants whose pods hang during the steps: {sum(p is not None for p in hanging)}")
    return load


def hang(core: Any, ns: str, tenant: str) -> HangingPod | None:
    """The tenant's running pod accepts and never answers from now on."""
    ip = running_pod_ip(core, ns, {"app.kubernetes.io/instance": tenant})
    return HangingPod(ip) if ip and ipaddress.ip_address(ip).is_loopback else None


# ------------------------------------------------------------------------------------------------ a size


def manifests(ns: str, n: int) -> str:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        tenant_secret(
            ns, "livekit-credentials", {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"}
        ),
        tenant_secret(ns, "openai", {"OPENAI_API_KEY": "sk-bench"}),
    ]
    for i in range(n):
        docs.append(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "StorytellerDeployment",
                "metadata": {"name": f"t{i:03d}", "namespace": ns},
                "spec": {
                    "livekit": {
                        "url": "ws://livekit.example.test:7880",
                        "credentialsSecret": "livekit-credentials",
                    },
                    "providerSecrets": ["openai"],
                    "pool": dict(POOL),
                    "worker": WORKER,
                },
            }
        )
    return yaml.safe_dump_all(docs)


def bench_nodes(count: int) -> str:
    """`count` more kwok nodes, as tests/cluster/up.sh makes its own."""
    return yaml.safe_dump_all(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-bench-{i}",
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": f"kwok-bench-{i}",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    BENCH_NODE_LABEL: "true",
                },
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "512Gi", "pods": str(PODS_PER_NODE)},
                "capacity": {"cpu": "64", "memory": "512Gi", "pods": str(PODS_PER_NODE)},
            },
        }
        for i in range(count)
    )


def wait_ready(api: Any, kubeconfig: Path, ns: str, n: int, op_pid: int, deadline: float) -> dict[str, float]:
    custom = client.CustomObjectsApi(api)
    started = time.monotonic()
    kubectl(kubeconfig, "apply", "-f", "-", input=manifests(ns, n), timeout=SLOW_KUBECTL_S)
    applied = time.monotonic() - started
    first_reconciled: dict[str, float] = {}
    ready_at: dict[str, float] = {}
    while len(ready_at) < n and time.monotonic() - started < deadline:
        listed: dict[str, Any] = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)  # type: ignore[assignment]
        items = listed["items"]
        now = time.monotonic() - started
        for item in items:
            name, st = item["metadata"]["name"], item.get("status") or {}
            if "observedGeneration" in st:
                first_reconciled.setdefault(name, now)
            if st.get("phase") == "Ready" and st.get("observedGeneration") == item["metadata"]["generation"]:
                ready_at.setdefault(name, now)
        if len(ready_at) < n:
            time.sleep(READY_POLL_S)
    times = sorted(ready_at.values())
    return {
        "tenants": n,
        "apply_s": applied,
        "all_reconciled_s": max(first_reconciled.values()) if len(first_reconciled) == n else NAN,
        "all_ready_s": times[-1] if len(times) == n else NAN,
        "ready_p50_s": statistics.median(times) if times else NAN,
        "ready_count": len(times),
        "operator_rss_mib": rss_mib(op_pid),
    }


def run_size(
    api: Any, kubeconfig: Path, n: int, op: OperatorProcess, opts: Options
) -> tuple[dict[str, float], Steady, Load]:
    ns = f"bench-tenants-{n}"
    try:
        ready = wait_ready(api, kubeconfig, ns, n, op.pid, opts.deadline_s)
        print(f"{'tenants':>8} {'apply s':>8} {'reconciled s':>13} {'all Ready s':>12} {'p50 Ready s':>12} "
              f"{'Ready':>6} {'RSS MiB':>8}")  # fmt: skip
        print(
            f"{ready['tenants']:>8} {ready['apply_s']:>8.1f} {ready['all_reconciled_s']:>13.1f} "
            f"{ready['all_ready_s']:>12.1f} {ready['ready_p50_s']:>12.1f} {ready['ready_count']:>6} "
            f"{ready['operator_rss_mib']:>8.1f}",
            flush=True,
        )
        time.sleep(opts.settle_s)  # a fixed settling time before the window, part of the measurement
        steady = steady_state(kubeconfig, op, n, opts.steady_s)
        load = scale_up(api, ns, n, opts)
    finally:
        kubectl(
            kubeconfig, "delete", "namespace", ns, "--ignore-not-found", "--wait=true",
            f"--timeout={SLOW_KUBECTL_S}s", timeout=SLOW_KUBECTL_S + 60,
        )  # fmt: skip
    return ready, steady, load


# ------------------------------------------------------------------------------------------------ output


def fmt_rates(rates: Iterable[tuple[str, float]]) -> str:
    return " ".join(f"{k}={v:.2f}" for k, v in rates) or "-"


def report(ready: dict[str, float], s: Steady, load: Load) -> str:
    """Prints the size's steady-state and load figures; returns its summary line."""
    print(
        f"{'tenants':>8} {'window s':>9} {'API req/s':>10} {'reads/s':>8} {'reads/tenant/min':>17} "
        f"{'watch ends/s':>13} {'open watches':>13} {'op CPU %':>9} {'RSS MiB':>8} "
        f"{'up p50 s':>9} {'up p95 s':>9} {'timeouts':>9}"
    )
    n = int(ready["tenants"])
    print(
        f"{n:>8} {s.window_s:>9.1f} {s.requests_per_s:>10.2f} {s.reads_per_s:>8.2f} "
        f"{s.reads_per_tenant_min:>17.3f} {s.watch_ends_per_s:>13.2f} {s.open_watches:>13.0f} "
        f"{s.cpu_pct:>9.1f} {s.rss_mib:>8.1f} {load.p50:>9.2f} {load.p95:>9.2f} "
        f"{f'{load.timeouts}/{load.steps}':>9}"
    )
    print(f"  reads by verb, resource and scope (req/s): {fmt_rates(top(s.reads_by_resource))}")
    print(f"  writes by verb and resource (req/s): {fmt_rates(top(s.writes))}")
    print(f"  open watches by resource: {fmt_rates(top(s.open_watches_by_resource))}")
    print(f"  operator reconciles in window: {fmt_rates(sorted(s.reconciles.items()))}")
    print(f"  operator's own requests in window: {fmt_rates(sorted(s.operator_requests.items())) or '-'}")
    print(f"  scale-up steps s: {' '.join(f'{x:.2f}' for x in load.seconds) or '-'}")
    for why in load.skipped:
        print(f"  scale-up step skipped: {why}")
    return (
        f"summary tenants={n} all_ready_s={ready['all_ready_s']:.1f} ready_p50_s={ready['ready_p50_s']:.1f} "
        f"ready={ready['ready_count']}/{n} api_rps={s.requests_per_s:.2f} read_rps={s.reads_per_s:.2f} "
        f"reads_per_tenant_min={s.reads_per_tenant_min:.3f} watch_ends_ps={s.watch_ends_per_s:.2f} "
        f"cpu_pct={s.cpu_pct:.1f} rss_mib={s.rss_mib:.1f} window_s={s.window_s:.0f} "
        f"scaleup_p50_s={load.p50:.2f} scaleup_p95_s={load.p95:.2f} "
        f"scaleup_timeouts={load.timeouts}/{load.steps}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--kubeconfig", default=os.environ.get("STORYTELLER_KUBECONFIG", ""))
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for Ready per size")
    parser.add_argument("--settle-seconds", type=float, default=20, help="after all Ready, before the window")
    parser.add_argument("--steady-seconds", type=float, default=60, help="the steady-state window")
    parser.add_argument("--load-steps", type=int, default=20, help="scale-up steps (tenants) per size")
    parser.add_argument("--load-deadline", type=float, default=60, help="seconds to wait per scale-up step")
    parser.add_argument("--recheck-seconds", type=float, default=5, help="the operator's recheck interval")
    parser.add_argument(
        "--hanging", type=int, default=0, help="tenants whose pods accept and never answer during the steps"
    )
    parser.add_argument(
        "--slow-prometheus",
        type=float,
        default=0.0,
        help="seconds a local Prometheus (the operator's --prometheus-url) takes to answer; 0: none",
    )
    parser.add_argument(
        "--operator-pythonpath",
        default="",
        help="DIR[:DIR] prepended to the operator process's PYTHONPATH "
        "(another checkout's operator/ and api/ directories)",
    )
    args = parser.parse_args()
    opts = Options(
        args.deadline,
        args.settle_seconds,
        args.steady_seconds,
        args.load_steps,
        args.load_deadline,
        args.recheck_seconds,
        args.hanging,
        args.slow_prometheus,
    )

    with contextlib.ExitStack() as stack:
        if args.kubeconfig:
            kubeconfig = Path(args.kubeconfig)
        else:
            # The running control plane, else one started here and stopped at the end.
            kubeconfig = stack.enter_context(local_cluster(up_timeout=600)).kubeconfig
        if not reachable(kubeconfig):
            print(f"cluster at {kubeconfig} does not answer", file=sys.stderr)
            return 1
        return measure(kubeconfig, args.sizes, opts, args.operator_pythonpath)


def install_chart_without_operator(kubeconfig: Path) -> None:
    """The chart's CRD and RBAC (release storyteller), for an operator the bench runs as a process."""
    helm = str(find_tool("helm"))
    subprocess.run(
        [helm, "--kubeconfig", str(kubeconfig), "upgrade", "--install", "storyteller",
         str(REPO / "helm" / "storyteller"), "--namespace", "storyteller-system", "--create-namespace",
         "--set", "operator.enabled=false", "--wait"],
        check=True, capture_output=True, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip


def measure(kubeconfig: Path, sizes: list[int], opts: Options, operator_pythonpath: str) -> int:
    """Install the chart, start the operator, and measure each size; prints the figures."""
    env = operator_env(kubeconfig, operator_pythonpath)
    install_chart_without_operator(kubeconfig)
    (REPO / ".state").mkdir(exist_ok=True)
    log_path = REPO / ".state" / "bench-operator.log"  # git-ignored
    log_path.unlink(missing_ok=True)  # this run's log only
    print(f"operator log: {log_path}")
    print(f"operator source: {operator_source(env)}")
    op_args = ["--log-level", "warning", "--recheck-seconds", f"{opts.recheck_s:g}"]
    prometheus = SlowPrometheus(opts.slow_prometheus_s) if opts.slow_prometheus_s else None
    if prometheus is not None:  # every tenant's figures are read there, every minute
        op_args += ["--prometheus-url", prometheus.url]
    print(f"operator args: {' '.join(op_args)}")
    print(
        f"settle {opts.settle_s:g} s, steady window {opts.steady_s:g} s, {opts.load_steps} scale-up steps "
        f"(deadline {opts.load_deadline_s:g} s), pool {json.dumps(POOL, separators=(',', ':'))}"
    )
    pods = max(sizes) + 3 * opts.load_steps
    nodes = -(-pods // PODS_PER_NODE)  # the cluster's own two are left to everything else
    kubectl(kubeconfig, "apply", "-f", "-", input=bench_nodes(nodes))
    print(f"kwok nodes added: {nodes} ({PODS_PER_NODE} pods each), worker {json.dumps(WORKER)}")
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    op = OperatorProcess(env, log_path, op_args)
    summaries: list[str] = []
    try:
        op.start()
        print(f"operator idle RSS: {rss_mib(op.pid):.1f} MiB", flush=True)
        for n in sizes:
            ready, steady, load = run_size(api, kubeconfig, n, op, opts)
            summaries.append(report(ready, steady, load))
            print(summaries[-1], flush=True)
        for line in op.metrics().splitlines():
            if line.startswith(
                ("storyteller_operator_reconcile_total", "storyteller_operator_reconcile_seconds_")
            ):
                print(line)
    finally:
        op.stop()
        api.close()
        if prometheus is not None:
            prometheus.close()
        kubectl(kubeconfig, "delete", "node", "-l", BENCH_NODE_LABEL, "--wait=false")
    print("\n".join(["summaries:", *summaries]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stand-ins for worker pods' status endpoint (`GET :8081/worker`), on the pods' own addresses, and
optionally their metrics endpoint (`GET :9100/metrics` with `storyteller_sessions_active`, and the
per-revision outcomes a canary is judged on when the test gives them).

kwok gives pods loopback addresses (tests/cluster/lib.sh POD_CIDR), and runs no containers: a test
plays each pod's worker by serving what the framework's worker serves, where the operator asks.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORKER_STATUS_PORT = 8081


def worker_info(active_jobs: int, agent_name: str = "acme") -> dict[str, Any]:
    """What livekit-agents 1.8 answers on `GET /worker`: its WorkerInfo as proto3 JSON, where
    `active_jobs` is a float and a zero is left out (tests/unit/test_operator_sessions_polling.py checks
    this against the framework's own serialisation)."""
    info: dict[str, Any] = {"worker_type": "JT_ROOM", "agent_name": agent_name}
    if active_jobs:
        info["active_jobs"] = float(active_jobs)
    return {**info, "sdk_version": "1.8.9", "protocol_version": 1}


@dataclass
class Outcomes:
    """What a stand-in worker's sessions did, as the worker's counters say it (labelled by its revision)."""

    revision: str
    sessions: int = 0
    handoffs: int = 0
    provider_errors: int = 0
    error_ends: int = 0

    def metrics(self, tenant: str = "acme") -> str:
        own = f'tenant="{tenant}",revision="{self.revision}"'
        return (
            "# TYPE storyteller_sessions_started_total counter\n"
            f"storyteller_sessions_started_total{{{own}}} {self.sessions}\n"
            "# TYPE storyteller_handoffs_total counter\n"
            f'storyteller_handoffs_total{{{own},from_agent="IntroAgent",to_agent="StoryAgent"}} '
            f"{self.handoffs}\n"
            "# TYPE storyteller_provider_errors_total counter\n"
            f'storyteller_provider_errors_total{{{own},agent="IntroAgent",kind="llm",provider="openai",'
            f'model="gpt-4o-mini"}} {self.provider_errors}\n'
            "# TYPE storyteller_sessions_ended_total counter\n"
            f'storyteller_sessions_ended_total{{{own},reason="error"}} {self.error_ends}\n'
        )


class FakeWorkerStatus:
    """`GET /worker` on one pod's address with a settable `active_jobs`, and `GET /metrics` on
    `metrics_port` when given (what the worker's Prometheus endpoint says of the same sessions)."""

    def __init__(
        self, ip: str, active_jobs: int = 0, metrics_port: int | None = None, serve_status: bool = True
    ) -> None:
        self.active_jobs = active_jobs
        self.outcomes: Outcomes | None = None  # per-revision counters on /metrics, when set
        self.extra_metrics = ""  # more exposition text on /metrics (a forger's series, say)
        status = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = (
                        "# TYPE storyteller_sessions_active gauge\n"
                        f'storyteller_sessions_active{{tenant="acme"}} {status.active_jobs}\n'
                        + (status.outcomes.metrics() if status.outcomes else "")
                        + status.extra_metrics
                    ).encode()
                    content_type = "text/plain; version=0.0.4"
                else:
                    body = json.dumps(worker_info(status.active_jobs)).encode()
                    content_type = "application/json"
                self.send_response(200 if self.path in ("/worker", "/metrics") else 404)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return None

        ports = ([WORKER_STATUS_PORT] if serve_status else []) + ([metrics_port] if metrics_port else [])
        self.servers = [ThreadingHTTPServer((ip, port), Handler) for port in ports]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


class FakePool:
    """One FakeWorkerStatus per running pod of a tenant, started as pods appear."""

    def __init__(self, metrics_port: int | None = None, serve_status: bool = True) -> None:
        self.workers: dict[str, FakeWorkerStatus] = {}  # pod name → its stand-in
        self.metrics_port = metrics_port
        self.serve_status = serve_status  # serve :8081/worker too

    def sync(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            name, ip = pod["metadata"]["name"], (pod.get("status") or {}).get("podIP")
            if ip and name not in self.workers and not pod["metadata"].get("deletionTimestamp"):
                self.workers[name] = FakeWorkerStatus(
                    ip, metrics_port=self.metrics_port, serve_status=self.serve_status
                )

    def set(self, pod: str, active_jobs: int) -> None:
        self.workers[pod].active_jobs = active_jobs

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()

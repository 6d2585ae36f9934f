"""Stand-ins for worker pods' status endpoint (`GET :8081/worker`), on the pods' own addresses.

kwok gives pods loopback addresses (tests/cluster/lib.sh POD_CIDR), and runs no containers: a test
plays each pod's worker by serving what the framework's worker serves, where the operator asks.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORKER_STATUS_PORT = 8081


class FakeWorkerStatus:
    """`GET /worker` on one pod's address with a settable `active_jobs`."""

    def __init__(self, ip: str, active_jobs: int = 0) -> None:
        self.active_jobs = active_jobs
        status = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"agent_name": "acme", "active_jobs": status.active_jobs}).encode()
                self.send_response(200 if self.path == "/worker" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((ip, WORKER_STATUS_PORT), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakePool:
    """One FakeWorkerStatus per running pod of a tenant, started as pods appear."""

    def __init__(self) -> None:
        self.workers: dict[str, FakeWorkerStatus] = {}  # pod name → its stand-in

    def sync(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            name, ip = pod["metadata"]["name"], (pod.get("status") or {}).get("podIP")
            if ip and name not in self.workers and not pod["metadata"].get("deletionTimestamp"):
                self.workers[name] = FakeWorkerStatus(ip)

    def set(self, pod: str, active_jobs: int) -> None:
        self.workers[pod].active_jobs = active_jobs

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()

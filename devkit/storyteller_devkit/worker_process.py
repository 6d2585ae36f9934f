"""A real worker process (`python -m storyteller_worker start`) for one tenant, on loopback.

:class:`WorkerProcess` starts it with the tenant config and keys a pod would have, waits for its log
lines (:data:`REGISTERED` once it has registered with LiveKit), reads its status, readiness and metrics
endpoints, and stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storyteller_devkit.livekit_server import LiveKitServer
from storyteller_devkit.process import free_port, stop_process, wait_until

REGISTERED = "registered worker"


@dataclass
class WorkerProcess:
    """Start, watch and stop one worker; its output goes to `log_path` for assertions and debugging."""

    config: dict[str, Any]
    livekit: LiveKitServer
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    ready_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.config['tenant']}-{self.http_port}.log"

    @property
    def metrics_port(self) -> int:
        return int(self.config["observability"]["metricsPort"])

    @property
    def multiproc_dir(self) -> Path:
        """Its $PROMETHEUS_MULTIPROC_DIR: one value file per process and metric type."""
        return self.workdir / f"prom-{self.config['tenant']}-{self.http_port}"

    def start(self) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / f"{self.config['tenant']}-{self.http_port}.json"
        config_path.write_text(json.dumps(self.config))
        multiproc = self.multiproc_dir
        multiproc.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "STORYTELLER_CONFIG": str(config_path),
            "STORYTELLER_HTTP_PORT": str(self.http_port),
            "STORYTELLER_READY_PORT": str(self.ready_port),
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            "OPENAI_API_KEY": "sk-local-test",
            "DEEPGRAM_API_KEY": "dg-local-test",
            **self.extra_env,
        }
        env.pop("LIVEKIT_URL", None)  # the URL comes from the tenant config, as in a pod
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "storyteller_worker", "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_registered(self, deadline_s: float = 60) -> None:
        self.wait_log(REGISTERED, deadline_s)

    def wait_log(self, text: str, deadline_s: float = 30) -> None:
        """Wait until the worker's output contains `text` (it must not exit first)."""
        self.wait_until(lambda: text in self.log(), repr(text), deadline_s)

    def wait_until(self, predicate: Callable[[], object], what: str, deadline_s: float) -> None:
        """Poll `predicate` until true; the worker must not exit first (WaitFailed, with its log's tail).
        Blocking: call it from a thread in async code."""
        assert self.proc is not None, "start() the worker first"
        wait_until(
            what,
            predicate,
            deadline_s,
            proc=self.proc,
            context=lambda: f"worker log {self.log_path}:\n{self.log()[-3000:]}",
        )

    def status(self) -> dict[str, Any]:
        """The framework's `GET /worker`: agent_name, active_jobs, worker_load."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/worker", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def ready(self) -> tuple[int, str]:
        """The readiness probe's answer (`GET :ready_port/ready`): status and reason."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ready_port}/ready", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM (a drain), a second SIGTERM after 15 s (exit now), SIGKILL after 10 s more."""
        if self.proc is not None:
            stop_process(self.proc, 15, term_again=10)

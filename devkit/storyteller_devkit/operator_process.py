"""The operator as a local process (`python -m storyteller_operator`) against a cluster.

For clusters whose nodes run no containers (kwok) and for the demo's fallback: :class:`OperatorProcess`
starts it with its liveness and metrics endpoints on free loopback ports, waits until it is live, reads
its metrics and JSON log records, and stops (or kills) it.

Each one has its own leader-election identity, kept across `start()` after `kill()` like a pod's name
across a container restart (it takes its Lease back at once); two of them on one Lease elect a leader.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from storyteller_devkit.process import free_port, http_ok, stop_process, wait_until

START_DEADLINE_S = 60


class OperatorProcess:
    """`python -m storyteller_operator [args]`, its output appended to `log_path`."""

    def __init__(
        self, env: dict[str, str], log_path: Path, args: Sequence[str] = (), *, identity: str | None = None
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.args = list(args)
        self.identity = identity or f"local-{secrets.token_hex(4)}"
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() the operator first"
        return self.proc.pid

    def start(self) -> OperatorProcess:
        """Start it and wait until its liveness endpoint answers (WaitFailed, with its log, if never)."""
        argv = [
            sys.executable, "-m", "storyteller_operator",
            "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
            "--identity", self.identity,
            *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(
            "the operator's liveness endpoint",
            self.healthy,
            START_DEADLINE_S,
            every=0.25,
            proc=self.proc,
            context=lambda: f"operator log {self.log_path}:\n{self.log_path.read_text()[-3000:]}",
        )
        return self

    def healthy(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.health_port}/healthz")

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like an OOM kill or a node loss (the Lease is not released)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def leading(self) -> bool:
        """Whether it holds the leader Lease now (its storyteller_operator_leader gauge; False if down)."""
        try:
            return self.metric("storyteller_operator_leader") == 1
        except OSError:
            return False

    def stop(self) -> int | None:
        """SIGTERM (a pod's graceful stop: a leader releases its Lease), SIGKILL if it does not exit within
        20 s. Its exit status (0: it stopped by itself; -9: it had to be killed); None if never started."""
        if self.proc is None:
            return None
        return stop_process(self.proc, 20, kill_timeout=10)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of its metrics (0 when absent); `labels` must be the sample's full label set."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def records(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log records (``--log-format json``), those naming `tenant` when given."""
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if tenant is None or rec.get("tenant") == tenant:
                out.append(rec)
        return out

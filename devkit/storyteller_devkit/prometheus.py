"""Debian's ``prometheus``, run with a scrape config pointing at local processes.

:meth:`Prometheus.start` runs one on a free port scraping every second (`targets`: job → list of
(host:port, target labels); `scrape_configs`: more jobs as raw config, e.g. file_sd), evaluating the
given rule files every second too (group intervals are dropped so recording rules exist at once),
listening on loopback or on `host` (the real node's bridge address, for pods). A :class:`Prometheus` has
``query(expr)`` (the HTTP API's instant query), ``wait_for(expr, predicate, timeout)`` and ``stop()``.
Debian builds it without Kubernetes service discovery: pod_discovery.py stands in for that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from storyteller_devkit.process import free_port, http_ok, stop_process, wait_until

Targets = dict[str, list[tuple[str, dict[str, str]]]]
Result = list[dict[str, Any]]
START_DEADLINE_S = 30


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    @classmethod
    def start(
        cls,
        workdir: Path,
        targets: Targets,
        rule_files: tuple[Path, ...] = (),
        scrape_configs: tuple[dict[str, Any], ...] = (),
        host: str = "127.0.0.1",
    ) -> Prometheus:
        """A Prometheus with its config, rules, data and log in `workdir`, once it is ready.

        Raises FileNotFoundError when `prometheus` is not installed, WaitFailed when it does not start.
        """
        binary = shutil.which("prometheus")
        if binary is None:
            raise FileNotFoundError("Debian's prometheus is not installed")
        rules = []
        for i, path in enumerate(rule_files):
            doc = yaml.safe_load(path.read_text())
            for group in doc["groups"]:
                group.pop("interval", None)  # evaluate with the global 1 s interval
            copy = workdir / f"rules-{i}.yaml"
            copy.write_text(yaml.safe_dump(doc))
            rules.append(str(copy))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [
                {
                    "job_name": job,
                    # The metrics' own labels (tenant, namespace on the operator's gauges) win over target
                    # labels, as the chart's ServiceMonitor for the operator says. Worker pods are not
                    # trusted so: their jobs come in `scrape_configs`, from the operator's PodMonitor.
                    "honor_labels": True,
                    "static_configs": [{"targets": [addr], "labels": labels} for addr, labels in entries],
                }
                for job, entries in targets.items()
            ]
            + list(scrape_configs),
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={host}:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        prom = cls(f"http://{host}:{port}", proc, log)
        try:
            wait_until(
                "prometheus to be ready",
                lambda: http_ok(f"{prom.url}/-/ready", timeout=1),
                START_DEADLINE_S,
                proc=proc,
                context=lambda: log.read_text()[-2000:],
            )
        except BaseException:
            prom.stop()
            raise
        return prom

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def query(self, expr: str) -> Result:
        """Instant query through the HTTP API; raises on a PromQL error (with Prometheus's message)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"query failed: {err.read().decode()}\n{expr}") from None
        assert body["status"] == "success", body
        result: Result = body["data"]["result"]
        return result

    def wait_for(self, expr: str, predicate: Callable[[Result], bool], timeout: float = 60.0) -> Result:
        """The query's result once `predicate` holds for it; raises WaitFailed (with the last result)."""
        last: list[Result] = [[]]

        def matched() -> tuple[Result] | None:
            last[0] = self.query(expr)
            # A 1-tuple: truthy even when the matching result is empty.
            return (last[0],) if predicate(last[0]) else None

        return wait_until(
            f"{expr!r} to match",
            matched,
            timeout,
            every=0.25,
            context=lambda: f"last result: {last[0]}",
        )[0]

"""The session sources' request building and answer parsing (the HTTP side runs on real servers in the
cluster tests for `workers` and in tests/e2e/test_voice_session.py for `prometheus`)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from storyteller_operator.sessions import PrometheusSessionSource, WorkerStatusSource


def pod(name: str, ip: str | None = "10.0.0.7", phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team-a"}, "status": {"phase": phase, "podIP": ip}}


def test_workers_source_asks_running_pods_and_leaves_the_silent_ones_unknown() -> None:
    asked: list[str] = []

    def fetch(url: str) -> Any:
        asked.append(url)
        if "10.0.0.9" in url:
            raise ConnectionRefusedError("not listening yet")
        return {"active_jobs": 3}

    source = WorkerStatusSource(fetch=fetch)
    pods = [pod("a"), pod("b", ip="10.0.0.9"), pod("c", phase="Pending"), pod("d", ip=None)]
    assert source.active_sessions(pods) == {"a": 3}
    assert sorted(asked) == ["http://10.0.0.7:8081/worker", "http://10.0.0.9:8081/worker"]


def test_prometheus_source_one_query_per_tenant_by_pod() -> None:
    asked: list[str] = []

    def fetch(url: str) -> Any:
        asked.append(url)
        result = [
            {"metric": {"pod": "w-1"}, "value": [0, "2"]},
            {"metric": {"pod": "w-2"}, "value": [0, "0"]},
        ]
        return {"status": "success", "data": {"result": result}}

    source = PrometheusSessionSource("http://prom:9090/", fetch=fetch)
    assert source.active_sessions([pod("w-1"), pod("w-2"), pod("w-3")]) == {"w-1": 2, "w-2": 0}
    (url,) = asked
    assert url.startswith("http://prom:9090/api/v1/query?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["query"][0]
    assert query == 'sum by (pod) (storyteller_sessions_active{namespace="team-a", pod=~"w-1|w-2|w-3"})'


def test_prometheus_source_failure_is_unknown_not_zero() -> None:
    def fetch(url: str) -> Any:
        raise TimeoutError("prometheus is down")

    assert PrometheusSessionSource("http://prom:9090", fetch=fetch).active_sessions([pod("w-1")]) == {}
    assert PrometheusSessionSource("http://prom:9090", fetch=fetch).active_sessions([]) == {}

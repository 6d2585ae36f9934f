"""Capacity: a worker takes exactly sessionsPerWorker sessions, measured in sessions, not CPU."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit.agents import AgentServer

from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker import framework
from storyteller_worker.config import parse_tenant_config
from storyteller_worker.server.capacity import LOAD_THRESHOLD, REPORTED_FULL_LOAD, is_full, worker_load
from storyteller_worker.server.tenant_server import build_server


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_full_exactly_at_sessions_per_worker(n: int) -> None:
    assert [is_full(active, n) for active in range(n + 2)] == [False] * n + [True, True]


@given(active=st.integers(0, 100), n=st.integers(1, 50))
def test_load_is_a_fraction_of_slots(active: int, n: int) -> None:
    load = worker_load(active, n)
    assert 0.0 <= load <= 1.0
    assert (load >= LOAD_THRESHOLD) == (active >= n)


def test_zero_capacity_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="sessions_per_worker"):
        worker_load(0, 0)


class _FakeRequest:
    id = "job-1"

    def __init__(self) -> None:
        self.answer = ""

    async def accept(self, **_: Any) -> None:
        self.answer = "accepted"

    async def reject(self, *, terminate: bool = True) -> None:
        self.answer = f"rejected(terminate={terminate})"


async def _answer(server: AgentServer, active: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: [object()] * active))
    request = _FakeRequest()
    assert server._request_fnc is not None
    await server._request_fnc(request)  # type: ignore[arg-type]
    return request.answer


async def test_server_load_and_refusal_follow_sessions_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = parse_tenant_config(tenant_dict("http://127.0.0.1:1/v1", pool={"sessionsPerWorker": 3}))
    server = build_server(tenant)
    assert server._agent_name == "acme-storyteller"
    assert server.load_fnc is not None

    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: [object()] * 3))
    # Reported to LiveKit scaled: a full pod says 0.5, below livekit-server's default target load (0.7).
    assert server.load_fnc() == REPORTED_FULL_LOAD == 0.5  # type: ignore[call-arg]
    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: [object()] * 2))
    assert server.load_fnc() < 0.7  # type: ignore[call-arg]
    assert server._load_threshold == REPORTED_FULL_LOAD
    assert await _answer(server, 2, monkeypatch) == "accepted"
    # Full: refused without terminating, so the LiveKit server offers the job to another worker.
    assert await _answer(server, 3, monkeypatch) == "rejected(terminate=False)"


def test_launching_jobs_weigh_one_slot_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """The framework would count a launching job as threshold/idleProcesses (a whole pod at 0)."""
    tenant = parse_tenant_config(
        tenant_dict("http://127.0.0.1:1/v1", pool={"sessionsPerWorker": 4, "idleProcesses": 0})
    )
    server = build_server(tenant)
    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: []))
    monkeypatch.setattr(framework, "launching_jobs", lambda _server: 1)
    assert server.effective_load() == 0.25 * REPORTED_FULL_LOAD
    monkeypatch.setattr(AgentServer, "active_jobs", property(lambda _self: [object()] * 2))
    monkeypatch.setattr(framework, "launching_jobs", lambda _server: 2)
    assert server.effective_load() == REPORTED_FULL_LOAD  # 2 running + 2 launching = full

"""Worker pods are never BestEffort: default requests follow sessionsPerWorker; the tenant's win by key."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storyteller_api import contract
from storyteller_api.spec import TenantSpec
from storyteller_operator import render, resources
from storyteller_operator.resources import _bytes

LIVEKIT = {"url": "wss://lk.example.com", "credentialsSecret": "lk-creds"}


def spec(**fields: Any) -> TenantSpec:
    return TenantSpec.model_validate({"livekit": LIVEKIT, **fields})


def container(s: TenantSpec) -> dict[str, Any]:
    obj = {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "acme", "namespace": "team-a", "uid": "u"},
        "spec": s.model_dump(by_alias=True, exclude_none=True),
    }
    c: dict[str, Any] = render.deployment(obj)["spec"]["template"]["spec"]["containers"][0]
    return c


def test_defaults_follow_the_sizing_rule() -> None:
    # 4 sessions, 2 idle processes: 100m + 4 × 160m; 320Mi + 2 × 160Mi + 4 × 192Mi, limit half again.
    c = container(spec())
    assert c["resources"] == {"requests": {"cpu": "740m", "memory": "1408Mi"}, "limits": {"memory": "2112Mi"}}
    env = {e["name"]: e.get("value") for e in c["env"]}
    # (2112Mi − 320Mi − 2 × 160Mi) / 4 sessions
    assert env[contract.JOB_MEMORY_LIMIT_ENV] == "368"


@given(sessions=st.integers(1, 99), idle=st.integers(0, 16))
def test_requests_grow_with_the_pool_and_stay_within_the_limit(sessions: int, idle: int) -> None:
    s = spec(pool={"sessionsPerWorker": sessions, "idleProcesses": idle})
    r = resources.container_resources(s)
    assert "cpu" not in r["limits"]  # no CPU throttling of a speech pipeline
    request, limit = _bytes(r["requests"]["memory"]), _bytes(r["limits"]["memory"])
    assert request < limit
    bigger = resources.container_resources(
        spec(pool={"sessionsPerWorker": sessions + 1, "idleProcesses": idle})
    )
    assert _bytes(bigger["requests"]["memory"]) > request
    assert _bytes(bigger["requests"]["cpu"]) > _bytes(r["requests"]["cpu"])
    # Each session may use at least its planned share before the worker kills its process.
    assert resources.job_memory_limit_mb(s, r) >= resources.MEMORY_PLANS["model"].per_session


def test_a_pod_without_the_end_of_turn_model_plans_for_less_memory() -> None:
    # 4 sessions, 2 idle processes: 224Mi + 2 × 96Mi + 4 × 128Mi (bench/memory.py --turn-detection vad).
    for mode in ("vad", "stt"):
        c = container(spec(turnDetection=mode))
        assert c["resources"]["requests"]["memory"] == "928Mi"
        assert c["resources"]["limits"] == {"memory": "1392Mi"}
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env[contract.JOB_MEMORY_LIMIT_ENV] == "244"  # (1392Mi − 224Mi − 2 × 96Mi) / 4 sessions


def test_the_tenants_values_win_key_by_key() -> None:
    s = spec(worker={"resources": {"requests": {"cpu": "2"}}})
    r = resources.container_resources(s)
    assert r["requests"] == {"cpu": "2", "memory": "1408Mi"}
    s = spec(worker={"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "6Gi", "cpu": "4"}}})
    r = resources.container_resources(s)
    assert r["requests"]["memory"] == "4Gi" and r["limits"] == {"memory": "6Gi", "cpu": "4"}
    # (6Gi − 640Mi) / 4
    assert resources.job_memory_limit_mb(s, r) == (6 * 1024 - 640) // 4


@pytest.mark.parametrize("limits", [{}, {"cpu": "2"}])
def test_no_memory_limit_means_no_job_limit(limits: dict[str, str]) -> None:
    s = spec(worker={"resources": {"limits": limits}})
    c = container(s)
    assert "memory" not in c["resources"]["limits"]
    assert contract.JOB_MEMORY_LIMIT_ENV not in {e["name"] for e in c["env"]}

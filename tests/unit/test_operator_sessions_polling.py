"""Session polling that cannot hurt other tenants, the pure half: what an answer counts as, and a recheck
loop that never waits for a slow tenant (the HTTP half runs on loopback servers in
tests/integration/test_session_polling.py)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.json_format import MessageToJson
from livekit.agents import __version__ as agents_version
from livekit.agents.worker import WORKER_PROTOCOL_VERSION
from livekit.protocol import agent, agent_worker

from storyteller_operator.handlers import Options, recheck_loop
from storyteller_operator.runner import Key
from storyteller_operator.sessions import Unusable, parse_json, prometheus_sessions, worker_sessions
from tests.fakes.worker_status import worker_info

FRAMEWORK = {"worker_type": "JT_ROOM", "agent_name": "acme", "sdk_version": "1.8.9", "protocol_version": 1}


def framework_answer(active_jobs: int) -> Any:
    """What livekit-agents' `GET /worker` handler returns, built the way it builds it (worker.py)."""
    info = agent_worker.WorkerInfo(
        worker_type=agent.JobType.Name(agent.JobType.JT_ROOM),
        agent_name="acme",
        active_jobs=active_jobs,
        sdk_version=agents_version,
        worker_load=0.0,
        protocol_version=WORKER_PROTOCOL_VERSION,
    )
    return json.loads(MessageToJson(info, preserving_proto_field_name=True))


def test_the_frameworks_own_answers_count_including_the_idle_one_that_omits_active_jobs() -> None:
    idle, busy = framework_answer(0), framework_answer(3)
    assert "active_jobs" not in idle  # proto3 JSON leaves a zero out: this is why a missing key can be 0
    assert busy["active_jobs"] == 3.0  # a float field
    assert worker_sessions(idle) == 0
    assert worker_sessions(busy) == 3
    # The stand-in the cluster tests serve says the same as the framework.
    assert worker_info(0).keys() == idle.keys()
    assert worker_sessions(worker_info(0)) == 0 and worker_sessions(worker_info(5)) == 5


@pytest.mark.parametrize(
    "body",
    [
        {**FRAMEWORK, "active_jobs": None},
        {**FRAMEWORK, "active_jobs": "three"},
        {**FRAMEWORK, "active_jobs": "NaN"},
        {**FRAMEWORK, "active_jobs": [1, 2]},
        {**FRAMEWORK, "active_jobs": {"n": 1}},
        {**FRAMEWORK, "active_jobs": True},
        {**FRAMEWORK, "active_jobs": -1},
        {**FRAMEWORK, "active_jobs": float("nan")},
        {**FRAMEWORK, "active_jobs": float("inf")},
        {},  # not the framework's: another server's empty object is not an idle pod
        {"error": "not found"},
        {"sdk_version": 189},
        [{"active_jobs": 1}],
        None,
        "3",
        3,
    ],
    ids=repr,
)
def test_an_answer_that_does_not_say_counts_as_unknown(body: Any) -> None:
    assert worker_sessions(body) is None


def test_a_count_without_the_rest_of_the_framework_answer_still_counts() -> None:
    assert worker_sessions({"active_jobs": 2}) == 2
    assert worker_sessions({"active_jobs": "3"}) == 3  # proto3 JSON may quote a number
    assert worker_sessions({"active_jobs": 10**30}) == 10**30


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xffnot json{{{",
        b"[" * 100_000,
        b'{"active_jobs": 1',
        "\u00e9".encode("latin-1"),
        b"1" * 5000,
    ],
    ids=["empty", "garbage", "nested", "truncated", "not utf-8", "long int"],
)
def test_a_body_that_is_not_json_is_unusable_not_an_error_of_another_kind(raw: bytes) -> None:
    with pytest.raises(Unusable):
        parse_json(raw)


def test_prometheus_series_that_do_not_say_are_left_out_and_a_wrong_shape_is_unusable() -> None:
    result = [
        {"metric": {"pod": "w-1"}, "value": [0, "2"]},
        {"metric": {"pod": "w-2"}, "value": [0, "NaN"]},
        {"metric": {"pod": "w-3"}, "value": [0, "-1"]},
        {"metric": {"pod": "w-4"}, "value": [0]},
        {"metric": {}, "value": [0, "1"]},
        {"metric": {"pod": 5}, "value": [0, "1"]},
        "junk",
        {"metric": {"pod": "w-5"}, "value": [0, "+Inf"]},
        {"metric": {"pod": "w-6"}, "value": [0, "0"]},
    ]
    assert prometheus_sessions({"status": "success", "data": {"result": result}}) == {"w-1": 2, "w-6": 0}
    wrong: list[Any] = [{"status": "error"}, {"data": {"result": None}}, {"data": []}, None, [1]]
    for body in wrong:
        with pytest.raises(Unusable):
            prometheus_sessions(body)


# ------------------------------------------------------------------------------------- the recheck loop


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class FakeReconciler:
    """Three tenants always due: "slow" blocks in its trigger until released, "fast" counts its triggers,
    "broken" raises from its trigger (what escapes Runner.trigger). The first pass fails altogether."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.triggered: dict[str, int] = {"slow": 0, "fast": 0, "broken": 0}
        self.guard = threading.Lock()
        self.passes = 0

    def due(self, resync_seconds: float) -> list[tuple[Key, bool]]:
        self.passes += 1
        if self.passes == 1:
            raise RuntimeError("the API server went away")
        return [(("team-a", "slow"), False), (("team-b", "fast"), False), (("team-c", "broken"), False)]

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        with self.guard:
            self.triggered[name] += 1
        if name == "slow":
            self.release.wait(30)
        if name == "broken":
            raise RuntimeError("escaped the runner")

    def count(self, name: str) -> int:
        with self.guard:
            return self.triggered[name]


def test_the_recheck_loop_goes_on_without_a_slow_tenant_and_never_queues_it_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = FakeReconciler()
    stop = threading.Event()
    caplog.set_level(logging.ERROR, logger="storyteller.operator.handlers")
    loop = threading.Thread(
        target=recheck_loop, args=(rec, Options(recheck_seconds=0.02, workers=4), stop), daemon=True
    )
    loop.start()
    try:
        # The slow tenant's trigger has not returned, yet the others keep being visited, pass after pass.
        wait_for(lambda: rec.count("slow") == 1 and rec.count("fast") >= 5, "five passes for the fast tenant")
        assert rec.count("slow") == 1  # not queued again behind its own unfinished trigger
        logged = [r.getMessage() for r in caplog.records if r.exc_info]
        assert "recheck pass failed" in logged and "recheck failed" in logged
        assert rec.count("broken") >= 2  # an exception does not stop the loop
        rec.release.set()
        wait_for(lambda: rec.count("slow") >= 2, "the slow tenant's next turn once it finished")
    finally:
        rec.release.set()
        stop.set()
        loop.join(5)
    assert not loop.is_alive()

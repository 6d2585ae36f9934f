"""Telemetry on real parts: a real worker process serves /metrics from the multiprocess directory,
job-process stand-ins (`storyteller_devkit.session_driver`, two processes) run storyteller sessions
through the real plugins against the local model server, Debian's Prometheus scrapes the worker, and every
panel query of every dashboard runs through Prometheus's HTTP API. Traces go over OTLP/gRPC to a receiver.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storyteller_api import contract
from storyteller_devkit.model_server import DEV_API_KEY, DEV_API_SECRET, ThreadedServer
from storyteller_devkit.otlp_receiver import OtlpReceiver, ReceivedSpan
from storyteller_devkit.process import free_port, stop_process
from storyteller_devkit.prometheus import Prometheus
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker.telemetry.metrics import ALLOWED_LABELS
from tests.panel_queries import OPERATOR, assert_has_data, panel_queries, substitute

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
SECRET = "sk-obs-secret-never-in-telemetry-42"
POD = "acme-worker-0"
REVISION = "3"  # what the operator would have numbered the pod's revision
USER_WORDS = ("Ada", "Lisbon", "My name is")


@dataclass
class Observed:
    prometheus: Prometheus
    spans: list[ReceivedSpan]
    metrics_text: str


def _wait_http(url: str, contains: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                text: str = resp.read().decode()
            if contains in text:
                return text
        except OSError:
            pass
        time.sleep(0.2)  # polling a condition, with a deadline
    raise TimeoutError(f"{url} never showed {contains!r}")


def _value(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def observed(
    _model_server_process: ThreadedServer,
    prometheus_factory: Callable[..., Prometheus],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Observed]:
    work = tmp_path_factory.mktemp("observability")
    server = _model_server_process
    server.recorder.reset()
    metrics_port = free_port()
    config = tenant_dict(
        server.base_url,
        livekit_url=f"ws://127.0.0.1:{free_port()}",  # nobody listens: the worker keeps retrying, serving
        observability={"metricsPort": metrics_port, "tracing": {"sampleRatio": 1.0}},
        # The example tenant's story: a realtime model, through the local Realtime API websocket.
        story={
            "llm": {
                "provider": "openai-realtime",
                "model": "gpt-realtime",
                "voice": "echo",
                "baseURL": server.base_url,
            }
        },
    )
    (work / "tenant.json").write_text(json.dumps(config))
    receiver = OtlpReceiver().start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))},
        "STORYTELLER_CONFIG": str(work / "tenant.json"),
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "STORYTELLER_HTTP_PORT": str(free_port()),
        "OPENAI_API_KEY": SECRET,
        "DEEPGRAM_API_KEY": SECRET,
        "LIVEKIT_API_KEY": DEV_API_KEY,
        "LIVEKIT_API_SECRET": DEV_API_SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "POD_NAME": POD,
        contract.REVISION_ENV: REVISION,
        "POD_NAMESPACE": "acme",
    }
    # Stale files from "a previous run" must be cleaned at worker start.
    (work / "metrics").mkdir()
    (work / "metrics" / "counter_999999.db").write_bytes(b"stale")
    worker = subprocess.Popen(
        [sys.executable, "-m", "storyteller_worker", "start"],
        env=env,
        stdout=(work / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        _wait_http(metrics_url, "storyteller_worker_session_capacity", worker)
        # The framework's own gauges come once its process pool runs (the main process exports ours sooner).
        _wait_http(metrics_url, "lk_agents_child_process_count{", worker)
        assert not (work / "metrics" / "counter_999999.db").exists()
        prom = prometheus_factory(
            {"storyteller-worker": [(f"127.0.0.1:{metrics_port}", {"namespace": "acme", "pod": POD})]},
            rule_files=(DASHBOARDS / "rules.yaml",),
        )
        prom.wait_for('up{job="storyteller-worker"}', lambda r: _value(r) == 1.0)
        # LIVEKIT_URL for the hang-up's DeleteRoom goes to the model server's Twirp endpoint.
        driver_env = {**env, "LIVEKIT_URL": server.origin}
        started = 'sum(storyteller_sessions_started_total{tenant="acme"})'
        # Two job-process stand-ins, one after the other, each scraped: counters from separate
        # processes add up on the worker's endpoint, and rate() sees an increase.
        for expected in (2, 4):
            subprocess.run(
                [sys.executable, "-m", "storyteller_devkit.session_driver", "--sessions", "2"],
                env=driver_env,
                cwd=REPO,
                check=True,
                timeout=180,
            )
            prom.wait_for(started, lambda r, n=expected: _value(r) == n)  # type: ignore[misc]
        receiver.wait_for("agent_handoff")
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        yield Observed(prometheus=prom, spans=receiver.spans, metrics_text=text)
    finally:
        stop_process(worker, 20)
        receiver.stop()


@pytest.mark.parametrize(("expr"), [pytest.param(e, id=i) for i, e in panel_queries("text")])
def test_every_panel_query_returns_real_data(observed: Observed, expr: str) -> None:
    # The voice and operator queries are proven where their series exist (see tests/panel_queries.py).
    assert_has_data(observed.prometheus.query(substitute(expr, "acme", "acme")), expr)


def test_template_variables_have_values(observed: Observed) -> None:
    for path in sorted(DASHBOARDS.glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query" or OPERATOR.search(var["definition"]):
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
            assert match, var["definition"]
            selector, label = substitute(match.group(1), "acme", "acme"), match.group(2)
            result = observed.prometheus.query(f"group by ({label}) ({selector})")
            expected = REVISION if label == "revision" else "acme"
            assert [s["metric"].get(label) for s in result] == [expected], (path.name, var["name"], result)


def test_no_label_value_is_a_room_participant_or_user(observed: Observed) -> None:
    series = observed.prometheus.query('{__name__=~"storyteller_.*"}')
    assert series
    forbidden_values = {"fake-room", *USER_WORDS}
    for s in series:
        for value in s["metric"].values():
            assert not any(re.search(rf"\b{w}\b", value) for w in forbidden_values), s["metric"]
            assert not value.startswith(("RM_", "PA_", "SRM_", "job-", "mock-job-")), s["metric"]
        names = set(s["metric"]) - {"__name__", "job", "instance", "namespace", "pod", "le"}
        assert names <= ALLOWED_LABELS, s["metric"]


def test_sdk_metrics_stay_exported(observed: Observed) -> None:
    for name in ("lk_agents_worker_load", "lk_agents_child_process_count"):
        assert observed.prometheus.query(name), name


def test_counters_from_every_job_process_reach_the_worker_endpoint(observed: Observed) -> None:
    # Two driver processes ran two sessions each: the worker process (which ran none) serves all four.
    # Under the revision the operator gave the pod (its environment).
    text = observed.metrics_text
    assert f'storyteller_sessions_started_total{{revision="{REVISION}",tenant="acme"}} 4.0' in text
    handoff = f'from_agent="IntroAgent",revision="{REVISION}",tenant="acme",to_agent="StoryAgent"'
    assert f"storyteller_handoffs_total{{{handoff}}} 4.0" in text


def test_spans_carry_the_resource_and_the_handoff(observed: Observed) -> None:
    names = {s.name for s in observed.spans}
    assert {"agent_session", "llm_request", "function_tool", "agent_handoff"} <= names, names
    for span in observed.spans:
        assert span.resource["service.name"] == "storyteller-worker"
        assert span.resource["storyteller.tenant"] == "acme"
        assert span.resource["k8s.namespace.name"] == "acme"
        assert span.resource["k8s.pod.name"] == POD
    handoffs = [s for s in observed.spans if s.name == "agent_handoff"]
    assert len(handoffs) == 4
    assert handoffs[0].attributes["storyteller.handoff.from_agent"] == "IntroAgent"
    assert handoffs[0].attributes["storyteller.handoff.to_agent"] == "StoryAgent"
    # The handoff belongs to a session's trace.
    session_traces = {s.trace_id for s in observed.spans if s.name == "agent_session"}
    assert all(h.trace_id in session_traces for h in handoffs)


def test_the_realtime_story_is_traced_under_the_story_agent(observed: Observed) -> None:
    """Each realtime answer's span carries its text and audio tokens, inside a StoryAgent's turn."""
    by_id = {s.span_id: s for s in observed.spans}

    def agents_above(span: ReceivedSpan) -> list[str]:
        names, parent = [], by_id.get(span.parent_span_id)
        while parent is not None:
            if parent.name == "agent_turn":
                names.append(str(parent.attributes.get("gen_ai.agent.name")))  # the framework's agent id
            parent = by_id.get(parent.parent_span_id)
        return names

    realtime = [s for s in observed.spans if s.attributes.get("gen_ai.request.model") == "gpt-realtime"]
    assert realtime, sorted({s.name for s in observed.spans})
    answers = [s for s in realtime if s.attributes.get("gen_ai.usage.audio.output_tokens", 0) > 0]
    assert answers, [s.attributes for s in realtime][:3]
    for span in answers:
        assert (
            span.attributes["gen_ai.usage.output_tokens"]
            > span.attributes["gen_ai.usage.audio.output_tokens"]
        )
        assert agents_above(span)[:1] == ["story_agent"], (span.name, agents_above(span))
    # The intro's chat model is traced under the IntroAgent, the bridge reply included.
    intro = [s for s in observed.spans if s.name == "llm_request" and "gpt-4o-mini" in str(s.attributes)]
    assert intro and all(agents_above(s)[:1] == ["intro_agent"] for s in intro)


def test_no_span_holds_a_key_or_the_users_words(observed: Observed) -> None:
    assert observed.spans
    for span in observed.spans:
        blob = json.dumps([span.attributes, span.events, span.resource], default=str)
        assert SECRET not in blob, span.name
        for word in USER_WORDS:
            assert not re.search(rf"\b{word}\b", blob), (span.name, word, blob[:2000])

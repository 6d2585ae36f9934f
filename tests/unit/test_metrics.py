"""The worker's metric definitions and collector: DESIGN.md's names, only the allowed labels."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from storyteller_api import contract
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker.config import parse_tenant_config
from storyteller_worker.telemetry import metrics

DESIGN_NAMES = {
    "storyteller_sessions_started",  # counters are registered without their _total suffix
    "storyteller_sessions_active",
    "storyteller_session_duration_seconds",
    "storyteller_handoffs",
    "storyteller_llm_prompt_tokens",
    "storyteller_llm_completion_tokens",
    "storyteller_llm_ttft_seconds",
    "storyteller_tts_characters",
    "storyteller_tts_audio_seconds",
    "storyteller_tts_ttfb_seconds",
    "storyteller_stt_audio_seconds",
    "storyteller_eou_delay_seconds",
    "storyteller_provider_errors",
}


def _defined() -> dict[str, Any]:
    return {
        m._name: m
        for m in vars(metrics).values()
        if hasattr(m, "_labelnames") and getattr(m, "_name", "").startswith("storyteller_")
    }


def test_every_design_metric_is_defined() -> None:
    assert set(_defined()) >= DESIGN_NAMES


def test_labels_are_only_tenant_agent_provider_model_and_the_named_extras() -> None:
    for name, metric in _defined().items():
        assert set(metric._labelnames) <= metrics.ALLOWED_LABELS, name
        assert "tenant" in metric._labelnames, name
        assert "revision" in metric._labelnames, name  # a canary's series apart from the stable pool's
    assert set(_defined()["storyteller_handoffs"]._labelnames) == {
        "tenant",
        "revision",
        "from_agent",
        "to_agent",
    }
    assert {"kind", "provider"} <= set(_defined()["storyteller_provider_errors"]._labelnames)


def test_provider_label_is_the_configs_provider_name_not_a_host() -> None:
    tenant = parse_tenant_config(tenant_dict("http://10.0.0.7:8000/v1"))
    names = metrics.provider_names(tenant)
    assert names[("llm", "gpt-4o-mini")] == "openai"
    assert names[("stt", "nova-3")] == "deepgram"
    assert names[("tts", "gpt-4o-mini-tts")] == "openai"


def test_handoff_counter_counts_from_and_to_under_the_pods_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.REVISION_ENV, "7")
    tenant = parse_tenant_config(tenant_dict("http://127.0.0.1:1/v1", tenant="unit-handoff"))
    labels = {"tenant": "unit-handoff", "revision": "7", "from_agent": "IntroAgent", "to_agent": "StoryAgent"}
    before = REGISTRY.get_sample_value("storyteller_handoffs_total", labels) or 0.0
    metrics.record_handoff(tenant, "IntroAgent", "StoryAgent")
    assert REGISTRY.get_sample_value("storyteller_handoffs_total", labels) == before + 1


def test_a_worker_the_operator_did_not_render_reports_revision_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(contract.REVISION_ENV, raising=False)
    tenant = parse_tenant_config(tenant_dict("http://127.0.0.1:1/v1", tenant="local"))
    assert metrics.tenant_labels(tenant) == {"tenant": "local", "revision": metrics.NO_REVISION}


def test_initialize_series_creates_the_configs_series_at_zero() -> None:
    from prometheus_client import REGISTRY

    from storyteller_devkit.tenant_config import tenant_dict
    from storyteller_worker.config import parse_tenant_config
    from storyteller_worker.telemetry.metrics import initialize_series

    tenant = parse_tenant_config(
        tenant_dict(
            "http://127.0.0.1:1/v1", tenant="zeroes", story={"llm": {"provider": "openai", "model": "gpt-4o"}}
        )
    )
    initialize_series(tenant)

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(
            name, {"tenant": "zeroes", "revision": metrics.NO_REVISION, **labels}
        )

    assert value("storyteller_handoffs_total", from_agent="IntroAgent", to_agent="StoryAgent") == 0.0
    assert value("storyteller_eou_delay_seconds_count", agent="StoryAgent") == 0.0
    story_tts = {"agent": "StoryAgent", "provider": "openai", "model": "gpt-4o-mini-tts"}
    assert value("storyteller_tts_characters_total", **story_tts) == 0.0  # inherited from the intro
    assert (
        value("storyteller_llm_prompt_tokens_total", agent="StoryAgent", provider="openai", model="gpt-4o")
        == 0.0
    )
    # The intro's llm is not the story's: no StoryAgent series for it.
    assert (
        value(
            "storyteller_llm_prompt_tokens_total", agent="StoryAgent", provider="openai", model="gpt-4o-mini"
        )
        is None
    )


def test_a_realtime_story_is_watched_on_its_live_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A realtime model is no event emitter: the collector listens on each live session it opens instead
    (its time to first audio is reported there), and its series start at zero under StoryAgent."""
    from livekit.agents import metrics as lk_metrics
    from livekit.agents.metrics.base import Metadata

    from storyteller_worker.providers.phases import build_session_models
    from storyteller_worker.providers.plugins import ObservedRealtimeModel
    from storyteller_worker.telemetry.session_metrics import SessionMetrics

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")
    story = {"llm": {"provider": "openai-realtime", "model": "gpt-realtime", "voice": "echo"}}
    tenant = parse_tenant_config(tenant_dict("http://127.0.0.1:1/v1", tenant="rt", story=story))
    models = build_session_models(tenant, vad=None)
    assert isinstance(models.story.llm, ObservedRealtimeModel)
    collected = SessionMetrics(tenant)
    collected.watch_models(models)
    assert models.story.llm.session_observers == [collected._observe_realtime]

    class LiveSession:
        def __init__(self) -> None:
            self.handlers: dict[str, Any] = {}

        def on(self, event: str, handler: Any) -> None:
            self.handlers[event] = handler

    live = LiveSession()
    for observe in models.story.llm.session_observers:
        observe(live)  # type: ignore[arg-type]
    # Only the StoryAgent uses the realtime model: its figures are the StoryAgent's, whoever is current.
    labels = {
        "tenant": "rt",
        "revision": metrics.NO_REVISION,
        "agent": "StoryAgent",
        "provider": "openai-realtime",
        "model": "gpt-realtime",
    }
    before = REGISTRY.get_sample_value("storyteller_llm_ttft_seconds_count", labels) or 0.0
    report = lk_metrics.RealtimeModelMetrics(
        label="openai",
        request_id="resp_1",
        timestamp=0.0,
        duration=1.0,
        ttft=0.25,
        cancelled=False,
        input_tokens=10,
        output_tokens=20,
        total_tokens=30,
        tokens_per_second=20.0,
        input_token_details=lk_metrics.RealtimeModelMetrics.InputTokenDetails(
            audio_tokens=8, text_tokens=2, cached_tokens=0, image_tokens=0
        ),
        output_token_details=lk_metrics.RealtimeModelMetrics.OutputTokenDetails(
            text_tokens=5, audio_tokens=15, image_tokens=0
        ),
        metadata=Metadata(model_name="gpt-realtime", model_provider="openai"),
    )
    live.handlers["metrics_collected"](report)
    assert REGISTRY.get_sample_value("storyteller_llm_ttft_seconds_count", labels) == before + 1
    metrics.initialize_series(tenant)
    story_llm = {
        "tenant": "rt",
        "revision": metrics.NO_REVISION,
        "agent": "StoryAgent",
        "provider": "openai-realtime",
        "model": "gpt-realtime",
    }
    assert REGISTRY.get_sample_value("storyteller_llm_output_audio_tokens_total", story_llm) == 0.0

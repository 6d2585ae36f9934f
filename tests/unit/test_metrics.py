"""The worker's metric definitions and collector: DESIGN.md's names, only the allowed labels."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

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
    assert set(_defined()["storyteller_handoffs"]._labelnames) == {"tenant", "from_agent", "to_agent"}
    assert {"kind", "provider"} <= set(_defined()["storyteller_provider_errors"]._labelnames)


def test_provider_label_is_the_configs_provider_name_not_a_host() -> None:
    tenant = parse_tenant_config(tenant_dict("http://10.0.0.7:8000/v1"))
    names = metrics.provider_names(tenant)
    assert names[("llm", "gpt-4o-mini")] == "openai"
    assert names[("stt", "nova-3")] == "deepgram"
    assert names[("tts", "gpt-4o-mini-tts")] == "openai"


def test_handoff_counter_counts_from_and_to() -> None:
    labels = {"tenant": "unit-handoff", "from_agent": "IntroAgent", "to_agent": "StoryAgent"}
    before = REGISTRY.get_sample_value("storyteller_handoffs_total", labels) or 0.0
    metrics.record_handoff("unit-handoff", "IntroAgent", "StoryAgent")
    assert REGISTRY.get_sample_value("storyteller_handoffs_total", labels) == before + 1


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
        return REGISTRY.get_sample_value(name, {"tenant": "zeroes", **labels})

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

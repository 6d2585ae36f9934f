"""Tenant config validation: every bad config is refused with one line naming its field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker.config import (
    ConfigError,
    WorkerConfig,
    check_env,
    load_tenant_config,
    parse_tenant_config,
    required_env,
)

BASE = tenant_dict("http://127.0.0.1:1/v1")


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with the dotted `path` set to `value` (or removed when value is ...)."""
    data = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return data


BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown llm provider", _with("intro.llm.provider", "anthropic"), "intro.llm.provider"),
    ("unknown stt provider", _with("intro.stt.provider", "whisper"), "intro.stt.provider"),
    ("unknown tts provider", _with("intro.tts.provider", "elevenlabs"), "intro.tts.provider"),
    (
        "realtime story llm with a tts",
        _with(
            "story",
            {
                "llm": {"provider": "openai-realtime", "model": "gpt-realtime"},
                "tts": {"provider": "openai", "model": "tts-1"},
            },
        ),
        "story.tts",
    ),
    (
        "realtime intro llm with a tts",
        _with("intro.llm", {"provider": "openai-realtime", "model": "gpt-realtime"}),
        "intro.tts",
    ),
    (
        "realtime fallback",
        _with("intro.llm.fallbacks", [{"provider": "openai-realtime", "model": "gpt-realtime"}]),
        "intro.llm.fallbacks[0].provider",
    ),
    (
        "fallbacks on a realtime llm",
        _with(
            "story.llm",
            {
                "provider": "openai-realtime",
                "model": "x",
                "fallbacks": [{"provider": "openai", "model": "gpt-4o"}],
            },
        ),
        "story.llm.fallbacks",
    ),
    ("empty model", _with("intro.llm.model", ""), "intro.llm.model"),
    ("missing model", _with("intro.stt.model", ...), "intro.stt.model"),
    ("baseURL not http", _with("intro.llm.baseURL", "ftp://x"), "intro.llm.baseURL"),
    ("temperature too high", _with("intro.llm.temperature", 3), "intro.llm.temperature"),
    ("min above max", _with("pool", {"minReplicas": 5, "maxReplicas": 2}), "pool.minReplicas"),
    ("zero sessions per worker", _with("pool.sessionsPerWorker", 0), "pool.sessionsPerWorker"),
    ("negative idle processes", _with("pool.idleProcesses", -1), "pool.idleProcesses"),
    ("unknown autoscaler", _with("pool.autoscaler", "hpa"), "pool.autoscaler"),
    ("livekit url not ws", _with("livekit.url", "http://x"), "livekit.url"),
    ("missing livekit", _with("livekit", ...), "livekit"),
    (
        "secret name not a DNS label",
        _with("livekit.credentialsSecret", "Bad_Name"),
        "livekit.credentialsSecret",
    ),
    ("agent name not a DNS label", _with("agentName", "Acme Story"), "agentName"),
    ("metrics port privileged", _with("observability.metricsPort", 80), "observability.metricsPort"),
    (
        "sample ratio above one",
        _with("observability.tracing", {"sampleRatio": 2}),
        "observability.tracing.sampleRatio",
    ),
    ("typo in a key", _with("intro.instruction", "hi"), "intro.instruction"),
    ("unknown top-level key", _with("suspend", True), "suspend"),
    ("bool for a number", _with("pool.maxReplicas", "many"), "pool.maxReplicas"),
]


@pytest.mark.parametrize(("case", "data", "field"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_field(case: str, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_tenant_config(data)
    message = str(err.value)
    assert message.startswith(f"{field}:"), message
    assert "\n" not in message


def test_the_base_config_is_valid_and_camel_case_round_trips() -> None:
    tenant = parse_tenant_config(BASE)
    assert tenant.agent_name == "acme-storyteller"
    assert tenant.story.llm.model == "gpt-4o"
    assert tenant.model_dump(by_alias=True, exclude_none=True)["intro"]["llm"]["baseURL"].endswith("/v1")


def test_defaults_fill_a_minimal_config() -> None:
    tenant = parse_tenant_config(
        {"tenant": "acme", "livekit": {"url": "wss://lk", "credentialsSecret": "lk"}}
    )
    assert tenant.agent_name == "acme"  # agentName defaults to the tenant's name
    assert tenant.intro.tts is not None and tenant.intro.tts.voice == "echo"
    assert tenant.pool.sessions_per_worker == 4 and tenant.pool.drain_timeout_seconds == 900
    assert tenant.story.tts is None  # inherits the intro's


def test_realtime_story_without_tts_is_valid() -> None:
    tenant = parse_tenant_config(
        _with("story", {"llm": {"provider": "openai-realtime", "model": "gpt-realtime", "voice": "echo"}})
    )
    assert tenant.story.llm.realtime


def test_a_secret_value_is_never_echoed_in_the_error() -> None:
    data = _with("intro.llm.baseURL", "sk-live-SECRET-VALUE")
    with pytest.raises(ConfigError) as err:
        parse_tenant_config(data)
    assert "SECRET-VALUE" not in str(err.value)


def test_required_env_names_each_providers_key_once() -> None:
    data = _with("intro.tts.fallbacks", [{"provider": "deepgram", "model": "aura-2-andromeda-en"}])
    data["intro"]["stt"] = {"provider": "openai", "model": "gpt-4o-mini-transcribe"}
    needed = required_env(parse_tenant_config(data))
    assert needed == {
        "LIVEKIT_API_KEY": "livekit.credentialsSecret",
        "LIVEKIT_API_SECRET": "livekit.credentialsSecret",
        "OPENAI_API_KEY": "intro.llm.provider",
        "DEEPGRAM_API_KEY": "intro.tts.fallbacks[0].provider",
    }


def test_missing_key_is_refused_naming_variable_and_field() -> None:
    tenant = parse_tenant_config(BASE)
    env = {"LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s", "OPENAI_API_KEY": "sk-x"}
    with pytest.raises(ConfigError, match=r"^intro\.stt\.provider: environment variable DEEPGRAM_API_KEY"):
        check_env(tenant, env)
    check_env(tenant, {**env, "DEEPGRAM_API_KEY": "dg"})  # complete: no error


def test_load_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps(BASE))
    monkeypatch.setenv("STORYTELLER_CONFIG", str(path))
    assert isinstance(load_tenant_config(), WorkerConfig)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_tenant_config()
    with pytest.raises(ConfigError, match="not found"):
        load_tenant_config(tmp_path / "absent.json")


def test_intro_tts_defaults_unless_the_llm_is_realtime() -> None:
    data = _with("intro", {"llm": {"provider": "openai", "model": "gpt-4o-mini"}})
    tts = parse_tenant_config(data).intro.tts
    assert tts is not None and tts.model == "gpt-4o-mini-tts" and tts.voice == "echo"
    realtime = parse_tenant_config(
        _with("intro", {"llm": {"provider": "openai-realtime", "model": "gpt-realtime"}})
    )
    assert realtime.intro.tts is None

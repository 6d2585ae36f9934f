"""spec.turnDetection: the session's turn handling, and whether the pod loads the end-of-turn model."""

from __future__ import annotations

import os

import pytest

from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker.agents.session import build_session, turn_handling
from storyteller_worker.config import parse_tenant_config
from storyteller_worker.framework import ENV_PRELOAD_LOCAL_INFERENCE
from storyteller_worker.server.tenant_server import build_server


def _tenant(mode: str | None = None):  # type: ignore[no-untyped-def]
    overrides = {"turnDetection": mode} if mode else {}
    return parse_tenant_config(tenant_dict("http://127.0.0.1:1/v1", **overrides))


def test_model_is_the_default_and_leaves_the_framework_its_own() -> None:
    assert _tenant().turn_detection == "model"
    assert turn_handling(_tenant()) == {}
    assert turn_handling(_tenant("vad")) == {"turn_detection": "vad"}
    assert turn_handling(_tenant("stt")) == {"turn_detection": "stt"}


async def test_a_vad_tenants_session_ends_turns_on_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OPENAI_API_KEY", "DEEPGRAM_API_KEY"):  # the plugins want one to build; nothing is called
        monkeypatch.setenv(key, "sk-unused")
    session = build_session(_tenant("vad"), vad=None)
    assert session._turn_detection == "vad"


@pytest.mark.parametrize(("mode", "preloaded"), [("model", None), ("vad", "0"), ("stt", "0")])
def test_only_a_pod_that_uses_the_model_preloads_it(
    mode: str, preloaded: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_PRELOAD_LOCAL_INFERENCE, raising=False)
    build_server(_tenant(mode))
    assert os.environ.get(ENV_PRELOAD_LOCAL_INFERENCE) == preloaded

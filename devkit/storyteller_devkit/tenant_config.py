"""Rendered tenant configs (what the operator writes to ``tenant.json``) for local workers.

:func:`tenant_dict` is a valid config whose models all point at one base URL, the local model server's
(:attr:`storyteller_devkit.model_server.ThreadedServer.base_url`) in tests, benches and the demo.
"""

from __future__ import annotations

from typing import Any


def tenant_dict(base_url: str, livekit_url: str = "ws://127.0.0.1:7880", **overrides: Any) -> dict[str, Any]:
    """A rendered tenant config with every model on `base_url`; `overrides` replace top-level keys."""
    data: dict[str, Any] = {
        "tenant": "acme",
        "namespace": "acme",
        "agentName": "acme-storyteller",
        "livekit": {"url": livekit_url, "credentialsSecret": "livekit-credentials"},
        "persona": "Your name is Echo. You are a story teller that interacts with the user via voice.",
        "intro": {
            "instructions": "Ask the user for their name and where they are from.",
            "llm": {"provider": "openai", "model": "gpt-4o-mini", "baseURL": base_url},
            "stt": {"provider": "deepgram", "model": "nova-3", "language": "en", "baseURL": base_url},
            "tts": {"provider": "openai", "model": "gpt-4o-mini-tts", "voice": "echo", "baseURL": base_url},
        },
        "story": {
            "instructions": "You are a storyteller. Make the story personal.",
            "llm": {"provider": "openai", "model": "gpt-4o", "baseURL": base_url},
            "carryChatContext": False,
        },
        "pool": {"sessionsPerWorker": 2, "idleProcesses": 1},
    }
    data.update(overrides)
    return data

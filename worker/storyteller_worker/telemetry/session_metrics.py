"""The collector that feeds the worker's metrics from one AgentSession's events and its models' errors.

Sources, all from livekit-agents 1.8's non-deprecated API:
- `session_usage_updated`: the session's cumulative usage per (provider, model); the collector turns
  it into counter increments by keeping the last value it saw (tokens, TTS characters and audio, STT audio);
- `conversation_item_added`: each ChatMessage's `metrics` report (TTFT and TTS TTFB on the assistant's
  messages, end-of-turn delay on the user's);
- each model's own `error` event (`watch_models`): every failed LLM/STT/TTS request, also the ones a
  fallback adapter recovered from (the session only hears of a failure when no fallback was left);
- `close`: the end of the session (duration, active sessions).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    SessionUsageUpdatedEvent,
)
from prometheus_client import Counter

from storyteller_api.spec import WorkerConfig

from .. import framework
from ..providers.phases import SessionModels
from .metrics import (
    EOU_DELAY,
    LLM_COMPLETION_TOKENS,
    LLM_PROMPT_TOKENS,
    LLM_TTFT,
    PROVIDER_ERRORS,
    SESSION_DURATION,
    SESSIONS_ACTIVE,
    SESSIONS_STARTED,
    STT_AUDIO_SECONDS,
    TTS_AUDIO_SECONDS,
    TTS_CHARACTERS,
    TTS_TTFB,
    ModelKind,
    provider_names,
)

_UsageKey = tuple[str, str, str]  # (usage type, plugin provider, model)


def _leaves(model: Any) -> list[Any]:
    """The plugin objects behind a model slot: a fallback adapter's instances, else the model itself.

    Should an upgrade hide the adapter's instances, errors are still counted on the adapter itself.
    """
    if model is None or model is NOT_GIVEN:
        return []
    return framework.fallback_instances(model) or [model]


@dataclass
class SessionMetrics:
    """Feeds the metrics from one AgentSession's events; `attach` it before `session.start`."""

    tenant: WorkerConfig
    _providers: dict[tuple[ModelKind, str], str] = field(init=False)
    _seen: dict[_UsageKey, dict[str, float]] = field(default_factory=dict, init=False)
    _session: AgentSession[Any] | None = field(default=None, init=False)
    _started_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._providers = provider_names(self.tenant)

    def attach(self, session: AgentSession[Any]) -> None:
        self._session = session
        session.on("session_usage_updated", self._on_usage)
        session.on("conversation_item_added", self._on_item)
        session.on("error", self._on_error)
        session.on("close", self._on_close)
        self._started_at = time.monotonic()
        SESSIONS_STARTED.labels(tenant=self.tenant.tenant).inc()
        SESSIONS_ACTIVE.labels(tenant=self.tenant.tenant).inc()

    # -- labels

    def _agent(self) -> str:
        if self._session is None:
            return "unknown"
        try:
            return type(self._session.current_agent).__name__
        except RuntimeError:  # before start or after close: no agent
            return "unknown"

    def _labels(self, kind: ModelKind, model: str) -> dict[str, str]:
        model = model or "unknown"
        provider = self._providers.get((kind, model), "other")
        return {"tenant": self.tenant.tenant, "agent": self._agent(), "provider": provider, "model": model}

    # -- event handlers (synchronous: they run on the session's loop, between turns)

    def _delta(self, key: _UsageKey, values: dict[str, float]) -> dict[str, float]:
        """What grew since the last update; session usage is cumulative per (provider, model)."""
        before = self._seen.get(key, {})
        self._seen[key] = values
        return {name: value - before.get(name, 0.0) for name, value in values.items()}

    def _on_usage(self, ev: SessionUsageUpdatedEvent) -> None:
        for usage in ev.usage.model_usage:
            if isinstance(usage, LLMModelUsage):
                d = self._delta(
                    ("llm", usage.provider, usage.model),
                    {"in": usage.input_tokens, "out": usage.output_tokens},
                )
                labels = self._labels("llm", usage.model)
                _inc(LLM_PROMPT_TOKENS, labels, d["in"])
                _inc(LLM_COMPLETION_TOKENS, labels, d["out"])
            elif isinstance(usage, TTSModelUsage):
                d = self._delta(
                    ("tts", usage.provider, usage.model),
                    {"chars": usage.characters_count, "audio": usage.audio_duration},
                )
                labels = self._labels("tts", usage.model)
                _inc(TTS_CHARACTERS, labels, d["chars"])
                _inc(TTS_AUDIO_SECONDS, labels, d["audio"])
            elif isinstance(usage, STTModelUsage):
                d = self._delta(("stt", usage.provider, usage.model), {"audio": usage.audio_duration})
                _inc(STT_AUDIO_SECONDS, self._labels("stt", usage.model), d["audio"])

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage):
            return
        report = item.metrics
        if item.role == "assistant":
            if (ttft := report.get("llm_node_ttft")) is not None and ttft >= 0:
                meta = report.get("llm_metadata") or {}
                LLM_TTFT.labels(**self._labels("llm", meta.get("model_name", ""))).observe(ttft)
            if (ttfb := report.get("tts_node_ttfb")) is not None and ttfb >= 0:
                meta = report.get("tts_metadata") or {}
                TTS_TTFB.labels(**self._labels("tts", meta.get("model_name", ""))).observe(ttfb)
        elif item.role == "user" and (eou := report.get("end_of_turn_delay")) is not None:
            EOU_DELAY.labels(tenant=self.tenant.tenant, agent=self._agent()).observe(eou)

    def watch_models(self, models: SessionModels) -> None:
        """Count every failed request of every model the session may use, fallbacks included."""
        for phase in (models.intro, models.story):
            slots: tuple[tuple[ModelKind, Any], ...] = (
                ("llm", phase.llm),
                ("stt", phase.stt),
                ("tts", phase.tts),
            )
            for kind, model in slots:
                for leaf in _leaves(model):
                    leaf.on("error", functools.partial(self._on_model_error, kind, leaf))

    def _on_model_error(self, kind: ModelKind, model: Any, _error: Any) -> None:
        labels = self._labels(kind, str(getattr(model, "model", "")))
        PROVIDER_ERRORS.labels(kind=kind, **labels).inc()

    def _on_error(self, ev: ErrorEvent) -> None:
        # LLM/STT/TTS failures are counted where they happen (`watch_models`); a realtime model's
        # errors come from its live session, so they are only seen here.
        if isinstance(ev.error, llm.RealtimeModelError) and isinstance(ev.source, llm.RealtimeModel):
            PROVIDER_ERRORS.labels(kind="llm", **self._labels("llm", str(ev.source.model))).inc()

    def _on_close(self, _ev: CloseEvent) -> None:
        if self._started_at is None:
            return
        SESSIONS_ACTIVE.labels(tenant=self.tenant.tenant).dec()
        SESSION_DURATION.labels(tenant=self.tenant.tenant).observe(time.monotonic() - self._started_at)
        self._started_at = None  # a session closes once; never count it twice


def _inc(counter: Counter, labels: dict[str, str], amount: float) -> None:
    # Usage never shrinks; a negative delta would mean a reset we cannot interpret, so it is skipped.
    if amount > 0:
        counter.labels(**labels).inc(amount)

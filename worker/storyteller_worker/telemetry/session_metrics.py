"""The collector that feeds the worker's metrics from one AgentSession's events and its models' errors.

Sources, all from livekit-agents 1.8's non-deprecated API:
- `session_usage_updated`: the session's cumulative usage per (provider, model); the collector turns
  it into counter increments by keeping the last value it saw (tokens, TTS characters and audio, STT audio);
- `conversation_item_added`: each ChatMessage's `metrics` report (TTFT and TTS TTFB on the assistant's
  messages, end-of-turn delay on the user's);
- each model's own `error` event (`watch_models`): every failed LLM/STT/TTS request, also the ones a
  fallback adapter recovered from (the session only hears of a failure when no fallback was left);
- each realtime model's live sessions (`ObservedRealtimeModel.session_observers`): its time to first
  audio, reported there only;
- `close`: the end of the session (duration, active sessions).

Each value is labelled with the agent it belongs to, which is not always the session's current agent:
after the handoff tool the IntroAgent still speaks its reply to the tool output ("Let's start the
story!") while the current agent is already the StoryAgent. So, in order:
1. a model only one agent uses (the config says which: `metrics.model_owners`) is that agent's;
2. a reply's LLM and TTS: the agent whose speech it is (`framework.running_agent`, the activity that runs
   the reply's task);
3. else (speech-to-text of what the caller says now) the current agent.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, cast

from livekit.agents import AgentSession, llm
from livekit.agents.metrics import RealtimeModelMetrics
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
from ..providers.plugins import ObservedRealtimeModel
from .metrics import (
    EOU_DELAY,
    LLM_COMPLETION_TOKENS,
    LLM_INPUT_AUDIO_TOKENS,
    LLM_OUTPUT_AUDIO_TOKENS,
    LLM_PROMPT_TOKENS,
    LLM_TTFT,
    PROVIDER_ERRORS,
    SESSION_DURATION,
    SESSIONS_ACTIVE,
    SESSIONS_ENDED,
    SESSIONS_STARTED,
    STT_AUDIO_SECONDS,
    TIME_TO_FIRST_AUDIO,
    TTS_AUDIO_SECONDS,
    TTS_CHARACTERS,
    TTS_TTFB,
    ModelKind,
    model_owners,
    provider_names,
    tenant_labels,
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
    _own: dict[str, str] = field(init=False)  # tenant and revision, on every series
    _providers: dict[tuple[ModelKind, str], str] = field(init=False)
    _owners: dict[tuple[ModelKind, str], str] = field(init=False)
    _seen: dict[_UsageKey, dict[str, float]] = field(default_factory=dict, init=False)
    _session: AgentSession[Any] | None = field(default=None, init=False)
    _started_at: float | None = field(default=None, init=False)
    # agent → "kind provider model" → usage field → amount: the usage summary, per agent.
    usage_by_agent: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._own = tenant_labels(self.tenant)
        self._providers = provider_names(self.tenant)
        self._owners = model_owners(self.tenant)

    def attach(self, session: AgentSession[Any]) -> None:
        self._session = session
        session.on("session_usage_updated", self._on_usage)
        session.on("conversation_item_added", self._on_item)
        session.on("error", self._on_error)
        session.on("close", self._on_close)
        self._started_at = time.monotonic()
        SESSIONS_STARTED.labels(**self._own).inc()
        SESSIONS_ACTIVE.labels(**self._own).inc()

    # -- labels

    def _agent_of(self, kind: ModelKind, model: str) -> str:
        """The agent a model's usage or latency belongs to (see the module's docstring)."""
        if (owner := self._owners.get((kind, model))) is not None:
            return owner
        return self._agent() if kind == "stt" else self._speaking_agent()

    def _agent(self) -> str:
        """The session's current agent."""
        if self._session is None:
            return "unknown"
        try:
            return type(self._session.current_agent).__name__
        except RuntimeError:  # before start or after close: no agent
            return "unknown"

    def _speaking_agent(self) -> str:
        """The agent whose reply is being added (its speech task runs this), else the current one."""
        running = framework.running_agent()
        return type(running).__name__ if running is not None else self._agent()

    def _labels(self, kind: ModelKind, model: str) -> dict[str, str]:
        model = model or "unknown"
        provider = self._providers.get((kind, model), "other")
        agent = self._agent_of(kind, model)
        return {**self._own, "agent": agent, "provider": provider, "model": model}

    # -- event handlers (synchronous: they run on the session's loop, between turns)

    def _delta(self, key: _UsageKey, values: dict[str, float]) -> dict[str, float]:
        """What grew since the last update; session usage is cumulative per (provider, model)."""
        before = self._seen.get(key, {})
        self._seen[key] = values
        delta = {name: value - before.get(name, 0.0) for name, value in values.items()}
        if grown := {name: amount for name, amount in delta.items() if amount > 0}:
            kind, _provider, model = key
            agent = self._agent_of(cast(ModelKind, kind), model)
            summary = self.usage_by_agent.setdefault(agent, {}).setdefault(" ".join(key), {})
            for name, amount in grown.items():
                summary[name] = summary.get(name, 0.0) + amount
        return delta

    def _on_usage(self, ev: SessionUsageUpdatedEvent) -> None:
        for usage in ev.usage.model_usage:
            if isinstance(usage, LLMModelUsage):
                d = self._delta(
                    ("llm", usage.provider, usage.model),
                    {
                        "input_tokens": usage.input_tokens,
                        "output_tokens": usage.output_tokens,
                        "input_audio_tokens": usage.input_audio_tokens,
                        "output_audio_tokens": usage.output_audio_tokens,
                    },
                )
                labels = self._labels("llm", usage.model)
                _inc(LLM_PROMPT_TOKENS, labels, d["input_tokens"])
                _inc(LLM_COMPLETION_TOKENS, labels, d["output_tokens"])
                _inc(LLM_INPUT_AUDIO_TOKENS, labels, d["input_audio_tokens"])
                _inc(LLM_OUTPUT_AUDIO_TOKENS, labels, d["output_audio_tokens"])
            elif isinstance(usage, TTSModelUsage):
                d = self._delta(
                    ("tts", usage.provider, usage.model),
                    {"characters_count": usage.characters_count, "audio_duration": usage.audio_duration},
                )
                labels = self._labels("tts", usage.model)
                _inc(TTS_CHARACTERS, labels, d["characters_count"])
                _inc(TTS_AUDIO_SECONDS, labels, d["audio_duration"])
            elif isinstance(usage, STTModelUsage):
                d = self._delta(
                    ("stt", usage.provider, usage.model), {"audio_duration": usage.audio_duration}
                )
                _inc(STT_AUDIO_SECONDS, self._labels("stt", usage.model), d["audio_duration"])

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage):
            return
        report = item.metrics
        if item.role == "assistant":
            if (latency := report.get("e2e_latency")) is not None and latency >= 0:
                agent = self._speaking_agent()
                TIME_TO_FIRST_AUDIO.labels(**self._own, agent=agent).observe(latency)
            if (ttft := report.get("llm_node_ttft")) is not None and ttft >= 0:
                meta = report.get("llm_metadata") or {}
                LLM_TTFT.labels(**self._labels("llm", meta.get("model_name", ""))).observe(ttft)
            if (ttfb := report.get("tts_node_ttfb")) is not None and ttfb >= 0:
                meta = report.get("tts_metadata") or {}
                TTS_TTFB.labels(**self._labels("tts", meta.get("model_name", ""))).observe(ttfb)
        elif item.role == "user" and (eou := report.get("end_of_turn_delay")) is not None:
            # The turn is the current agent's: it hears it.
            EOU_DELAY.labels(**self._own, agent=self._agent()).observe(eou)

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
                    if isinstance(leaf, llm.RealtimeModel):
                        continue  # not an emitter: its errors come from its live session (`_on_error`)
                    leaf.on("error", functools.partial(self._on_model_error, kind, leaf))
            if isinstance(phase.llm, ObservedRealtimeModel):
                phase.llm.session_observers.append(self._observe_realtime)

    def _observe_realtime(self, live: llm.RealtimeSession[Any]) -> None:
        live.on("metrics_collected", self._on_realtime_metrics)

    def _on_realtime_metrics(self, ev: Any) -> None:
        # A realtime reply's time to first audio is its "TTFT"; its tokens arrive with the session usage.
        if isinstance(ev, RealtimeModelMetrics) and ev.ttft >= 0 and not ev.cancelled:
            model = ev.metadata.model_name if ev.metadata and ev.metadata.model_name else ""
            LLM_TTFT.labels(**self._labels("llm", model)).observe(ev.ttft)

    def _on_model_error(self, kind: ModelKind, model: Any, _error: Any) -> None:
        labels = self._labels(kind, str(getattr(model, "model", "")))
        PROVIDER_ERRORS.labels(kind=kind, **labels).inc()

    def _on_error(self, ev: ErrorEvent) -> None:
        # LLM/STT/TTS failures are counted where they happen (`watch_models`); a realtime model's
        # errors come from its live session, so they are only seen here.
        if isinstance(ev.error, llm.RealtimeModelError) and isinstance(ev.source, llm.RealtimeModel):
            PROVIDER_ERRORS.labels(kind="llm", **self._labels("llm", str(ev.source.model))).inc()

    def _on_close(self, ev: CloseEvent) -> None:
        if self._started_at is None:
            return
        SESSIONS_ACTIVE.labels(**self._own).dec()
        SESSIONS_ENDED.labels(**self._own, reason=ev.reason.value).inc()
        SESSION_DURATION.labels(**self._own).observe(time.monotonic() - self._started_at)
        self._started_at = None  # a session closes once; never count it twice


def _inc(counter: Counter, labels: dict[str, str], amount: float) -> None:
    # Usage never shrinks; a negative delta would mean a reset we cannot interpret, so it is skipped.
    if amount > 0:
        counter.labels(**labels).inc(amount)

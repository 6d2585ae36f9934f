"""The worker's Prometheus metrics (names fixed by DESIGN.md) and the collector that feeds them.

Sources, all from livekit-agents 1.8's non-deprecated API:
- `session_usage_updated`: the session's cumulative usage per (provider, model); the collector turns
  it into counter increments by keeping the last value it saw (tokens, TTS characters and audio, STT audio);
- `conversation_item_added`: each ChatMessage's `metrics` report (TTFT and TTS TTFB on the assistant's
  messages, end-of-turn delay on the user's);
- each model's own `error` event (`watch_models`): every failed LLM/STT/TTS request, also the ones a
  fallback adapter recovered from (the session only hears of a failure when no fallback was left);
- `close`: the end of the session (duration, active sessions).

Labels are only tenant, agent (the agent class running at the time: IntroAgent / StoryAgent), provider
and model (plus from_agent/to_agent and kind where DESIGN.md says): never a room, participant or user,
for cardinality and privacy. Provider is the tenant config's provider name (`openai`, `deepgram`, ...):
the plugins report a host name there, which for self-hosted endpoints would be an address.

Job processes are separate processes: these metrics only reach the pod's endpoint in Prometheus
multiprocess mode (see `metrics_dir`), which is why gauges declare how processes are merged.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit.agents import AgentSession, llm
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    SessionUsageUpdatedEvent,
)
from prometheus_client import Counter, Gauge, Histogram

from .config import TenantConfig
from .providers import SessionModels

logger = logging.getLogger("storyteller.worker.metrics")

MODEL_LABELS = ("tenant", "agent", "provider", "model")
# Every label any worker metric may carry; a unit test holds the definitions to it.
ALLOWED_LABELS = frozenset({*MODEL_LABELS, "from_agent", "to_agent", "kind"})

# Latency buckets: conversational latencies live between 50 ms and a few seconds.
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_SESSION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)

SESSIONS_STARTED = Counter("storyteller_sessions_started_total", "Sessions accepted.", ["tenant"])
# Each session decrements its own count when it closes, so the sum over processes is the running count;
# livesum also drops the value of a process marked dead (prometheus_client.multiprocess.mark_process_dead).
SESSIONS_ACTIVE = Gauge(
    "storyteller_sessions_active", "Sessions running now.", ["tenant"], multiprocess_mode="livesum"
)
SESSION_DURATION = Histogram(
    "storyteller_session_duration_seconds",
    "Duration of whole sessions.",
    ["tenant"],
    buckets=_SESSION_BUCKETS,
)
HANDOFFS = Counter("storyteller_handoffs_total", "Agent handoffs.", ["tenant", "from_agent", "to_agent"])
LLM_PROMPT_TOKENS = Counter(
    "storyteller_llm_prompt_tokens_total", "LLM input tokens, from the session usage.", MODEL_LABELS
)
LLM_COMPLETION_TOKENS = Counter(
    "storyteller_llm_completion_tokens_total", "LLM output tokens, from the session usage.", MODEL_LABELS
)
LLM_TTFT = Histogram(
    "storyteller_llm_ttft_seconds",
    "LLM time to first token, per reply.",
    MODEL_LABELS,
    buckets=_LATENCY_BUCKETS,
)
TTS_CHARACTERS = Counter(
    "storyteller_tts_characters_total", "Characters synthesized, from the session usage.", MODEL_LABELS
)
TTS_AUDIO_SECONDS = Counter(
    "storyteller_tts_audio_seconds_total",
    "Seconds of audio synthesized, from the session usage.",
    MODEL_LABELS,
)
TTS_TTFB = Histogram(
    "storyteller_tts_ttfb_seconds",
    "TTS time to first audio byte, per reply.",
    MODEL_LABELS,
    buckets=_LATENCY_BUCKETS,
)
STT_AUDIO_SECONDS = Counter(
    "storyteller_stt_audio_seconds_total",
    "Seconds of audio transcribed, from the session usage.",
    MODEL_LABELS,
)
EOU_DELAY = Histogram(
    "storyteller_eou_delay_seconds",
    "End-of-utterance delay: end of the user's speech to the end of their turn.",
    ["tenant", "agent"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    "storyteller_provider_errors_total",
    "Failed LLM/STT/TTS requests.",
    ["tenant", "agent", "kind", "provider", "model"],
)
# Not in DESIGN.md's table (which leaves other names to the implementer): the capacity the
# "active sessions vs capacity" panel compares with. max: every process of a pod reports the same value.
SESSION_CAPACITY = Gauge(
    "storyteller_worker_session_capacity",
    "Sessions one worker pod accepts (pool.sessionsPerWorker).",
    ["tenant"],
    multiprocess_mode="max",
)

# The pool's ceiling, for the "pool at max replicas" alert (the operator exports the desired count).
POOL_MAX_REPLICAS = Gauge(
    "storyteller_worker_pool_max_replicas",
    "The tenant's pool.maxReplicas, as the worker's config says.",
    ["tenant"],
    multiprocess_mode="max",
)

ModelKind = Literal["llm", "stt", "tts"]


def provider_names(tenant: TenantConfig) -> dict[tuple[ModelKind, str], str]:
    """(kind, model) → the config's provider name, for every model block and fallback in use."""
    names: dict[tuple[ModelKind, str], str] = {}
    for path, block in tenant.model_blocks():
        kind: ModelKind = path.split(".")[1]  # type: ignore[assignment]  # "intro.llm.fallbacks[0]" → llm
        names.setdefault((kind, block.model), block.provider)  # type: ignore[attr-defined]
    return names


def record_capacity(tenant: TenantConfig) -> None:
    """Per process (the worker's main process, and each job process's prewarm): every process of a pod
    reports the same values, merged by max."""
    SESSION_CAPACITY.labels(tenant=tenant.tenant).set(tenant.pool.sessions_per_worker)
    POOL_MAX_REPLICAS.labels(tenant=tenant.tenant).set(tenant.pool.max_replicas)
    initialize_series(tenant)


_PER_KIND = {
    "llm": (LLM_PROMPT_TOKENS, LLM_COMPLETION_TOKENS, LLM_TTFT),
    "stt": (STT_AUDIO_SECONDS,),
    "tts": (TTS_CHARACTERS, TTS_AUDIO_SECONDS, TTS_TTFB),
}


def initialize_series(tenant: TenantConfig) -> None:
    """Create every series the config can produce at zero, before the first session.

    Prometheus's rate() ignores a series' first sample: a series born with its first event (a
    handoff, the first end-of-utterance of an agent) would show no rate for it, and a p95 panel
    would stay empty for a quiet tenant. The label values all come from the config: agents, and
    each phase's models with their fallbacks (a phase without its own stt/tts uses the intro's).
    """
    name = tenant.tenant
    SESSIONS_STARTED.labels(tenant=name)
    SESSIONS_ACTIVE.labels(tenant=name)  # at 0 from the worker's main process on: never a missing series
    HANDOFFS.labels(tenant=name, from_agent="IntroAgent", to_agent="StoryAgent")
    for agent, phase_name in (("IntroAgent", "intro"), ("StoryAgent", "story")):
        EOU_DELAY.labels(tenant=name, agent=agent)
        for path, block in tenant.model_blocks():
            phase, kind = path.split(".")[:2]
            inherited = (  # the story runs on the intro's stt/tts unless it has its own or is realtime
                phase == "intro"
                and kind != "llm"
                and getattr(tenant.story, kind) is None
                and not tenant.story.llm.realtime
            )
            if phase != phase_name and not (agent == "StoryAgent" and inherited):
                continue
            labels = {"tenant": name, "agent": agent, "provider": block.provider, "model": block.model}  # type: ignore[attr-defined]
            for metric in _PER_KIND[kind]:
                metric.labels(**labels)
            PROVIDER_ERRORS.labels(kind=kind, **labels)


def record_handoff(tenant: str, from_agent: str, to_agent: str) -> None:
    HANDOFFS.labels(tenant=tenant, from_agent=from_agent, to_agent=to_agent).inc()


_UsageKey = tuple[str, str, str]  # (usage type, plugin provider, model)


def _leaves(model: Any) -> list[Any]:
    """The plugin objects behind a model slot: a fallback adapter's instances, else the model itself.

    The adapters keep their instances in attributes the framework does not document; should an
    upgrade rename them, errors are still counted on the adapter itself.
    """
    if model is None or model is NOT_GIVEN:
        return []
    for attr in ("_llm_instances", "_stt_instances", "_tts_instances"):
        instances = getattr(model, attr, None)
        if isinstance(instances, list) and instances:
            return list(instances)
    return [model]


@dataclass
class SessionMetrics:
    """Feeds the metrics from one AgentSession's events; `attach` it before `session.start`."""

    tenant: TenantConfig
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

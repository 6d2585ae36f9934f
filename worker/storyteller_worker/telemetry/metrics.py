"""The worker's Prometheus metrics (names fixed by DESIGN.md), their label policy and the pod-level recorders.

Per-session values are fed by `session_metrics.SessionMetrics` from the session's events.

Labels are only tenant and revision (what the pod runs: the operator's numbered revision, so a canary
and the stable pool can be told apart), agent (the agent class running at the time: IntroAgent /
StoryAgent), provider and model (plus from_agent/to_agent, kind and reason where DESIGN.md says): never a
room, participant or user, for cardinality and privacy. Provider is the tenant config's provider name
(`openai`, `deepgram`, ...): the plugins report a host name there, which for self-hosted endpoints would be
an address.

Job processes are separate processes: these metrics only reach the pod's endpoint in Prometheus
multiprocess mode (see `metrics_dir`), which is why gauges declare how processes are merged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Literal, cast

from prometheus_client import Counter, Gauge, Histogram

from storyteller_api import contract, metric_names
from storyteller_api.spec import WorkerConfig

logger = logging.getLogger("storyteller.worker.metrics")

TENANT_LABELS = ("tenant", "revision")
MODEL_LABELS = (*TENANT_LABELS, "agent", "provider", "model")
# Every label any worker metric may carry; a unit test holds the definitions to it.
ALLOWED_LABELS = frozenset({*MODEL_LABELS, "from_agent", "to_agent", "kind", "reason"})
NO_REVISION = "0"  # a worker the operator did not render (a local run): no revision number


def revision() -> str:
    """The revision this pod runs, as the operator numbered it (its pod template's environment)."""
    return os.environ.get(contract.REVISION_ENV) or NO_REVISION


def tenant_labels(tenant: WorkerConfig) -> dict[str, str]:
    """The labels every worker series carries."""
    return {"tenant": tenant.tenant, "revision": revision()}


# Latency buckets: conversational latencies live between 50 ms and a few seconds.
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_SESSION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)

SESSIONS_STARTED = Counter(metric_names.SESSIONS_STARTED, "Sessions accepted.", TENANT_LABELS)
SESSIONS_ENDED = Counter(
    metric_names.SESSIONS_ENDED,
    "Sessions ended, by the framework's close reason.",
    [*TENANT_LABELS, "reason"],
)
# Each session decrements its own count when it closes, so the sum over processes is the running count;
# livesum also drops the value of a process marked dead (prometheus_client.multiprocess.mark_process_dead).
SESSIONS_ACTIVE = Gauge(
    metric_names.SESSIONS_ACTIVE, "Sessions running now.", TENANT_LABELS, multiprocess_mode="livesum"
)
SESSION_DURATION = Histogram(
    metric_names.SESSION_DURATION,
    "Duration of whole sessions.",
    TENANT_LABELS,
    buckets=_SESSION_BUCKETS,
)
HANDOFFS = Counter(metric_names.HANDOFFS, "Agent handoffs.", [*TENANT_LABELS, "from_agent", "to_agent"])
LLM_PROMPT_TOKENS = Counter(
    metric_names.LLM_PROMPT_TOKENS, "LLM input tokens, from the session usage.", MODEL_LABELS
)
LLM_COMPLETION_TOKENS = Counter(
    metric_names.LLM_COMPLETION_TOKENS, "LLM output tokens, from the session usage.", MODEL_LABELS
)
LLM_TTFT = Histogram(
    metric_names.LLM_TTFT,
    "LLM time to first token, per reply (a realtime model: to its first audio).",
    MODEL_LABELS,
    buckets=_LATENCY_BUCKETS,
)
LLM_INPUT_AUDIO_TOKENS = Counter(
    metric_names.LLM_INPUT_AUDIO_TOKENS,
    "Of the LLM input tokens, the audio ones (realtime models).",
    MODEL_LABELS,
)
LLM_OUTPUT_AUDIO_TOKENS = Counter(
    metric_names.LLM_OUTPUT_AUDIO_TOKENS,
    "Of the LLM output tokens, the audio ones (realtime models).",
    MODEL_LABELS,
)
TIME_TO_FIRST_AUDIO = Histogram(
    metric_names.TIME_TO_FIRST_AUDIO,
    "End of the user's speech to the agent's first audio, per reply.",
    [*TENANT_LABELS, "agent"],
    buckets=_LATENCY_BUCKETS,
)
TTS_CHARACTERS = Counter(
    metric_names.TTS_CHARACTERS, "Characters synthesized, from the session usage.", MODEL_LABELS
)
TTS_AUDIO_SECONDS = Counter(
    metric_names.TTS_AUDIO_SECONDS,
    "Seconds of audio synthesized, from the session usage.",
    MODEL_LABELS,
)
TTS_TTFB = Histogram(
    metric_names.TTS_TTFB,
    "TTS time to first audio byte, per reply.",
    MODEL_LABELS,
    buckets=_LATENCY_BUCKETS,
)
STT_AUDIO_SECONDS = Counter(
    metric_names.STT_AUDIO_SECONDS,
    "Seconds of audio transcribed, from the session usage.",
    MODEL_LABELS,
)
EOU_DELAY = Histogram(
    metric_names.EOU_DELAY,
    "End-of-utterance delay: end of the user's speech to the end of their turn.",
    [*TENANT_LABELS, "agent"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    metric_names.PROVIDER_ERRORS,
    "Failed LLM/STT/TTS requests.",
    [*TENANT_LABELS, "agent", "kind", "provider", "model"],
)
# Not in DESIGN.md's table (which leaves other names to the implementer): the capacity the
# "active sessions vs capacity" panel compares with. max: every process of a pod reports the same value.
SESSION_CAPACITY = Gauge(
    metric_names.SESSION_CAPACITY,
    "Sessions one worker pod accepts (pool.sessionsPerWorker).",
    TENANT_LABELS,
    multiprocess_mode="max",
)

ModelKind = Literal["llm", "stt", "tts"]


def provider_names(tenant: WorkerConfig) -> dict[tuple[ModelKind, str], str]:
    """(kind, model) → the config's provider name, for every model block and fallback in use."""
    names: dict[tuple[ModelKind, str], str] = {}
    for path, block in tenant.model_blocks():
        kind = cast(ModelKind, path.split(".")[1])  # "intro.llm.fallbacks[0]" → llm
        names.setdefault((kind, block.model), block.provider)
    return names


def record_capacity(tenant: WorkerConfig) -> None:
    """Per process (the worker's main process, and each job process's prewarm): every process of a pod
    reports the same values, merged by max."""
    SESSION_CAPACITY.labels(**tenant_labels(tenant)).set(tenant.pool.sessions_per_worker)
    initialize_series(tenant)


_PER_KIND = {
    "llm": (
        LLM_PROMPT_TOKENS,
        LLM_COMPLETION_TOKENS,
        LLM_INPUT_AUDIO_TOKENS,
        LLM_OUTPUT_AUDIO_TOKENS,
        LLM_TTFT,
    ),
    "stt": (STT_AUDIO_SECONDS,),
    "tts": (TTS_CHARACTERS, TTS_AUDIO_SECONDS, TTS_TTFB),
}


AGENTS = (("IntroAgent", "intro"), ("StoryAgent", "story"))


def agent_models(tenant: WorkerConfig) -> Iterator[tuple[str, ModelKind, str, str]]:
    """(agent, kind, provider, model) of every model each agent may use, fallbacks included: a phase
    without its own stt/tts uses the intro's, except a realtime story (it hears and speaks itself)."""
    for agent, phase_name in AGENTS:
        for path, block in tenant.model_blocks():
            phase, kind = path.split(".")[:2]
            inherited = (
                phase == "intro"
                and kind != "llm"
                and getattr(tenant.story, kind) is None
                and not tenant.story.llm.realtime
            )
            if phase == phase_name or (agent == "StoryAgent" and inherited):
                yield agent, cast(ModelKind, kind), block.provider, block.model


def model_owners(tenant: WorkerConfig) -> dict[tuple[ModelKind, str], str]:
    """(kind, model) → the one agent that uses it; a model both agents use is left out (ambiguous)."""
    users: dict[tuple[ModelKind, str], set[str]] = {}
    for agent, kind, _provider, model in agent_models(tenant):
        users.setdefault((kind, model), set()).add(agent)
    return {key: next(iter(agents)) for key, agents in users.items() if len(agents) == 1}


def initialize_series(tenant: WorkerConfig) -> None:
    """Create every series the config can produce at zero, before the first session.

    Prometheus's rate() ignores a series' first sample: a series born with its first event (a
    handoff, the first end-of-utterance of an agent) would show no rate for it, and a p95 panel
    would stay empty for a quiet tenant. The label values all come from the config: agents, and
    each phase's models with their fallbacks (a phase without its own stt/tts uses the intro's).
    """
    own = tenant_labels(tenant)
    SESSIONS_STARTED.labels(**own)
    SESSIONS_ACTIVE.labels(**own)  # at 0 from the worker's main process on: never a missing series
    SESSIONS_ENDED.labels(**own, reason="error")  # the one reason a canary is judged on
    HANDOFFS.labels(**own, from_agent="IntroAgent", to_agent="StoryAgent")
    for agent, _phase in AGENTS:
        EOU_DELAY.labels(**own, agent=agent)
        TIME_TO_FIRST_AUDIO.labels(**own, agent=agent)
    for agent, kind, provider, model in agent_models(tenant):
        labels = {**own, "agent": agent, "provider": provider, "model": model}
        for metric in _PER_KIND[kind]:
            metric.labels(**labels)
        PROVIDER_ERRORS.labels(kind=kind, **labels)


def record_handoff(tenant: WorkerConfig, from_agent: str, to_agent: str) -> None:
    HANDOFFS.labels(**tenant_labels(tenant), from_agent=from_agent, to_agent=to_agent).inc()

"""The dashboards' content: every panel's title, unit and PromQL, apart from the layout (generate.py).

Selectors: worker series carry `tenant` and `revision` (their own labels: the operator numbers what the
pods run) and `namespace` (the scrape's target label); the SDK's `lk_agents_*` series carry no tenant, so
they are selected by namespace and shown per pod.
Grafana variables used: $namespace, $tenant, $revision (multi-value regexes), $__rate_interval, $__range.
The price table is the recording rule `storyteller:price_usd_per_unit{provider, model, unit}` shipped in
the chart's PrometheusRule (`dashboards/rules.yaml`); edit the prices there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storyteller_api import metric_names as m

W = 'namespace=~"$namespace", tenant=~"$tenant", revision=~"$revision"'  # worker series of the chosen ones
NS = 'namespace=~"$namespace"'
OP_POOL = 'namespace=~"$namespace", tenant=~"$tenant"'  # operator gauges carry both labels themselves


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries | stat | bargauge
    # For whoever is on call: what the panel shows and what a bad value means. Required, and keyword-only
    # so it can follow the defaulted `kind`.
    description: str = field(kw_only=True)

    def __post_init__(self) -> None:
        if not self.description.strip():
            raise ValueError(f"panel {self.title!r} needs a description")


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    tenant_metric: str = m.SESSIONS_STARTED  # where $tenant's values come from
    revisions: bool = True  # a $revision variable (worker series carry the label; the operator's do not)
    tags: tuple[str, ...] = field(default=("storyteller",))


def _rate(metric: str, by: str, sel: str = W) -> str:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[$__rate_interval]))"


def _increase(metric: str, by: str, sel: str = W) -> str:
    return f"sum by ({by}) (increase({metric}{{{sel}}}[$__range]))"


def _quantile(q: float, metric: str, by: str, sel: str = W) -> str:
    by = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))"


def _cost(metric: str, unit: str, scale: str = "", *, less: str = "") -> str:
    """Spend by tenant: usage in the range times the price of its (provider, model). `less`: a counter of
    the part of `metric` priced apart (the audio tokens among the tokens), taken out where it exists."""
    usage = _increase(metric, "tenant, provider, model")
    if less:
        usage = f"({usage}\n  - ({_increase(less, 'tenant, provider, model')} or {usage} * 0))"
    return (
        f"sum by (tenant) (\n  {usage}{scale}\n"
        f'  * on (provider, model) group_left () {m.PRICE_PER_UNIT}{{unit="{unit}"}}\n)'
    )


TENANT_USAGE = Dashboard(
    uid="storyteller-tenant-usage",
    title="Storyteller / Tenant usage",
    panels=(
        Panel(
            "LLM tokens per second",
            "short",
            (
                Query(
                    _rate(m.LLM_PROMPT_TOKENS, "tenant, model"),
                    "{{tenant}} {{model}} prompt",
                ),
                Query(
                    _rate(m.LLM_COMPLETION_TOKENS, "tenant, model"),
                    "{{tenant}} {{model}} completion",
                ),
            ),
            description="Prompt and completion tokens the tenants' language models use per second, by "
            "model: the pace of the LLM bill. Tokens rising while sessions started per minute stay flat "
            "mean longer conversations or grown instructions; no tokens while sessions run mean the LLM "
            "requests fail (see Provider errors on Worker pools).",
        ),
        Panel(
            "LLM tokens in range",
            "short",
            (
                Query(
                    _increase(m.LLM_PROMPT_TOKENS, "tenant, model"),
                    "{{tenant}} {{model}} prompt",
                ),
                Query(
                    _increase(m.LLM_COMPLETION_TOKENS, "tenant, model"),
                    "{{tenant}} {{model}} completion",
                ),
            ),
            kind="bargauge",
            description="Prompt and completion tokens used over the whole selected time range, per tenant "
            "and model: what the LLM part of the bill counts. A tenant far above the others with a "
            "similar number of sessions has longer conversations or a larger prompt.",
        ),
        Panel(
            "LLM audio tokens per second by agent",
            "short",
            (
                Query(
                    _rate(m.LLM_INPUT_AUDIO_TOKENS, "tenant, agent, model"),
                    "{{tenant}} {{agent}} {{model}} in",
                ),
                Query(
                    _rate(m.LLM_OUTPUT_AUDIO_TOKENS, "tenant, agent, model"),
                    "{{tenant}} {{agent}} {{model}} out",
                ),
            ),
            description="Audio tokens a realtime model (openai-realtime) hears and speaks per second, per "
            "agent: the expensive part of a speech-to-speech phase (about 4 to 8 times a text token). Zero "
            "for agents on a chat model with speech-to-text and text-to-speech. Rising per session means "
            "longer turns or a caller who is talked over and repeats.",
        ),
        Panel(
            "TTS characters in range",
            "short",
            (Query(_increase(m.TTS_CHARACTERS, "tenant, model"), "{{tenant}} {{model}}"),),
            kind="bargauge",
            description="Characters sent to text-to-speech over the selected time range, per tenant and "
            "model (TTS is billed per character). A tenant far above the others with a similar number of "
            "sessions has unusually long replies.",
        ),
        Panel(
            "TTS audio minutes in range",
            "m",
            (
                Query(
                    _increase(m.TTS_AUDIO_SECONDS, "tenant, model") + " / 60",
                    "{{tenant}} {{model}}",
                ),
            ),
            kind="bargauge",
            description="Minutes of speech synthesized over the selected time range, per tenant and model "
            "(what a provider billing per audio minute counts). It should follow TTS characters.",
        ),
        Panel(
            "STT audio minutes in range",
            "m",
            (
                Query(
                    _increase(m.STT_AUDIO_SECONDS, "tenant, model") + " / 60",
                    "{{tenant}} {{model}}",
                ),
            ),
            kind="bargauge",
            description="Minutes of callers' audio transcribed over the selected time range, per tenant and "
            "model (speech-to-text is billed per minute). Only voice sessions produce it; empty for "
            "text-only traffic.",
        ),
        Panel(
            "Sessions started in range",
            "short",
            (Query(_increase(m.SESSIONS_STARTED, "tenant"), "{{tenant}}"),),
            kind="stat",
            description="Calls dispatched to each tenant's agents over the selected time range. Zero for a "
            "tenant that normally has traffic means calls do not reach its workers: check its Ready "
            "condition (kubectl get sd) and that LiveKit dispatches to its agentName.",
        ),
        Panel(
            "Sessions started per minute",
            "short",
            (Query(_rate(m.SESSIONS_STARTED, "tenant") + " * 60", "{{tenant}}"),),
            description="New sessions per minute per tenant: the demand the pool is sized for. A sudden "
            "drop to zero while callers still call points at LiveKit or the workers' registration; a spike "
            "is what the autoscaler must absorb (Active sessions vs capacity on Worker pools).",
        ),
        Panel(
            "Estimated cost in range (USD)",
            "currencyUSD",
            (
                Query(
                    _cost(m.LLM_PROMPT_TOKENS, "llm_prompt_token", less=m.LLM_INPUT_AUDIO_TOKENS),
                    "{{tenant}} LLM prompt",
                ),
                Query(
                    _cost(m.LLM_COMPLETION_TOKENS, "llm_completion_token", less=m.LLM_OUTPUT_AUDIO_TOKENS),
                    "{{tenant}} LLM completion",
                ),
                Query(_cost(m.LLM_INPUT_AUDIO_TOKENS, "llm_input_audio_token"), "{{tenant}} LLM audio in"),
                Query(_cost(m.LLM_OUTPUT_AUDIO_TOKENS, "llm_output_audio_token"), "{{tenant}} LLM audio out"),
                Query(_cost(m.TTS_CHARACTERS, "tts_character"), "{{tenant}} TTS"),
                Query(_cost(m.STT_AUDIO_SECONDS, "stt_minute", " / 60"), "{{tenant}} STT"),
            ),
            kind="bargauge",
            description="An estimate: usage in the selected time range × the price table (recording rule "
            "storyteller:price_usd_per_unit; the chart value prometheusRule.prices sets it). A realtime "
            "model's audio tokens are priced apart from its text tokens (units llm_input_audio_token, "
            "llm_output_audio_token). A model "
            "missing from the price table adds nothing, so a figure lower than expected may be a missing "
            "price rather than a cheap tenant.",
        ),
    ),
)

# (title, metric, what it measures and what a high value means)
_LATENCY_PER_AGENT = (
    (
        "Time to first audio",
        m.TIME_TO_FIRST_AUDIO,
        "Time from the end of the caller's speech to the agent's first audio, per agent: the silence the "
        "caller hears, all stages together (end of turn, model, speech synthesis, transport). A realtime "
        "agent has no separate LLM and TTS stages: this is its figure. High for the StoryAgent only, at "
        "the handoff: see spec.intro.handoff.mode overlapping. Only voice sessions produce it.",
    ),
    (
        "LLM time to first token",
        m.LLM_TTFT,
        "Time from a reply's request to the language model's first token, per agent: most of the "
        "silence a caller hears before the answer. StorytellerTTFTHigh fires when p95 stays above 1.5 s; "
        "high for one agent only: compare its model in LLM time to first token p95 by model.",
    ),
    (
        "TTS time to first byte",
        m.TTS_TTFB,
        "Time from a reply's text to text-to-speech's first audio byte, per agent; it adds to the "
        "caller's wait before each answer. High for every agent at once is usually the TTS provider.",
    ),
    (
        "End-of-utterance delay",
        m.EOU_DELAY,
        "Time from the end of the caller's speech to the end of their turn, per agent: how long the agent "
        "waits before it starts answering. Only voice sessions produce it. High values make the agent feel "
        "slow to notice that the caller stopped talking.",
    ),
)

CONVERSATION_LATENCY = Dashboard(
    uid="storyteller-conversation-latency",
    title="Storyteller / Conversation latency",
    panels=(
        *(
            Panel(
                f"{title} p50 / p95 / p99 per agent",
                "s",
                tuple(
                    Query(_quantile(q, metric, "agent"), f"{{{{agent}}}} p{int(q * 100)}")
                    for q in (0.5, 0.95, 0.99)
                ),
                description=description,
            )
            for title, metric, description in _LATENCY_PER_AGENT
        ),
        Panel(
            "LLM time to first token p95 by model",
            "s",
            (
                Query(
                    _quantile(0.95, m.LLM_TTFT, "provider, model"),
                    "{{provider}} {{model}}",
                ),
            ),
            description="95th percentile LLM time to first token per provider and model, over the chosen "
            "tenants. Tells a slow model from a slow tenant: one model high for every tenant is the "
            "provider or the model; switch the phase's llm or rely on its fallbacks.",
        ),
        Panel(
            "Session duration p50 / p95",
            "s",
            tuple(
                Query(
                    _quantile(q, m.SESSION_DURATION, "tenant"),
                    f"{{{{tenant}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.95)
            ),
            description="How long calls last, p50 and p95 per tenant, over the sessions that ended in each "
            "interval (empty when none ended). A sudden drop means calls end early: failing providers "
            "or callers hanging up on a slow agent.",
        ),
    ),
)

WORKER_POOLS = Dashboard(
    uid="storyteller-worker-pools",
    title="Storyteller / Worker pools",
    panels=(
        Panel(
            "Replicas: desired vs reporting",
            "short",
            (
                Query(f"sum by (tenant) ({m.POOL_DESIRED_REPLICAS}{{{OP_POOL}}})", "{{tenant}} desired"),
                Query(f"count by (tenant) ({m.SESSION_CAPACITY}{{{W}}})", "{{tenant}} running"),
            ),
            description="Worker pods the operator asks for (desired) vs pods whose metrics Prometheus "
            "scrapes (running). A gap longer than a pod's start means pods do not start (image, quota, "
            "scheduling: the tenant's Progressing and Degraded conditions say) or are not scraped "
            "(the tenant's PodMonitor).",
        ),
        Panel(
            "Active sessions vs capacity",
            "short",
            (
                Query(f"sum by (tenant) ({m.SESSIONS_ACTIVE}{{{W}}})", "{{tenant}} active"),
                Query(f"sum by (tenant) ({m.SESSION_CAPACITY}{{{W}}})", "{{tenant}} capacity"),
            ),
            description="Sessions running across a tenant's pods vs the sessions those pods accept (pods × "
            "pool.sessionsPerWorker). Active at capacity means new calls are refused until the pool grows; "
            "at pool.maxReplicas as well, StorytellerPoolAtMaxReplicas fires.",
        ),
        Panel(
            "Idle job processes",
            "short",
            (
                Query(
                    f"max by (pod) (lk_agents_child_process_count{{{NS}}})\n"
                    f"  - on (pod) group_left () sum by (pod) ({m.SESSIONS_ACTIVE}{{{NS}}})",
                    "{{pod}}",
                ),
            ),
            description="Child processes of the worker minus the sessions running in them, per pod: "
            "prewarmed processes ready to take a call (approximate: the count includes the forkserver). "
            "At zero under load, new calls wait for a process to start; see pool.idleProcesses.",
        ),
        Panel(
            "Worker load",
            "percentunit",
            (
                Query(
                    f"sum by (pod) ({m.SESSIONS_ACTIVE}{{{NS}}})\n"
                    f"  / on (pod) max by (pod) ({m.SESSION_CAPACITY}{{{NS}}})",
                    "{{pod}}",
                ),
            ),
            description="Share of each pod's session slots in use (sessions / pool.sessionsPerWorker). At "
            "100 % the pod takes no new call; every pod at 100 % means the pool is full. (The worker reports "
            "half this share to LiveKit, lk_agents_worker_load, to stay below its target load.)",
        ),
        Panel(
            "Handoffs per second",
            "ops",
            (
                Query(
                    _rate(m.HANDOFFS, "tenant, from_agent, to_agent"),
                    "{{from_agent}} → {{to_agent}}",
                ),
            ),
            description="IntroAgent → StoryAgent handoffs per second: sessions that got past the intro. "
            "Far fewer handoffs than sessions started means callers hang up during the intro or its "
            "handoff fails (worker log).",
        ),
        Panel(
            "Provider errors per second",
            "ops",
            (
                Query(
                    _rate(m.PROVIDER_ERRORS, "tenant, kind, provider, model"),
                    "{{kind}} {{provider}} {{model}}",
                ),
            ),
            description="Failed LLM, STT and TTS requests per second by kind, provider and model, fallbacks "
            "included. Should be zero; StorytellerProviderErrorRateHigh fires above 5 % of LLM replies. "
            "Check the provider's status and the tenant's key Secrets.",
        ),
    ),
)

OPERATOR = Dashboard(
    uid="storyteller-operator",
    title="Storyteller / Operator",
    tenant_metric=m.POOL_DESIRED_REPLICAS,
    revisions=False,
    panels=(
        Panel(
            "Reconciles per second by result",
            "ops",
            (
                Query(
                    f"sum by (result) (rate({m.RECONCILE_TOTAL}[$__rate_interval]))",
                    "{{result}}",
                ),
            ),
            description="Tenant reconciles per second: changed (something was written), unchanged (nothing "
            "to do), error. The operator revisits every tenant every few seconds, so with tenants a flat "
            "zero means it is stuck (StorytellerOperatorNotReconciling), and no data at all that it is down "
            "or not scraped (StorytellerOperatorDown).",
        ),
        Panel(
            "Reconcile errors per second",
            "ops",
            (
                Query(
                    f'sum (rate({m.RECONCILE_TOTAL}{{result="error"}}[$__rate_interval]))',
                    "errors",
                ),
            ),
            description="Failed reconciles per second. Should be zero; a sustained rate fires "
            'StorytellerOperatorReconcileErrors. The operator log ("reconcile failed", with the tenant) '
            "and the tenants' Degraded condition say why.",
        ),
        Panel(
            "Reconcile duration p50 / p95 / p99",
            "s",
            tuple(
                Query(
                    _quantile(q, m.RECONCILE_SECONDS, "le", sel="").replace("le, le", "le"),
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ),
            description="Time to reconcile one tenant: reads, applies and the status write. Normally well "
            "under a second; seconds mean a slow API server or workers slow to report their sessions, and "
            "scaling decisions lag by as much.",
        ),
        Panel(
            "Desired replicas per tenant",
            "short",
            (
                Query(
                    f"sum by (namespace, tenant) ({m.POOL_DESIRED_REPLICAS}{{{OP_POOL}}})",
                    "{{namespace}}/{{tenant}}",
                ),
            ),
            description="Worker pods the operator asks for, per tenant (builtin autoscaler: from sessions; "
            "keda and none: spec.replicas). Flat at the tenant's pool.maxReplicas under load means the pool "
            "cannot grow further.",
        ),
        Panel(
            "Active sessions per tenant (operator's view)",
            "short",
            (
                Query(
                    f"sum by (namespace, tenant) ({m.POOL_ACTIVE_SESSIONS}{{{OP_POOL}}})",
                    "{{namespace}}/{{tenant}}",
                ),
            ),
            description="Sessions the operator counted across each pool when it last sized it (builtin "
            "autoscaler). It should match Active sessions on Worker pools; less means some pods do not "
            "answer (the tenant's ScalingLimited condition then says WorkersNotReporting).",
        ),
    ),
)


def _share(part: str, whole: str, by: str = "tenant, revision", part_sel: str = W) -> str:
    """part / whole over the selected range, per `by`: a rate of sessions (handoffs per session...)."""
    return f"{_increase(part, by, part_sel)}\n/\n{_increase(whole, by)}"


BY_REVISION = "{{tenant}} r{{revision}}"  # the legend of a series per tenant and revision

REVISIONS = Dashboard(
    uid="storyteller-revisions",
    title="Storyteller / Revisions",
    panels=(
        Panel(
            "Sessions started per minute by revision",
            "short",
            (Query(f"60 * {_rate(m.SESSIONS_STARTED, 'tenant, revision')}", BY_REVISION),),
            description="New sessions per minute, per tenant and revision (the number the operator gave "
            "what the pods run: status.revisions). While two revisions serve at once (a rolling update, a "
            "canary) it shows the share of calls each one takes.",
        ),
        Panel(
            "Handoff rate by revision",
            "percentunit",
            (Query(_share(m.HANDOFFS, m.SESSIONS_STARTED), BY_REVISION),),
            kind="bargauge",
            description="Sessions that reached the StoryAgent per session started, over the selected range, "
            "per revision. A revision well below the one before it has an intro that does not hand off "
            "(its instructions, or a model that does not call the tool): compare it before all callers get "
            "it.",
        ),
        Panel(
            "Sessions ended by error by revision",
            "percentunit",
            (
                Query(
                    _share(m.SESSIONS_ENDED, m.SESSIONS_STARTED, part_sel=f'{W}, reason="error"'),
                    BY_REVISION,
                ),
            ),
            kind="bargauge",
            description="The share of sessions the framework closed with an error (no fallback left for a "
            "failing model), over the selected range, per revision. Anything above zero is a caller who "
            "heard the call fail; a revision above its predecessor brought it.",
        ),
        Panel(
            "Provider errors per session by revision",
            "short",
            (Query(_share(m.PROVIDER_ERRORS, m.SESSIONS_STARTED), BY_REVISION),),
            kind="bargauge",
            description="Failed LLM, STT and TTS requests per session, over the selected range, per revision "
            "(fallbacks may have hidden them from the caller). A revision with more than its predecessor "
            "uses a model, voice or endpoint that fails.",
        ),
        Panel(
            "Time to first audio p95 by revision",
            "s",
            (Query(_quantile(0.95, m.TIME_TO_FIRST_AUDIO, "tenant, revision"), BY_REVISION),),
            description="95th percentile of the time from the end of the caller's speech to the agent's "
            "first audio, per revision: what callers hear as slowness. A revision above its predecessor "
            "has a slower model, voice or prompt.",
        ),
        Panel(
            "LLM time to first token p95 by revision",
            "s",
            (Query(_quantile(0.95, m.LLM_TTFT, "tenant, revision"), BY_REVISION),),
            description="95th percentile of the language model's time to first token (a realtime model: to "
            "its first audio), per revision. Most of the time to first audio when it rises with it.",
        ),
    ),
)

DASHBOARDS = (TENANT_USAGE, CONVERSATION_LATENCY, WORKER_POOLS, REVISIONS, OPERATOR)

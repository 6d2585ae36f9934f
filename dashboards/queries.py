"""The dashboards' content: every panel's title, unit and PromQL, apart from the layout (generate.py).

Selectors: worker series carry `tenant` (their own label) and `namespace` (the scrape's target label);
the SDK's `lk_agents_*` series carry no tenant, so they are selected by namespace and shown per pod.
Grafana variables used: $namespace, $tenant (multi-value regexes), $__rate_interval, $__range.
The price table is the recording rule `storyteller:price_usd_per_unit{provider, model, unit}` shipped in
the chart's PrometheusRule (`dashboards/rules.yaml`); edit the prices there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storyteller_api import metric_names as m

W = 'namespace=~"$namespace", tenant=~"$tenant"'  # worker series of the chosen tenants
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
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    tenant_metric: str = m.SESSIONS_STARTED  # where $tenant's values come from
    tags: tuple[str, ...] = field(default=("storyteller",))


def _rate(metric: str, by: str, sel: str = W) -> str:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[$__rate_interval]))"


def _increase(metric: str, by: str, sel: str = W) -> str:
    return f"sum by ({by}) (increase({metric}{{{sel}}}[$__range]))"


def _quantile(q: float, metric: str, by: str, sel: str = W) -> str:
    by = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))"


def _cost(metric: str, unit: str, scale: str = "") -> str:
    """Spend by tenant: usage in the range times the price of its (provider, model)."""
    return (
        f"sum by (tenant) (\n  {_increase(metric, 'tenant, provider, model')}{scale}\n"
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
        ),
        Panel(
            "TTS characters in range",
            "short",
            (Query(_increase(m.TTS_CHARACTERS, "tenant, model"), "{{tenant}} {{model}}"),),
            kind="bargauge",
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
        ),
        Panel(
            "Sessions started in range",
            "short",
            (Query(_increase(m.SESSIONS_STARTED, "tenant"), "{{tenant}}"),),
            kind="stat",
        ),
        Panel(
            "Sessions started per minute",
            "short",
            (Query(_rate(m.SESSIONS_STARTED, "tenant") + " * 60", "{{tenant}}"),),
        ),
        Panel(
            "Estimated cost in range (USD)",
            "currencyUSD",
            (
                Query(_cost(m.LLM_PROMPT_TOKENS, "llm_prompt_token"), "{{tenant}} LLM prompt"),
                Query(
                    _cost(m.LLM_COMPLETION_TOKENS, "llm_completion_token"),
                    "{{tenant}} LLM completion",
                ),
                Query(_cost(m.TTS_CHARACTERS, "tts_character"), "{{tenant}} TTS"),
                Query(_cost(m.STT_AUDIO_SECONDS, "stt_minute", " / 60"), "{{tenant}} STT"),
            ),
            kind="bargauge",
            description="An estimate: usage × the price table (rule storyteller:price_usd_per_unit).",
        ),
    ),
)

_LATENCY_PER_AGENT = (
    ("LLM time to first token", m.LLM_TTFT),
    ("TTS time to first byte", m.TTS_TTFB),
    ("End-of-utterance delay", m.EOU_DELAY),
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
            )
            for title, metric in _LATENCY_PER_AGENT
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
        ),
        Panel(
            "Active sessions vs capacity",
            "short",
            (
                Query(f"sum by (tenant) ({m.SESSIONS_ACTIVE}{{{W}}})", "{{tenant}} active"),
                Query(f"sum by (tenant) ({m.SESSION_CAPACITY}{{{W}}})", "{{tenant}} capacity"),
            ),
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
            description="Child processes of the worker minus the sessions running in them (approximate: "
            "the count includes the forkserver).",
        ),
        Panel(
            "Worker load",
            "percentunit",
            (Query(f"max by (pod) (lk_agents_worker_load{{{NS}}})", "{{pod}}"),),
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
        ),
    ),
)

OPERATOR = Dashboard(
    uid="storyteller-operator",
    title="Storyteller / Operator",
    tenant_metric=m.POOL_DESIRED_REPLICAS,
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
        ),
    ),
)

DASHBOARDS = (TENANT_USAGE, CONVERSATION_LATENCY, WORKER_POOLS, OPERATOR)

"""The dashboards' content: every panel's title, unit and PromQL, apart from the layout (generate.py).

Selectors: worker series carry `tenant` (their own label) and `namespace` (the scrape's target label);
the SDK's `lk_agents_*` series carry no tenant, so they are selected by namespace and shown per pod.
Grafana variables used: $namespace, $tenant (multi-value regexes), $__rate_interval, $__range.
The price table is the recording rule `storyteller:price_usd_per_unit{provider, model, unit}` shipped in
the chart's PrometheusRule (`dashboards/rules.yaml`); edit the prices there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    tenant_metric: str = "storyteller_sessions_started_total"  # where $tenant's values come from
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
        f'  * on (provider, model) group_left () storyteller:price_usd_per_unit{{unit="{unit}"}}\n)'
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
                    _rate("storyteller_llm_prompt_tokens_total", "tenant, model"),
                    "{{tenant}} {{model}} prompt",
                ),
                Query(
                    _rate("storyteller_llm_completion_tokens_total", "tenant, model"),
                    "{{tenant}} {{model}} completion",
                ),
            ),
        ),
        Panel(
            "LLM tokens in range",
            "short",
            (
                Query(
                    _increase("storyteller_llm_prompt_tokens_total", "tenant, model"),
                    "{{tenant}} {{model}} prompt",
                ),
                Query(
                    _increase("storyteller_llm_completion_tokens_total", "tenant, model"),
                    "{{tenant}} {{model}} completion",
                ),
            ),
            kind="bargauge",
        ),
        Panel(
            "TTS characters in range",
            "short",
            (Query(_increase("storyteller_tts_characters_total", "tenant, model"), "{{tenant}} {{model}}"),),
            kind="bargauge",
        ),
        Panel(
            "TTS audio minutes in range",
            "m",
            (
                Query(
                    _increase("storyteller_tts_audio_seconds_total", "tenant, model") + " / 60",
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
                    _increase("storyteller_stt_audio_seconds_total", "tenant, model") + " / 60",
                    "{{tenant}} {{model}}",
                ),
            ),
            kind="bargauge",
        ),
        Panel(
            "Sessions started in range",
            "short",
            (Query(_increase("storyteller_sessions_started_total", "tenant"), "{{tenant}}"),),
            kind="stat",
        ),
        Panel(
            "Sessions started per minute",
            "short",
            (Query(_rate("storyteller_sessions_started_total", "tenant") + " * 60", "{{tenant}}"),),
        ),
        Panel(
            "Estimated cost in range (USD)",
            "currencyUSD",
            (
                Query(
                    _cost("storyteller_llm_prompt_tokens_total", "llm_prompt_token"), "{{tenant}} LLM prompt"
                ),
                Query(
                    _cost("storyteller_llm_completion_tokens_total", "llm_completion_token"),
                    "{{tenant}} LLM completion",
                ),
                Query(_cost("storyteller_tts_characters_total", "tts_character"), "{{tenant}} TTS"),
                Query(_cost("storyteller_stt_audio_seconds_total", "stt_minute", " / 60"), "{{tenant}} STT"),
            ),
            kind="bargauge",
            description="An estimate: usage × the price table (rule storyteller:price_usd_per_unit).",
        ),
    ),
)

_LATENCY_PER_AGENT = (
    ("LLM time to first token", "storyteller_llm_ttft_seconds"),
    ("TTS time to first byte", "storyteller_tts_ttfb_seconds"),
    ("End-of-utterance delay", "storyteller_eou_delay_seconds"),
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
                    _quantile(0.95, "storyteller_llm_ttft_seconds", "provider, model"),
                    "{{provider}} {{model}}",
                ),
            ),
        ),
        Panel(
            "Session duration p50 / p95",
            "s",
            tuple(
                Query(
                    _quantile(q, "storyteller_session_duration_seconds", "tenant"),
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
                Query(
                    f"sum by (tenant) (storyteller_pool_desired_replicas{{{OP_POOL}}})", "{{tenant}} desired"
                ),
                Query(
                    f"count by (tenant) (storyteller_worker_session_capacity{{{W}}})", "{{tenant}} running"
                ),
            ),
        ),
        Panel(
            "Active sessions vs capacity",
            "short",
            (
                Query(f"sum by (tenant) (storyteller_sessions_active{{{W}}})", "{{tenant}} active"),
                Query(f"sum by (tenant) (storyteller_worker_session_capacity{{{W}}})", "{{tenant}} capacity"),
            ),
        ),
        Panel(
            "Idle job processes",
            "short",
            (
                Query(
                    f"max by (pod) (lk_agents_child_process_count{{{NS}}})\n"
                    f"  - on (pod) group_left () sum by (pod) (storyteller_sessions_active{{{NS}}})",
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
                    _rate("storyteller_handoffs_total", "tenant, from_agent, to_agent"),
                    "{{from_agent}} → {{to_agent}}",
                ),
            ),
        ),
        Panel(
            "Provider errors per second",
            "ops",
            (
                Query(
                    _rate("storyteller_provider_errors_total", "tenant, kind, provider, model"),
                    "{{kind}} {{provider}} {{model}}",
                ),
            ),
        ),
    ),
)

OPERATOR = Dashboard(
    uid="storyteller-operator",
    title="Storyteller / Operator",
    tenant_metric="storyteller_pool_desired_replicas",
    panels=(
        Panel(
            "Reconciles per second by result",
            "ops",
            (
                Query(
                    "sum by (result) (rate(storyteller_operator_reconcile_total[$__rate_interval]))",
                    "{{result}}",
                ),
            ),
        ),
        Panel(
            "Reconcile errors per second",
            "ops",
            (
                Query(
                    'sum (rate(storyteller_operator_reconcile_total{result="error"}[$__rate_interval]))',
                    "errors",
                ),
            ),
        ),
        Panel(
            "Reconcile duration p50 / p95 / p99",
            "s",
            tuple(
                Query(
                    _quantile(q, "storyteller_operator_reconcile_seconds", "le", sel="").replace(
                        "le, le", "le"
                    ),
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
                    f"sum by (namespace, tenant) (storyteller_pool_desired_replicas{{{OP_POOL}}})",
                    "{{namespace}}/{{tenant}}",
                ),
            ),
        ),
        Panel(
            "Active sessions per tenant (operator's view)",
            "short",
            (
                Query(
                    f"sum by (namespace, tenant) (storyteller_pool_active_sessions{{{OP_POOL}}})",
                    "{{namespace}}/{{tenant}}",
                ),
            ),
        ),
    ),
)

DASHBOARDS = (TENANT_USAGE, CONVERSATION_LATENCY, WORKER_POOLS, OPERATOR)

"""Every panel query of every dashboard, and where each is proven on real data.

A query needs the series its metrics come from. Text sessions in a worker process give most of them
(tests/integration/test_observability.py); speech-to-text and end-of-utterance need a caller's voice,
and provider errors a failing provider (tests/e2e/test_voice_session.py); the operator's series need
the operator process on a cluster (tests/cluster/test_operator_metrics.py). `SOURCES` assigns each query
to exactly one of them, so none is left unproven.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"

# Speech to text, turns and first audio need a caller's voice; audio tokens the voice test's realtime story.
VOICE = re.compile(
    r"storyteller_(stt_audio_seconds|eou_delay_seconds|provider_errors_total|time_to_first_audio_seconds"
    r"|llm_(input|output)_audio_tokens)"
)
OPERATOR = re.compile(r"storyteller_operator_|storyteller_pool_(desired_replicas|active_sessions)")


def source_of(expr: str) -> str:
    """Which run proves `expr`: "operator", "voice" or "text"."""
    if OPERATOR.search(expr):
        return "operator"
    if VOICE.search(expr):
        return "voice"
    return "text"


def panel_queries(source: str | None = None) -> Iterator[tuple[str, str]]:
    """(id, expr) of every panel target, or only those `source` proves."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                if source is None or source_of(expr) == source:
                    yield f"{dashboard['uid']}/{panel['title']}/{target['refId']}", expr


def substitute(expr: str, namespace: str, tenant: str, revision: str = ".*") -> str:
    """The query as Grafana sends it, with the template variables set (every revision: "All")."""
    return (
        expr.replace("$namespace", namespace)
        .replace("$tenant", tenant)
        .replace("$revision", revision)
        .replace("$__rate_interval", "1m")
        .replace("$__range", "15m")
    )


def assert_has_data(result: list[dict[str, Any]], expr: str) -> None:
    assert result, f"no series for\n{expr}"
    values = [float(series["value"][1]) for series in result]
    assert any(math.isfinite(v) for v in values), f"only NaN/Inf (no observations in the window): {result}"

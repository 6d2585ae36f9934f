"""Where the operator reads each revision's outcomes for canary analysis: the workers' per-revision series
(every worker series carries `revision`, the number the operator gave what the pod runs), from Prometheus.

Why Prometheus and not the workers themselves (the default session source asks each pod): the analysis
compares two revisions over a window of minutes to an hour, and the pods that served it come and go
(scale-in, a drained canary). Prometheus keeps the series of pods that are gone and computes increases and
quantiles over any window; asking the pods would lose whatever a departed pod served and would need the
operator to keep every pod's history itself. So canary analysis needs the operator's Prometheus address
(the chart's prometheus.url, which KEDA's trigger uses too); without one a canary waits for a manual
promote.

Six instant queries per judged tenant, concurrent, under one deadline; an answer that fails or says
nonsense makes the whole reading unavailable (None): a canary is never judged on half its figures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from storyteller_api import metric_names
from storyteller_operator.canary import Figures
from storyteller_operator.sessions import Unusable, get_bytes, parse_json, run_io, shared_session

log = logging.getLogger("storyteller.operator.revision_figures")

DEADLINE_S = 3.0  # all six queries of one tenant
MAX_BYTES = 256 * 1024  # a tenant's revisions: a handful of series per query
_BACKSTOP_S = 1.0
QUANTILE = 0.95

# Figures field → the series it counts (a counter's increase) or the histogram it takes the p95 of.
COUNTS = {
    "sessions": (metric_names.SESSIONS_STARTED, ""),
    "handoffs": (metric_names.HANDOFFS, ""),
    "provider_errors": (metric_names.PROVIDER_ERRORS, ""),
    "error_ends": (metric_names.SESSIONS_ENDED, 'reason="error"'),
}
QUANTILES = {
    "first_audio_p95": metric_names.TIME_TO_FIRST_AUDIO,
    "ttft_p95": metric_names.LLM_TTFT,
}


class FigureSource(Protocol):
    where: str  # for messages

    def figures(self, namespace: str, tenant: str, window_s: float) -> dict[int, Figures] | None:
        """Revision → its figures over the last `window_s`; None when they cannot be read now."""
        ...


def queries(namespace: str, tenant: str, window_s: float) -> dict[str, str]:
    """Figures field → the PromQL that reads it for every revision of the tenant."""
    window = f"{max(math.ceil(window_s), 1)}s"
    selector = f'namespace="{namespace}", tenant="{tenant}"'
    out = {}
    for field, (metric, extra) in COUNTS.items():
        sel = f"{selector}, {extra}" if extra else selector
        out[field] = f"sum by (revision) (increase({metric}{{{sel}}}[{window}]))"
    for field, metric in QUANTILES.items():
        out[field] = (
            f"histogram_quantile({QUANTILE}, sum by (revision, le) "
            f"(increase({metric}_bucket{{{selector}}}[{window}])))"
        )
    return out


def by_revision(body: Any) -> dict[int, float]:
    """Revision → value in an instant query's answer; a series without a numbered revision or a finite
    value is left out (NaN: a quantile with no observations). Unusable for an answer of the wrong shape."""
    try:
        result = body["data"]["result"]
    except (KeyError, TypeError):
        raise Unusable("no data.result in the answer") from None
    if not isinstance(result, list):
        raise Unusable("data.result is not a list")
    out: dict[int, float] = {}
    for series in result:
        try:
            revision, value = int(series["metric"]["revision"]), float(series["value"][1])
        except (KeyError, TypeError, IndexError, ValueError):
            continue
        if revision >= 1 and math.isfinite(value) and value >= 0:
            out[revision] = value
    return out


def assemble(values: dict[str, dict[int, float]]) -> dict[int, Figures]:
    """Figures per revision from each field's values per revision (a missing count reads as 0)."""

    def count(field: str, revision: int) -> float:
        return values.get(field, {}).get(revision, 0.0)

    def quantile(field: str, revision: int) -> float | None:
        return values.get(field, {}).get(revision)

    return {
        r: Figures(
            sessions=count("sessions", r),
            handoffs=count("handoffs", r),
            provider_errors=count("provider_errors", r),
            error_ends=count("error_ends", r),
            first_audio_p95=quantile("first_audio_p95", r),
            ttft_p95=quantile("ttft_p95", r),
        )
        for r in sorted({r for per in values.values() for r in per})
    }


class PrometheusFigures:
    def __init__(
        self,
        url: str,
        fetch: Callable[[str], Any] | None = None,
        *,
        deadline_s: float = DEADLINE_S,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._url = url.rstrip("/")
        self._fetch = fetch
        self._deadline_s = deadline_s
        self._max_bytes = max_bytes
        self.where = "the workers' per-revision series in Prometheus"

    async def _get(self, expr: str) -> dict[int, float]:
        url = f"{self._url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        if self._fetch is not None:
            return by_revision(await asyncio.to_thread(self._fetch, url))
        return by_revision(parse_json(await get_bytes(shared_session(), url, self._max_bytes)))

    async def _all(self, asked: dict[str, str]) -> dict[str, dict[int, float]]:
        async with asyncio.timeout(self._deadline_s):
            answers = await asyncio.gather(*(self._get(expr) for expr in asked.values()))
        return dict(zip(asked, answers, strict=True))

    def figures(self, namespace: str, tenant: str, window_s: float) -> dict[int, Figures] | None:
        try:
            values = run_io(self._all(queries(namespace, tenant, window_s)), self._deadline_s + _BACKSTOP_S)
        # Prometheus down, slow or saying nonsense: no verdict this time (the canary waits).
        except Exception as err:
            log.warning(
                "revision figures unavailable",
                extra={
                    "namespace": namespace,
                    "tenant": tenant,
                    "error": f"{type(err).__name__}: {err}"[:300],
                },
            )
            return None
        return assemble(values)

"""Canary analysis: a canary revision's figures against the stable revision's, on the same window. Pure.

The figures come from the workers' per-revision series (revision_figures.py reads them from Prometheus).
The canary is judged once it has served `minSessions`: it is promoted when every figure holds up, rolled
back when one falls behind by more than the spec allows (the message names each and by how much), and
rolled back when `maxDurationSeconds` pass before it has enough sessions to judge.

Where the stable revision served nothing in the window (all traffic moved, a quiet hour), the canary is
held to the ideal instead (every session hands off, no errors) and latency is not compared.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from storyteller_api.spec import CanaryAnalysis

Decision = Literal["wait", "promote", "rollback"]


@dataclasses.dataclass(frozen=True)
class Figures:
    """One revision's outcomes over a window (counts as Prometheus's increase() gives them)."""

    sessions: float = 0.0  # sessions started
    handoffs: float = 0.0  # IntroAgent → StoryAgent
    provider_errors: float = 0.0  # failed LLM/STT/TTS requests
    error_ends: float = 0.0  # sessions the framework closed with an error
    first_audio_p95: float | None = None  # seconds; None: no reply observed
    ttft_p95: float | None = None

    def _per_session(self, count: float) -> float | None:
        return count / self.sessions if self.sessions > 0 else None

    @property
    def handoff_rate(self) -> float | None:
        # increase() extrapolates: a rate can come out a little above 1.
        rate = self._per_session(self.handoffs)
        return None if rate is None else min(rate, 1.0)

    @property
    def provider_error_rate(self) -> float | None:
        return self._per_session(self.provider_errors)

    @property
    def error_end_rate(self) -> float | None:
        rate = self._per_session(self.error_ends)
        return None if rate is None else min(rate, 1.0)

    def as_status(self) -> dict[str, float | int]:
        """The figures as status.revisions and status.canary show them (rounded; absent when unknown)."""
        out: dict[str, float | int] = {"sessions": round(self.sessions)}
        for key, value in (
            ("handoffRate", self.handoff_rate),
            ("providerErrorRate", self.provider_error_rate),
            ("errorEndRate", self.error_end_rate),
            ("firstAudioP95Seconds", self.first_audio_p95),
            ("ttftP95Seconds", self.ttft_p95),
        ):
            if value is not None:
                out[key] = round(value, 3)
        return out


IDEAL = Figures(sessions=1.0, handoffs=1.0)  # the yardstick when the stable revision served nothing


@dataclasses.dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str  # CamelCase, for the condition and the Event
    message: str


def _failures(canary: Figures, stable: Figures, rules: CanaryAnalysis) -> list[str]:
    """Each figure in which the canary falls behind by more than `rules` allow, as words."""
    out = []
    c, s = canary.handoff_rate, stable.handoff_rate
    if c is not None and s is not None and s - c > rules.max_handoff_rate_drop:
        out.append(
            f"handoff rate {c:.2f} vs stable {s:.2f} ({s - c:.2f} lower, at most "
            f"{rules.max_handoff_rate_drop:g} allowed)"
        )
    c, s = canary.provider_error_rate, stable.provider_error_rate
    if c is not None and s is not None and c - s > rules.max_provider_error_rate_increase:
        out.append(
            f"provider errors per session {c:.2f} vs stable {s:.2f} ({c - s:.2f} more, at most "
            f"{rules.max_provider_error_rate_increase:g} allowed)"
        )
    c, s = canary.error_end_rate, stable.error_end_rate
    if c is not None and s is not None and c - s > rules.max_error_end_rate_increase:
        out.append(
            f"sessions ended by error {c:.2f} vs stable {s:.2f} ({c - s:.2f} more, at most "
            f"{rules.max_error_end_rate_increase:g} allowed)"
        )
    latencies = (
        (
            "p95 time to first audio",
            canary.first_audio_p95,
            stable.first_audio_p95,
            rules.max_first_audio_p95_ratio,
        ),
        ("p95 LLM time to first token", canary.ttft_p95, stable.ttft_p95, rules.max_ttft_p95_ratio),
    )
    for name, cv, sv, ratio in latencies:
        if cv is not None and sv is not None and sv > 0 and cv > sv * ratio:
            out.append(f"{name} {cv:.2f} s vs stable {sv:.2f} s ({cv / sv:.1f}×, at most {ratio:g}× allowed)")
    return out


def judge(canary: Figures, stable: Figures, rules: CanaryAnalysis, elapsed_s: float) -> Verdict:
    """What to do with the canary now, `elapsed_s` after it started."""
    if canary.sessions < rules.min_sessions:
        if elapsed_s >= rules.max_duration_seconds:
            return Verdict(
                "rollback",
                "InsufficientSessions",
                f"{canary.sessions:.0f} of the {rules.min_sessions} sessions needed to judge it in "
                f"{rules.max_duration_seconds} s (analysis.maxDurationSeconds)",
            )
        return Verdict(
            "wait",
            "Analysing",
            f"{canary.sessions:.0f} of {rules.min_sessions} sessions served, {elapsed_s:.0f} s of at most "
            f"{rules.max_duration_seconds} s",
        )
    yardstick = stable if stable.sessions > 0 else IDEAL
    failures = _failures(canary, yardstick, rules)
    if failures:
        return Verdict("rollback", "AnalysisFailed", "; ".join(failures))
    return Verdict(
        "promote", "AnalysisPassed", f"every figure held up over {canary.sessions:.0f} canary sessions"
    )

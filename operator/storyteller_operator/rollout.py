"""Which revisions run: the stable one (the worker Deployment) and a canary (a second Deployment under the
same agent name), and what the canary's analysis decided. Pure, no I/O.

- Replace (the default): the spec's revision is the stable one at once (the Deployment's rolling update).
- Canary: a new revision runs beside the stable one until its figures are judged (canary.py): promoted, it
  becomes the stable revision (the stable Deployment rolls to it with the usual drain, the canary
  Deployment is deleted and drains); rolled back, the canary drains, the stable revision stays, and the
  revision is marked failed in status.revisions so it is not tried again until the spec changes.
- spec.rollout.pinnedRevision serves an earlier revision (a rollback by hand, kept in Git) and starts no
  canary; spec.rollout.promoteRevision promotes that canary without waiting for its analysis.

The stable revision is status.revision; the running canary is status.canary (its start is the analysis
window's). A revision other than the spec's can only run while its config is at hand (its ConfigMap).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from storyteller_api.spec import Rollout
from storyteller_operator import revisions
from storyteller_operator.canary import Figures, Verdict, judge
from storyteller_operator.revisions import NUMBER

STATE = "state"  # status.revisions[].state: only "Failed" is written (the rest is status.revision/canary)
FAILED = "Failed"
FAILURE = "failure"  # why it failed, with the figures
CANARY_FAILED = "CanaryFailed"  # the Degraded reason while a rolled-back revision is the newest
FIGURES = "figures"  # its figures as last read: over its canary's window, or since it started serving
WINDOW = "windowSeconds"  # in FIGURES: the window they were read over
ROLLED_BACK, PROMOTED = "CanaryRolledBack", "CanaryPromoted"


@dataclasses.dataclass(frozen=True)
class Decided:
    stable: int  # the revision the worker Deployment runs
    canary: int | None  # the revision the canary Deployment runs; None: no canary
    history: list[dict[str, Any]]  # status.revisions with states and figures
    canary_status: dict[str, Any] | None  # status.canary
    verdict: Verdict | None = None  # a promotion or a rollback that happened now (for the Event)
    judged: int | None = None  # the canary revision the verdict is about
    problem: tuple[str, str] | None = None  # (reason, message): the rollout cannot do what the spec asks


def parse_time(value: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _rfc3339(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def canary_started(status: Mapping[str, Any], revision: int) -> datetime.datetime | None:
    """When the running canary of `revision` started (None: no such canary in the status)."""
    block = status.get("canary")
    if not isinstance(block, Mapping) or block.get("revision") != revision:
        return None
    return parse_time(block.get("started"))


def _with(history: Sequence[Mapping[str, Any]], revision: int, **fields: Any) -> list[dict[str, Any]]:
    return [{**e, **fields} if e[NUMBER] == revision else dict(e) for e in history]


def _failed(revision: int, failure: str, stable: int) -> tuple[str, str]:
    return (
        CANARY_FAILED,
        f"revision {revision} was rolled back ({failure}); revision {stable} keeps serving until the spec "
        "changes",
    )


def decide(
    *,
    spec_revision: int,
    history: Sequence[Mapping[str, Any]],
    status: Mapping[str, Any],
    rollout: Rollout,
    suspended: bool,
    runnable: Collection[int],
    figures: Mapping[int, Figures] | None,
    figures_source: bool,
    now: datetime.datetime,
    figures_window_s: float = 0.0,
) -> Decided:
    """`runnable`: the revisions whose config is at hand besides the spec's. `figures`: per revision over
    the last `figures_window_s` (the running canary's window, else since the stable revision started), when
    read this time (None: not read or unreadable); `figures_source`: whether the operator has a place to
    read them at all."""
    stored = status.get("revision")
    known = {int(e[NUMBER]) for e in history}
    # A revision runs again only with its config and its entry (its image): a history trimmed by an older
    # release may have lost the entry, and then the spec's revision is served.
    runnable = {r for r in runnable if r in known}
    stable = stored if isinstance(stored, int) and (stored == spec_revision or stored in runnable) else None

    def with_figures(*running: int) -> list[dict[str, Any]]:
        """The history with the figures just read for the revisions that run."""
        out = [dict(e) for e in history]
        if figures is not None:
            for revision in running:
                shown = {**figures.get(revision, Figures()).as_status(), WINDOW: round(figures_window_s)}
                out = _with(out, revision, **{FIGURES: shown})
        return out

    def plain(revision: int, problem: tuple[str, str] | None = None) -> Decided:
        return Decided(revision, None, with_figures(revision), None, problem=problem)

    pinned = rollout.pinned_revision
    if pinned is not None:
        if pinned == spec_revision or (pinned in known and pinned in runnable):
            return plain(pinned)
        message = (
            f"spec.rollout.pinnedRevision {pinned} is not a revision this tenant can run (status.revisions "
            f"keeps {', '.join(str(n) for n in sorted(known)) or 'none'}); serving revision "
            f"{stable or spec_revision}"
        )
        return plain(stable or spec_revision, ("PinnedRevisionUnknown", message))
    if rollout.strategy == "Replace" or stable is None or stable == spec_revision:
        return plain(spec_revision)  # also the first revision: nothing to compare a canary with

    entry = revisions.entry(history, spec_revision)
    if entry.get(STATE) == FAILED:
        return plain(stable, _failed(spec_revision, str(entry.get(FAILURE, "")), stable))
    if suspended:
        return plain(stable)  # nothing to judge while nobody is served; the canary starts on resume

    started = canary_started(status, spec_revision) or now
    elapsed = max((now - started).total_seconds(), 0.0)
    previous = status.get("canary") if canary_started(status, spec_revision) else None
    if rollout.promote_revision == spec_revision:
        verdict: Verdict | None = Verdict("promote", "ManualPromote", "spec.rollout.promoteRevision")
    elif figures is not None:
        verdict = judge(
            figures.get(spec_revision, Figures()), figures.get(stable, Figures()), rollout.analysis, elapsed
        )
    else:
        verdict = None

    updated = with_figures(spec_revision, stable)

    if verdict is not None and verdict.decision == "promote":
        return Decided(spec_revision, None, updated, None, verdict=verdict, judged=spec_revision)
    if verdict is not None and verdict.decision == "rollback":
        failure = f"{verdict.reason}: {verdict.message}"
        failed = _with(updated, spec_revision, **{STATE: FAILED, FAILURE: failure})
        problem = _failed(spec_revision, failure, stable)
        return Decided(stable, None, failed, None, verdict=verdict, problem=problem, judged=spec_revision)

    if verdict is not None:
        message = verdict.message
    elif figures_source:  # not read this time: the last analysis stands
        message = str((previous or {}).get("message") or "waiting for the canary's first figures")
    else:
        message = (
            "no figures to judge it by: the operator has no Prometheus address (chart value prometheus.url); "
            f"promote it by hand with spec.rollout.promoteRevision: {spec_revision}, or roll back"
        )
    block = {
        "revision": spec_revision,
        "stableRevision": stable,
        "started": _rfc3339(started),
        "weight": rollout.canary_weight,
        "message": message,
    }
    if figures is not None:
        block["canaryFigures"] = figures.get(spec_revision, Figures()).as_status()
        block["stableFigures"] = figures.get(stable, Figures()).as_status()
    elif previous:
        block.update({k: previous[k] for k in ("canaryFigures", "stableFigures") if k in previous})
    return Decided(stable, spec_revision, updated, block)


def canary_replicas(stable_replicas: int, weight: int) -> int:
    """Canary pods for about `weight` % of new sessions: LiveKit offers each call to a worker picked at
    random, weighted by how free it is, so equally loaded pods share calls by their number."""
    return max(1, round(stable_replicas * weight / (100 - weight)))

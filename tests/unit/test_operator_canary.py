"""Canaries: the judge (canary.py), the rollout decision (rollout.py), reading the figures
(revision_figures.py) and the planner's canary Deployment. Pure: no cluster, no Prometheus."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from storyteller_api import contract
from storyteller_api.spec import CanaryAnalysis, Rollout
from storyteller_operator import canary, render, revision_figures, revisions, rollout
from storyteller_operator.canary import Figures
from tests.unit.test_operator_plan import NOW, deployment, make, snapshot

RULES = CanaryAnalysis(min_sessions=10)
HEALTHY = Figures(
    sessions=40, handoffs=38, provider_errors=1, error_ends=0, first_audio_p95=0.8, ttft_p95=0.4
)


# ---------------------------------------------------------------------------------------------- the judge


def test_a_canary_with_too_few_sessions_waits_then_is_rolled_back_at_the_maximum_duration() -> None:
    few = Figures(sessions=4, handoffs=4)
    assert canary.judge(few, HEALTHY, RULES, elapsed_s=60).decision == "wait"
    late = canary.judge(few, HEALTHY, RULES, elapsed_s=RULES.max_duration_seconds)
    assert (late.decision, late.reason) == ("rollback", "InsufficientSessions")
    assert "4 of the 10 sessions" in late.message


def test_a_healthy_canary_is_promoted() -> None:
    same = Figures(sessions=12, handoffs=11, provider_errors=0, first_audio_p95=0.9, ttft_p95=0.5)
    verdict = canary.judge(same, HEALTHY, RULES, elapsed_s=30)
    assert (verdict.decision, verdict.reason) == ("promote", "AnalysisPassed")


def test_an_intro_that_never_hands_off_is_rolled_back_naming_the_figure_and_by_how_much() -> None:
    stuck = Figures(sessions=10, handoffs=0, first_audio_p95=0.8, ttft_p95=0.4)
    verdict = canary.judge(stuck, HEALTHY, RULES, elapsed_s=30)
    assert (verdict.decision, verdict.reason) == ("rollback", "AnalysisFailed")
    assert verdict.message == "handoff rate 0.00 vs stable 0.95 (0.95 lower, at most 0.1 allowed)"


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (
            Figures(sessions=10, handoffs=10, provider_errors=8),
            "provider errors per session 0.80 vs stable 0.03",
        ),
        (Figures(sessions=10, handoffs=10, error_ends=3), "sessions ended by error 0.30 vs stable 0.00"),
        (
            Figures(sessions=10, handoffs=10, first_audio_p95=2.4),
            "p95 time to first audio 2.40 s vs stable 0.80 s (3.0×",
        ),
        (
            Figures(sessions=10, handoffs=10, ttft_p95=1.2),
            "p95 LLM time to first token 1.20 s vs stable 0.40 s",
        ),
    ],
)
def test_each_figure_can_fail_a_canary(bad: Figures, words: str) -> None:
    verdict = canary.judge(bad, HEALTHY, RULES, elapsed_s=30)
    assert verdict.decision == "rollback" and words in verdict.message, verdict.message


def test_with_no_stable_sessions_the_canary_is_held_to_the_ideal() -> None:
    quiet = Figures()
    assert canary.judge(Figures(sessions=10, handoffs=10), quiet, RULES, 30).decision == "promote"
    assert canary.judge(Figures(sessions=10, handoffs=5), quiet, RULES, 30).decision == "rollback"


def test_figures_in_status_are_rounded_and_leave_out_what_is_unknown() -> None:
    shown = Figures(sessions=10.4, handoffs=10.6, provider_errors=1).as_status()
    assert shown == {"sessions": 10, "handoffRate": 1.0, "providerErrorRate": 0.096, "errorEndRate": 0.0}
    assert Figures().as_status() == {"sessions": 0}


# ----------------------------------------------------------------------------------------- the decision

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def history(*numbers: int, **extra: Any) -> list[dict[str, Any]]:
    return [{revisions.NUMBER: n, revisions.CHANGE: f"change {n}", **extra.get(str(n), {})} for n in numbers]


def decide(
    status: dict[str, Any], spec: Rollout, *, figures: Any = None, now: datetime.datetime = T0, **kw: Any
) -> rollout.Decided:
    args: dict[str, Any] = {
        "spec_revision": 2,
        "history": history(2, 1),
        "status": status,
        "rollout": spec,
        "suspended": False,
        "runnable": {1},
        "figures": figures,
        "figures_source": True,
        "now": now,
        **kw,
    }
    return rollout.decide(**args)


CANARY = Rollout(strategy="Canary", canary_weight=20, analysis=RULES)


def test_replace_serves_the_spec_at_once() -> None:
    got = decide({"revision": 1}, Rollout())
    assert (got.stable, got.canary, got.canary_status) == (2, None, None)


def test_a_new_revision_starts_as_a_canary_beside_the_stable_one() -> None:
    got = decide({"revision": 1}, CANARY)
    assert (got.stable, got.canary) == (1, 2)
    assert got.canary_status is not None
    assert got.canary_status["started"] == "2026-12-01T12:00:00Z" and got.canary_status["weight"] == 20


def test_the_canary_keeps_its_start_and_is_judged_on_its_figures() -> None:
    running = {"revision": 1, "canary": {"revision": 2, "started": "2026-12-01T12:00:00Z", "message": "x"}}
    later = T0 + datetime.timedelta(minutes=5)
    waiting = decide(running, CANARY, figures={2: Figures(sessions=3, handoffs=3), 1: HEALTHY}, now=later)
    assert waiting.canary == 2 and waiting.canary_status is not None
    assert waiting.canary_status["started"] == "2026-12-01T12:00:00Z"
    assert waiting.canary_status["canaryFigures"] == {
        "sessions": 3,
        "handoffRate": 1.0,
        "providerErrorRate": 0.0,
        "errorEndRate": 0.0,
    }
    assert "3 of 10 sessions served, 300 s" in waiting.canary_status["message"]
    # Not read this time: the last figures and words stand.
    kept = decide({**running, "canary": waiting.canary_status}, CANARY, figures=None, now=later)
    assert kept.canary_status == waiting.canary_status


def test_a_failing_canary_is_rolled_back_and_marked_so_it_is_not_tried_again() -> None:
    running = {"revision": 1, "canary": {"revision": 2, "started": "2026-12-01T12:00:00Z"}}
    stuck = Figures(sessions=10, handoffs=0)
    got = decide(running, CANARY, figures={2: stuck, 1: HEALTHY})
    assert (got.stable, got.canary, got.canary_status) == (1, None, None)
    assert got.verdict is not None and got.verdict.decision == "rollback"
    failed = got.history[0]
    assert failed[rollout.STATE] == rollout.FAILED and failed[rollout.FAILURE].startswith(
        "AnalysisFailed: handoff"
    )
    assert failed[rollout.FIGURES]["handoffRate"] == 0.0
    # The spec still asks for it: the stable revision keeps serving and the status says why.
    again = decide({"revision": 1}, CANARY, history=got.history)
    assert (again.stable, again.canary) == (1, None)
    assert again.problem is not None and again.problem[0] == "CanaryFailed"


def test_a_healthy_canary_is_promoted_and_a_manual_promote_needs_no_figures() -> None:
    running = {"revision": 1, "canary": {"revision": 2, "started": "2026-12-01T12:00:00Z"}}
    got = decide(running, CANARY, figures={2: HEALTHY, 1: HEALTHY})
    assert (got.stable, got.canary) == (2, None) and got.verdict is not None
    manual = decide(
        running, Rollout(strategy="Canary", promote_revision=2), figures=None, figures_source=False
    )
    assert (manual.stable, manual.canary) == (2, None)
    assert manual.verdict is not None and manual.verdict.reason == "ManualPromote"


def test_without_prometheus_the_canary_waits_for_a_manual_promote() -> None:
    got = decide({"revision": 1}, CANARY, figures_source=False)
    assert got.canary == 2 and got.canary_status is not None
    assert "promoteRevision: 2" in got.canary_status["message"]


def test_a_pin_serves_an_earlier_revision_and_an_unknown_one_is_refused() -> None:
    pinned = decide({"revision": 2}, Rollout(pinned_revision=1))
    assert (pinned.stable, pinned.canary, pinned.problem) == (1, None, None)
    unknown = decide({"revision": 2}, Rollout(pinned_revision=7))
    assert unknown.stable == 2 and unknown.problem is not None
    assert unknown.problem[0] == "PinnedRevisionUnknown" and "keeps 1, 2" in unknown.problem[1]


def test_a_stable_revision_whose_config_is_gone_cannot_stay_so_the_spec_is_served() -> None:
    got = decide({"revision": 1}, CANARY, runnable=set())
    assert (got.stable, got.canary) == (2, None)


@pytest.mark.parametrize(
    ("stable", "weight", "pods"), [(4, 20, 1), (8, 20, 2), (2, 10, 1), (9, 50, 9), (0, 10, 1)]
)
def test_the_canary_is_sized_by_its_weight_with_at_least_one_pod(stable: int, weight: int, pods: int) -> None:
    assert rollout.canary_replicas(stable, weight) == pods


# ---------------------------------------------------------------------------------------- the figures


def test_the_queries_select_the_tenant_and_group_by_revision() -> None:
    asked = revision_figures.queries("team-a", "acme", 299.2)
    assert asked["sessions"] == (
        "sum by (revision) (increase("
        'storyteller_sessions_started_total{namespace="team-a", tenant="acme"}[300s]))'
    )
    assert 'reason="error"' in asked["error_ends"]
    assert asked["ttft_p95"].startswith("histogram_quantile(0.95, sum by (revision, le)")


def test_answers_become_figures_per_revision_and_nonsense_is_unusable() -> None:
    def answer(*series: tuple[str, str]) -> dict[str, Any]:
        return {"data": {"result": [{"metric": {"revision": r}, "value": [0, v]} for r, v in series]}}

    assert revision_figures.by_revision(answer(("1", "10"), ("2", "NaN"), ("0", "3"), ("x", "1"))) == {
        1: 10.0
    }
    with pytest.raises(revision_figures.Unusable):
        revision_figures.by_revision({"data": {"result": "no"}})
    got = revision_figures.assemble(
        {"sessions": {1: 10.0, 2: 4.0}, "handoffs": {1: 9.0}, "ttft_p95": {2: 0.3}}
    )
    assert got[2] == Figures(sessions=4.0, ttft_p95=0.3) and got[1].handoffs == 9.0


def test_an_unreadable_prometheus_gives_no_figures_never_half_of_them() -> None:
    calls: list[str] = []

    def fetch(url: str) -> Any:
        calls.append(url)
        if "histogram_quantile" in url:
            raise OSError("connection refused")
        return {"data": {"result": []}}

    source = revision_figures.PrometheusFigures("http://prometheus:9090", fetch=fetch)
    assert source.figures("team-a", "acme", 60) is None  # though the counts were answered
    assert any("increase%28storyteller_sessions_started_total" in url for url in calls)


# ------------------------------------------------------------------------------------------ the planner


def _deployments(p: Any) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in p.children if m["kind"] == "Deployment"}


def test_the_planner_runs_a_canary_deployment_beside_the_stable_revision() -> None:
    spec = {"rollout": {"strategy": "Canary", "canaryWeight": 20}, "pool": {"minReplicas": 4}}
    first = make(snapshot(spec))
    assert first.revision == 1 and set(_deployments(first)) == {"acme-worker"}
    stable_config = render.tenant_config(first.tenant)
    status = {"revision": 1, "revisions": first.revisions}
    changed = {**spec, "story": {"instructions": "A story about the sea."}}
    p = make(snapshot(changed, status=status, revision_configs={1: stable_config}, observed_at=NOW))
    assert (p.revision, p.rollout.canary) == (1, 2)
    deployments = _deployments(p)
    stable, canary_dep = deployments["acme-worker"], deployments["acme-worker-canary"]

    # The stable Deployment keeps running revision 1's config; the canary mounts revision 2's.
    def config_of(dep: dict[str, Any]) -> str:
        return str(dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"])

    assert config_of(stable) == render.config_map_name("acme", render.config_hash(stable_config))
    assert config_of(canary_dep) == render.config_map_name("acme", p.spec_config_hash)
    assert stable["spec"]["template"]["metadata"]["labels"][contract.REVISION_LABEL] == "1"
    assert canary_dep["spec"]["template"]["metadata"]["labels"][contract.REVISION_LABEL] == "2"
    # Its own selector (the track), so its ReplicaSets never count the stable pods; 20 % of 5 pods.
    assert canary_dep["spec"]["selector"]["matchLabels"][contract.TRACK_LABEL] == contract.CANARY_TRACK
    assert contract.TRACK_LABEL not in stable["spec"]["selector"]["matchLabels"]
    assert (stable["spec"]["replicas"], canary_dep["spec"]["replicas"]) == (4, 1)
    # Both revisions' ConfigMaps are applied; the status reports what the pool runs.
    config_maps = {m["metadata"]["name"] for m in p.children if m["kind"] == "ConfigMap"}
    assert config_maps == {config_of(stable), config_of(canary_dep)}
    assert p.config_hash == render.config_hash(stable_config)


def test_the_planner_prunes_a_canary_it_no_longer_wants() -> None:
    canary_dep = {"metadata": {"name": "acme-worker-canary", "ownerReferences": [{"uid": "uid-1"}]}}
    p = make(snapshot(canary_deployment=canary_dep))
    assert p.prune_canary and "acme-worker-canary" not in _deployments(p)


def test_a_canary_on_the_shortest_history_keeps_planning_edit_after_edit() -> None:
    """revisionHistoryLimit 1 under a canary: the stable revision's entry (its image) must survive every
    edit, or planning the stable Deployment fails and the tenant freezes."""
    spec: dict[str, Any] = {"rollout": {"strategy": "Canary"}, "revisionHistoryLimit": 1}
    first = make(snapshot(spec))
    configs = {1: render.tenant_config(first.tenant)}
    status: dict[str, Any] = {"revision": 1, "revisions": first.revisions}
    for n in range(2, 6):
        edited = {**spec, "story": {"instructions": f"Story {n}."}, "pool": {"minReplicas": n}}
        p = make(snapshot(edited, status=status, revision_configs=configs))
        assert (p.revision, p.rollout.canary) == (1, n)
        assert [e[revisions.NUMBER] for e in p.revisions] == [n, 1]
        stable = _deployments(p)["acme-worker"]
        assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == first.tenant.spec.worker.image
        status = {"revision": 1, "revisions": p.revisions}


def test_a_history_trimmed_by_an_older_release_serves_the_spec_instead_of_freezing() -> None:
    # Status written before the stable entry was kept: revision 1 runs, its entry is gone.
    spec: dict[str, Any] = {"rollout": {"strategy": "Canary"}, "revisionHistoryLimit": 1}
    first = make(snapshot(spec))
    configs = {1: render.tenant_config(first.tenant)}
    edited = {**spec, "story": {"instructions": "Story 2."}}
    two = make(
        snapshot(edited, status={"revision": 1, "revisions": first.revisions}, revision_configs=configs)
    )
    trimmed = {"revision": 1, "revisions": [e for e in two.revisions if e[revisions.NUMBER] != 1]}
    p = make(snapshot({**edited, "pool": {"minReplicas": 3}}, status=trimmed, revision_configs=configs))
    assert (p.revision, p.rollout.canary) == (2, None)
    assert _deployments(p)["acme-worker"]["spec"]["replicas"] == 3


def test_a_rotated_secret_and_an_image_change_go_through_the_same_canary() -> None:
    spec = {"rollout": {"strategy": "Canary"}}
    first = make(snapshot(spec, secret_versions={"acme-openai": "1"}))
    stable_config = render.tenant_config(first.tenant)
    status = {"revision": 1, "revisions": first.revisions}
    configs = {1: stable_config}
    rotated = make(
        snapshot(spec, status=status, revision_configs=configs, secret_versions={"acme-openai": "2"})
    )
    assert (rotated.revision, rotated.rollout.canary) == (1, 2)
    assert rotated.revisions[0][revisions.CHANGE] == "Secret acme-openai rotated"
    image = make(snapshot({**spec, "worker": {"image": "worker:2"}}, status=status, revision_configs=configs))
    assert (image.revision, image.rollout.canary) == (1, 2)
    deployments = _deployments(image)
    images = {n: d["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in deployments.items()}
    assert images["acme-worker-canary"] == "worker:2"
    assert images["acme-worker"] == first.tenant.spec.worker.image  # the stable revision's own image


def test_the_status_and_events_tell_a_canary_start_and_its_rollback() -> None:
    from storyteller_operator import plan as planner
    from storyteller_operator import status as st

    spec = {"rollout": {"strategy": "Canary", "analysis": {"minSessions": 5}}}
    first = make(snapshot(spec))
    configs = {1: render.tenant_config(first.tenant)}
    stored = {"revision": 1, "revisions": first.revisions}
    changed = {**spec, "story": {"instructions": "New."}}
    observed = snapshot(changed, status=stored, revision_configs=configs, dep=deployment(1))
    started = make(observed)
    applied = planner.Applied(["Deployment/acme-worker-canary"], None, deployment(1))
    new_status, posted = planner.report(started, observed, applied, "2026-12-01T12:00:00Z")
    assert new_status["canary"]["revision"] == 2 and new_status["phase"] == "Progressing"
    progressing = st.condition(new_status, st.PROGRESSING) or {}
    assert progressing.get("reason") == "CanaryAnalysis"
    (start,) = [e for e in posted if e.reason == "CanaryStarted"]
    assert "revision 2 (story.instructions changed)" in start.message

    figures = {2: Figures(sessions=6, handoffs=0), 1: HEALTHY}
    running = snapshot(
        changed, status=new_status, revision_configs=configs, figures=figures, dep=deployment(1)
    )
    judged = make(running)
    assert judged.rollout.canary is None and judged.prune_canary is False  # nothing observed to prune yet
    after, posted = planner.report(judged, running, planner.Applied([], None, None), "2026-12-01T12:05:00Z")
    assert after["canary"] is None  # deleted from the stored status by the merge patch
    (warning,) = [e for e in posted if e.reason == rollout.ROLLED_BACK]
    assert (
        warning.type == "Warning"
        and "revision 2 rolled back (AnalysisFailed: handoff rate" in warning.message
    )
    degraded = st.condition(after, st.DEGRADED) or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "CanaryFailed")
    assert "revision 1 keeps serving until the spec changes" in str(degraded.get("message"))


def test_the_serving_revision_records_the_sessions_it_served_when_figures_are_read() -> None:
    got = decide({"revision": 2}, Rollout(), figures={2: HEALTHY, 1: HEALTHY}, figures_window_s=3600.4)
    served = next(e for e in got.history if e[revisions.NUMBER] == 2)[rollout.FIGURES]
    assert served["sessions"] == 40 and served[rollout.WINDOW] == 3600
    assert rollout.FIGURES not in next(e for e in got.history if e[revisions.NUMBER] == 1)  # not running


def test_an_earlier_revision_renders_with_its_own_config_and_image_and_todays_pod_fields() -> None:
    from storyteller_operator.tenant import Tenant
    from tests.unit.test_operator_render import tenant

    before = Tenant.from_object(tenant({"story": {"instructions": "Old story."}}))
    old_config = render.tenant_config(before)
    now_obj = tenant({"pool": {"autoscaler": "keda", "maxReplicas": 7}, "worker": {"image": "worker:9"}})
    revived = render.revision_tenant(Tenant.from_object(now_obj), old_config, "worker:1")
    assert render.tenant_config(revived) == old_config  # so its pods mount revision 1's ConfigMap
    assert revived.spec.worker.image == "worker:1"
    assert (revived.spec.pool.autoscaler, revived.spec.pool.max_replicas) == ("keda", 7)  # sizing: today's


def test_a_manual_promote_names_the_revision_even_before_its_canary_ran() -> None:
    from storyteller_operator import plan as planner

    spec = {"rollout": {"strategy": "Canary", "promoteRevision": 2}}
    first = make(snapshot(spec))
    configs = {1: render.tenant_config(first.tenant)}
    stored = {"revision": 1, "revisions": first.revisions}
    observed = snapshot({**spec, "story": {"instructions": "New."}}, status=stored, revision_configs=configs)
    promoted = make(observed)
    assert (promoted.revision, promoted.rollout.canary) == (2, None)
    _, posted = planner.report(promoted, observed, planner.Applied([], None, None), "2026-12-01T12:00:00Z")
    (event,) = [e for e in posted if e.reason == rollout.PROMOTED]
    assert event.message.startswith("revision 2 promoted (ManualPromote: spec.rollout.promoteRevision)")

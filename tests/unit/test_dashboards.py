"""Dashboards and alert rules: generated from their source, copied into the chart, checked by promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
CHART_COPY = REPO / "helm" / "storyteller" / "dashboards"
RUNBOOKS = REPO / "docs" / "runbooks"
# The chart's prometheusRule.runbookBaseUrl replaces exactly this prefix, keeping each page's name.
RUNBOOK_BASE = "https://github.com/storyteller-dev/storyteller/blob/main/docs/runbooks/"
EXPECTED_UIDS = {
    "storyteller-tenant-usage",
    "storyteller-conversation-latency",
    "storyteller-worker-pools",
    "storyteller-revisions",
    "storyteller-operator",
}


def _dashboards() -> dict[str, dict]:  # type: ignore[type-arg]
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DASHBOARDS / "rules.yaml").read_text())
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def _targets() -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard uid, panel type, target) of every panel query."""
    return [
        (d["uid"], panel["type"], target)
        for d in _dashboards().values()
        for panel in d["panels"]
        for target in panel["targets"]
    ]


def test_committed_json_is_what_the_generator_writes() -> None:
    proc = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_chart_copies_equal_the_repository_files() -> None:
    for name in [p.name for p in DASHBOARDS.glob("*.json")] + ["rules.yaml"]:
        assert (CHART_COPY / name).read_bytes() == (DASHBOARDS / name).read_bytes(), name


def test_stable_uids_and_template_variables() -> None:
    dashboards = _dashboards()
    assert {d["uid"] for d in dashboards.values()} == EXPECTED_UIDS
    for name, d in dashboards.items():
        assert name == f"{d['uid']}.json"
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert {"datasource", "namespace", "tenant"} <= set(variables), name
        # Worker series carry the pods' revision; the operator's do not.
        assert ("revision" in variables) == (d["uid"] != "storyteller-operator"), name
        for panel in d["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def test_worker_panels_filter_by_namespace_and_tenant() -> None:
    for d in _dashboards().values():
        for panel in d["panels"]:
            for target in panel["targets"]:
                for selector in re.findall(r"(storyteller_(?!operator_)\w+)\{([^}]*)\}", target["expr"]):
                    assert 'namespace=~"$namespace"' in selector[1], (panel["title"], target["expr"])
                    # The workers' own series (the SDK's carry no tenant, the operator's pools no revision).
                    if 'tenant=~"$tenant"' in selector[1] and not selector[0].startswith("storyteller_pool_"):
                        assert 'revision=~"$revision"' in selector[1], (panel["title"], target["expr"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(DASHBOARDS / "rules.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", "rules_test.yaml"], cwd=DASHBOARDS, capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_alert_has_severity_summary_description_and_a_runbook_that_exists() -> None:
    alerts = _alerts()
    names = {a["alert"] for a in alerts}
    assert {"StorytellerOperatorDown", "StorytellerOperatorNotReconciling"} <= names
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in {"warning", "critical"}, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name
        url = annotations.get("runbook_url", "")
        assert url == f"{RUNBOOK_BASE}{name}.md", (name, url)
        page = RUNBOOKS / url.removeprefix(RUNBOOK_BASE)
        assert page.is_file(), f"{name}: {page} is missing"
        assert page.read_text().startswith(f"# {name}\n"), page
    index = (RUNBOOKS / "README.md").read_text()
    for name in names:
        assert f"]({name}.md)" in index, f"docs/runbooks/README.md does not list {name}"


def test_every_panel_has_a_description_and_dashboards_are_read_only() -> None:
    for name, d in _dashboards().items():
        # Provisioned by the chart: edits in Grafana would be lost, so it offers none.
        assert d["editable"] is False, name
        assert d["graphTooltip"] == 1, name
        for panel in d["panels"]:
            assert len(panel.get("description", "").strip()) >= 40, (name, panel["title"])


def test_panel_queries_use_grafana_windows_not_fixed_ones() -> None:
    # A fixed [5m] is wrong at both ends of the zoom: too coarse for 15 minutes, too few points for 30
    # days, and empty under a scrape interval longer than a quarter of it. Panels plotting over time
    # use $__rate_interval; instant panels about the whole time range use $__range, with increase().
    windows = re.compile(r"\[([^\]]*)\]")
    for uid, kind, target in _targets():
        expr = target["expr"]
        for window in windows.findall(expr):
            assert window in {"$__rate_interval", "$__range"}, (uid, expr)
        if kind == "timeseries":
            assert "$__range" not in expr, (uid, expr)
        for fn in re.findall(r"\b(i?rate)\([^\[]*\[([^\]]*)\]", expr):
            assert fn[1] == "$__rate_interval", (uid, expr)

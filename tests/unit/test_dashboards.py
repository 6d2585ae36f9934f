"""Dashboards and alert rules: generated from their source, copied into the chart, checked by promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
CHART_COPY = REPO / "helm" / "storyteller" / "dashboards"
EXPECTED_UIDS = {
    "storyteller-tenant-usage",
    "storyteller-conversation-latency",
    "storyteller-worker-pools",
    "storyteller-operator",
}


def _dashboards() -> dict[str, dict]:  # type: ignore[type-arg]
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


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

"""Every series the alert rules and dashboards query is one the platform exports (metric_names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from storyteller_api import metric_names

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
SERIES = re.compile(r"\bstoryteller[_:][a-z_:]+")
KNOWN = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)}


def _series(expr: str) -> set[str]:
    # Histograms are queried through their _bucket/_count/_sum series.
    return {re.sub(r"_(bucket|count|sum)$", "", s) for s in SERIES.findall(expr)}


def test_alert_rules_query_only_exported_series() -> None:
    rules = yaml.safe_load((DASHBOARDS / "rules.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(_series(e) for e in exprs))
    assert used, "no storyteller series found in rules.yaml"
    assert used <= KNOWN, f"rules.yaml queries series nobody exports: {sorted(used - KNOWN)}"


def test_dashboards_query_only_exported_series() -> None:
    used: set[str] = set()
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                used |= _series(target["expr"])
    assert used <= KNOWN, f"dashboards query series nobody exports: {sorted(used - KNOWN)}"

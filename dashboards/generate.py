"""Writes the Grafana dashboards (JSON) from `queries.py`: the layout lives here, the PromQL there.

    python dashboards/generate.py           # rewrite dashboards/*.json and the chart's copies (+ rules.yaml)
    python dashboards/generate.py --check   # exit 1 when a committed file differs (CI, unit test)

Uids are fixed in queries.py so links and provisioning survive regeneration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from queries import DASHBOARDS, Dashboard, Panel  # noqa: E402

from storyteller_devkit.generated import sync  # noqa: E402

CHART_COPY = HERE.parent / "helm" / "storyteller" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH, HEIGHT, COLUMNS = 12, 8, 2


def _variables(d: Dashboard) -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"qryType": 1, "query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,  # on time range change: new tenants appear without a reload
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    # The revisions of the chosen tenants: the numbers the operator gave what their pods ran.
    revisions = f'label_values({d.tenant_metric}{{namespace=~"$namespace", tenant=~"$tenant"}}, revision)'
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        query_var("namespace", "Namespace", f"label_values({d.tenant_metric}, namespace)"),
        query_var("tenant", "Tenant", f'label_values({d.tenant_metric}{{namespace=~"$namespace"}}, tenant)'),
        *([query_var("revision", "Revision", revisions)] if d.revisions else []),
    ]


def _panel(p: Panel, index: int) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": index + 1,
        "type": p.kind,
        "title": p.title,
        "datasource": DATASOURCE,
        "gridPos": {
            "x": (index % COLUMNS) * WIDTH,
            "y": (index // COLUMNS) * HEIGHT,
            "w": WIDTH,
            "h": HEIGHT,
        },
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}}
        if p.kind == "timeseries"
        else {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
                "range": p.kind == "timeseries",
                "instant": p.kind != "timeseries",
            }
            for i, q in enumerate(p.queries)
        ],
    }
    panel["description"] = p.description
    return panel


def render(d: Dashboard) -> dict[str, Any]:
    return {
        "uid": d.uid,
        "title": d.title,
        "tags": list(d.tags),
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        # Provisioned from the chart's ConfigMaps: an edit made in Grafana would be lost at the next
        # sync, so the UI offers none (change queries.py and regenerate).
        "editable": False,
        "graphTooltip": 1,  # shared crosshair: one moment lines up across panels
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _variables(d)},
        "annotations": {"list": []},
        "links": [],
        "panels": [_panel(p, i) for i, p in enumerate(d.panels)],
    }


def outputs() -> dict[str, str]:
    """File name → content, for every dashboard."""
    return {f"{d.uid}.json": json.dumps(render(d), indent=2, ensure_ascii=False) + "\n" for d in DASHBOARDS}


def chart_outputs() -> dict[str, str]:
    """The chart ships the dashboards and the rules file (its PrometheusRule) as they are here."""
    return {**outputs(), "rules.yaml": (HERE / "rules.yaml").read_text()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    files = {HERE / name: text for name, text in outputs().items()}
    files.update({CHART_COPY / name: text for name, text in chart_outputs().items()})
    return sync(files, check=args.check, command="python dashboards/generate.py")


if __name__ == "__main__":
    sys.exit(main())

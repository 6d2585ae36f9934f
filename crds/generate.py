"""Write crds/storyteller.dev_storytellerdeployments.yaml, the StorytellerDeployment CRD.

The CRD is generated from the typed spec (`storyteller_api.spec`, through `storyteller_api.crd`): edit the
models, run `python crds/generate.py`, commit both. tests/unit/test_chart.py checks the YAML matches and
that the chart's copy is byte-identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from storyteller_api.crd import crd

OUT = Path(__file__).with_name("storyteller.dev_storytellerdeployments.yaml")
CHART_COPY = Path(__file__).parents[1] / "helm" / "storyteller" / "crds" / OUT.name
HEADER = "# Generated from storyteller_api by crds/generate.py: edit the models, never this file by hand.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=4096, allow_unicode=True)


def main() -> int:
    text = render()
    for path in (OUT, CHART_COPY):
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

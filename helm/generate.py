"""Keep the chart's documentation in step with values.yaml, whose `# --` comments are the only source.

    python helm/generate.py           # rewrite values.schema.json's descriptions and the chart's README.md
    python helm/generate.py --check   # exit 1 when either differs from what would be written (unit test)

Descriptions: every key of values.yaml gets the comment above it as its schema `description` (the `# --`
part when there is one, as helm-docs reads it), so editors and `helm show values` users see the same
words. README.md: helm-docs (built by `make tools`) from README.md.gotmpl.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storyteller_devkit.generated import sync

CHART = Path(__file__).resolve().parent / "storyteller"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"
KEY = re.compile(r"^(\s*)([A-Za-z][\w.-]*):")
# Values whose children are Kubernetes shapes (resources, security contexts, NetworkPolicy rules): their
# keys are documented by Kubernetes, not here.
FREE_FORM = {"resources", "podSecurityContext", "securityContext"}


def commented_keys(text: str) -> Iterator[tuple[str, str | None]]:
    """(dotted key, the comment block above it or None) for every key of values.yaml outside free forms."""
    lines = text.splitlines()
    path: list[tuple[int, str]] = []
    free_form_indent: int | None = None
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        if free_form_indent is not None and indent > free_form_indent:
            continue
        free_form_indent = indent if key in FREE_FORM else None
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, key))
        block: list[str] = []
        for previous in reversed(lines[:i]):
            stripped = previous.strip()
            if not stripped.startswith("#"):
                break
            block.insert(0, stripped.lstrip("#").strip())
        dotted = ".".join(k for _, k in path)
        if not block:
            yield dotted, None
            continue
        # helm-docs reads from the `# --` line on; a plain block (a section's title) is used whole.
        starts = [n for n, b in enumerate(block) if b.startswith("--")]
        if starts:
            block = block[starts[-1] :]
            block[0] = block[0].removeprefix("--").strip()
        yield dotted, " ".join(b for b in block if b)


def described_schema(schema: dict[str, Any], comments: dict[str, str]) -> dict[str, Any]:
    """The schema with each values key's description set from its comment."""
    out = json.loads(json.dumps(schema))
    for dotted, text in comments.items():
        node = out
        for key in dotted.split("."):
            props = node.get("properties")
            if props is None or key not in props:
                raise KeyError(f"{dotted} is in values.yaml but not in values.schema.json")
            node = props[key]
        node["description"] = text
    return out


def schema_text() -> str:
    comments = {}
    for dotted, text in commented_keys(VALUES.read_text()):
        if text is None:
            raise ValueError(f"{dotted} in values.yaml has no comment above it")
        comments[dotted] = text
    schema = json.loads(SCHEMA.read_text())
    return json.dumps(described_schema(schema, comments), indent=2, ensure_ascii=False) + "\n"


def helm_docs() -> Path:
    from storyteller_devkit.cluster import find_tool  # the devkit knows the tools' cache

    return find_tool("helm-docs")


def readme_text() -> str:
    """README.md as helm-docs writes it, from a copy of the chart (the check must not write)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / CHART.name
        shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("README.md"))
        subprocess.run(
            [str(helm_docs()), "--chart-search-root", str(copy), "--template-files", "README.md.gotmpl",
             "--sort-values-order", "file", "--log-level", "warning"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return (copy / "README.md").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    files = {SCHEMA: schema_text(), README: readme_text()}
    return sync(files, check=args.check, command="python helm/generate.py")


if __name__ == "__main__":
    sys.exit(main())

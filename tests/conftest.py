"""Shared pytest set-up: markers by folder, and the fixture plugins every suite can use."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixture plugins live in tests/fixtures/ so unit, cluster and e2e tests share one copy.
pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.model_server",
    "tests.fixtures.prometheus",
    "tests.fixtures.real_node",
]

_MARK_BY_FOLDER = {
    "unit": "unit",
    "integration": "integration",
    "cluster": "cluster",
    "e2e": "e2e",
    "realnode": "realnode",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the folder it lives in, so `-m unit` needs no server and no cluster."""
    root = Path(__file__).parent
    for item in items:
        rel = Path(str(item.fspath)).relative_to(root)
        marker = _MARK_BY_FOLDER.get(rel.parts[0])
        if marker:
            item.add_marker(getattr(pytest.mark, marker))

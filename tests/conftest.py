"""Shared pytest set-up: markers by folder, and the fixture plugins every suite can use."""

from __future__ import annotations

from typing import Any

import pytest

# A plugin (pytest_plugins below) that this file also imports: rewritten like the others, before the import.
pytest.register_assert_rewrite("tests.suite_times")
from tests import suite_times  # noqa: E402

# Fixture plugins live in tests/fixtures/ so unit, cluster and e2e tests share one copy.
pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.model_server",
    "tests.fixtures.prometheus",
    "tests.fixtures.real_node",
    "tests.suite_times",
]

_MARK_BY_FOLDER = {
    "unit": "unit",
    "integration": "integration",
    "cluster": "cluster",
    "e2e": "e2e",
    "realnode": "realnode",
}


# The xdist workers take whole groups, longest lanes first: the real pods, then the control planes'
# tests, then the rest, each tier's slowest files first (make test runs `--no-loadscope-reorder`, so this
# order is the order work is handed out).
_TIER_ORDER = ("realnode", "cluster", "e2e", "integration", "unit")
# Every realnode test on one worker: they share the real node, the chart's operator pod and the node's
# Prometheus (session fixtures), which are the machine's. Every cluster test on one worker too: a control
# plane is a tenth of a core idle and its tests poll it, and one plane finishes them well before the real
# node's lane ends. Any other test goes with its file, so a module fixture starts once.
_ONE_GROUP_TIERS = {"realnode", "cluster"}


def xdist_group(nodeid: str) -> str:
    """The unit of work an xdist worker takes whole: the realnode or cluster tier, else the file."""
    tier = suite_times.tier(nodeid)
    return tier if tier in _ONE_GROUP_TIERS else nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load-scope scheduling with our groups as the scopes (its own `xdist_group` marker sets the
    nodeid's suffix, which pytest 9 no longer lets a plugin rewrite)."""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return TierScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the folder it lives in (so `-m unit` needs no server and no cluster), and put
    the longest groups first."""
    for item in items:
        marker = _MARK_BY_FOLDER.get(suite_times.tier(item.nodeid))
        if marker:
            item.add_marker(getattr(pytest.mark, marker))
    seconds = suite_times.previous_seconds_by_file()

    def rank(item: pytest.Item) -> tuple[int, float]:
        tier = suite_times.tier(item.nodeid)
        tier_rank = _TIER_ORDER.index(tier) if tier in _TIER_ORDER else len(_TIER_ORDER)
        return tier_rank, -seconds.get(item.nodeid.split("::")[0], 0.0)

    items.sort(key=rank)  # stable: a file's tests keep their order

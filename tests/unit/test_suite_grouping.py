"""How `make test` splits the suite among pytest-xdist workers (tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import xdist_group
from tests.suite_times import tier


def test_tier_is_the_folder_under_tests() -> None:
    assert tier("tests/cluster/test_harness.py::test_up") == "cluster"
    assert tier("tests/unit/test_render.py::test_x[a/b]") == "unit"
    assert tier("tests/conftest.py") == ""
    assert tier("bench/handoff.py::test_x") == ""


def test_machine_wide_tiers_are_one_group_each() -> None:
    # The real node and the control planes' tests must never be split between workers: a split would put
    # two workers on the one real node, or start a control plane per worker for no gain.
    assert xdist_group("tests/realnode/test_canary.py::test_a") == "realnode"
    assert xdist_group("tests/realnode/test_demo.py::test_b") == "realnode"
    assert xdist_group("tests/cluster/test_operator_keda.py::test_c[x]") == "cluster"


def test_other_tests_go_with_their_file() -> None:
    # A module fixture (a LiveKit server, a model server) starts once per file, so a file stays whole.
    assert xdist_group("tests/e2e/test_voice_session.py::test_a") == "tests/e2e/test_voice_session.py"
    assert xdist_group("tests/unit/test_chart.py::test_b[p::q]") == "tests/unit/test_chart.py"

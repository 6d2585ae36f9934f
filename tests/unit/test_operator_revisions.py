"""Revisions: numbering what the pods run, the history in status, the one-line change, and the planner's
use of them (the pods' label and env, status.revisions)."""

from __future__ import annotations

from typing import Any

import pytest

from storyteller_api import contract
from storyteller_operator import revisions
from storyteller_operator.revisions import CHANGE, NUMBER, Identity
from tests.unit.test_operator_plan import make, snapshot

NOW = "2026-12-01T12:00:00Z"
LATER = "2026-12-01T13:00:00Z"
CONFIG = {"story": {"instructions": "Tell a story.", "llm": {"model": "gpt-4o"}}, "turnDetection": "model"}


def ident(
    config: dict[str, Any] = CONFIG, image: str = "worker:1", secrets: dict[str, str] | None = None
) -> Identity:
    versions = secrets if secrets is not None else {"acme-openai": "10"}
    return revisions.identity(
        config, str(sorted(str(config))), image, versions, str(sorted(versions.items()))
    )


def with_story(instructions: str) -> dict[str, Any]:
    return {**CONFIG, "story": {**CONFIG["story"], "instructions": instructions}}


def test_the_first_revision_is_one_and_says_so() -> None:
    got = revisions.assign([], ident(), serving=None, now=NOW, limit=10)
    assert (got.number, got.created) == (1, True)
    (entry,) = got.history
    assert entry[CHANGE] == revisions.FIRST_CHANGE
    assert entry["image"] == "worker:1" and entry["created"] == NOW


def test_the_same_identity_keeps_its_number_and_changes_nothing() -> None:
    first = revisions.assign([], ident(), serving=None, now=NOW, limit=10)
    again = revisions.assign(first.history, ident(), serving=1, now=LATER, limit=10)
    assert (again.number, again.created, again.history) == (1, False, first.history)


def test_a_change_gets_the_next_number_and_names_what_changed() -> None:
    history = revisions.assign([], ident(), serving=None, now=NOW, limit=10).history
    got = revisions.assign(history, ident(with_story("Tell a sad story.")), serving=1, now=LATER, limit=10)
    assert (got.number, got.created) == (2, True)
    assert [e[NUMBER] for e in got.history] == [2, 1]  # newest first
    assert got.history[0][CHANGE] == "story.instructions changed"
    assert got.history[0]["created"] == LATER


@pytest.mark.parametrize(
    ("after", "line"),
    [
        (ident(image="worker:2"), "image worker:1 → worker:2"),
        (ident(secrets={"acme-openai": "11"}), "Secret acme-openai rotated"),
        (
            ident({**with_story("Another."), "turnDetection": "vad"}, image="worker:2"),
            "story.instructions, turnDetection changed; image worker:1 → worker:2",
        ),
        (ident({**CONFIG, "tts": {"voice": "ash"}}), "tts.voice changed"),  # a part that was not there
    ],
)
def test_the_change_line_names_config_parts_image_and_secrets(after: Identity, line: str) -> None:
    history = revisions.assign([], ident(), serving=None, now=NOW, limit=10).history
    assert revisions.assign(history, after, serving=1, now=LATER, limit=10).history[0][CHANGE] == line


def test_going_back_serves_the_earlier_number_and_the_next_change_is_against_what_was_served() -> None:
    one = revisions.assign([], ident(), serving=None, now=NOW, limit=10)
    two = revisions.assign(one.history, ident(image="worker:2"), serving=1, now=NOW, limit=10)
    back = revisions.assign(two.history, ident(), serving=2, now=LATER, limit=10)
    assert (back.number, back.created) == (1, False)
    # From revision 1 (served), only the instructions change: the image is 1's, not 2's.
    three = revisions.assign(back.history, ident(with_story("New.")), serving=1, now=LATER, limit=10)
    assert three.number == 3
    assert three.history[0][CHANGE] == "story.instructions changed"


def test_the_history_keeps_the_limit_and_never_drops_what_the_pods_run() -> None:
    history: list[dict[str, Any]] = []
    for n in range(1, 6):
        history = revisions.assign(
            history, ident(image=f"worker:{n}"), serving=n - 1, now=NOW, limit=3
        ).history
    assert [e[NUMBER] for e in history] == [5, 4, 3]
    # A smaller limit while serving an old revision keeps it, in the last place.
    got = revisions.assign(history, ident(image="worker:3"), serving=5, now=NOW, limit=2)
    assert got.number == 3 and [e[NUMBER] for e in got.history] == [5, 3]


def test_a_short_history_never_drops_the_served_or_a_pinned_revision() -> None:
    # A canary on limit 1: the stable revision (served) stays while edit after edit becomes the canary.
    history = revisions.assign([], ident(), serving=None, now=NOW, limit=1).history
    for n in range(2, 6):
        got = revisions.assign(history, ident(image=f"worker:{n}"), serving=1, now=NOW, limit=1)
        history = got.history
        assert got.number == n and [e[NUMBER] for e in history] == [n, 1]
    # A pinned revision stays too, beside the served one and the spec's; the rest go, oldest first.
    for n in range(6, 9):
        history = revisions.assign(
            history, ident(image=f"worker:{n}"), serving=5, now=NOW, limit=2, keep=[1]
        ).history
    assert [e[NUMBER] for e in history] == [8, 5, 1]
    # Once nothing holds them, the limit applies again.
    history = revisions.assign(history, ident(image="worker:8"), serving=8, now=NOW, limit=2).history
    assert [e[NUMBER] for e in history] == [8, 5]


def test_a_stored_history_that_is_not_a_list_of_numbered_entries_is_read_as_empty() -> None:
    assert revisions.entries({"revisions": "nonsense"}) == []
    assert revisions.entries({"revisions": [{"revision": "1"}, {"revision": 2}]}) == [{"revision": 2}]


def test_a_long_change_line_is_cut_to_one_line_of_bounded_length() -> None:
    wide = {f"part{i:03d}": i for i in range(100)}
    history = revisions.assign([], ident(wide), serving=None, now=NOW, limit=10).history
    changed = {k: v + 1 for k, v in wide.items()}
    line = revisions.assign(history, ident(changed), serving=1, now=NOW, limit=10).history[0][CHANGE]
    assert len(line) == revisions.MAX_CHANGE_CHARS and line.endswith("…") and "\n" not in line


# ------------------------------------------------------------------------------------ in the planner


def _pod_template(p: Any) -> dict[str, Any]:
    (dep,) = [m for m in p.children if m["kind"] == "Deployment"]
    return dict(dep["spec"]["template"])


def _env(template: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}


def test_the_planner_numbers_the_pods_and_records_the_revision_in_status() -> None:
    first = make(snapshot())
    template = _pod_template(first)
    assert template["metadata"]["labels"][contract.REVISION_LABEL] == "1"
    assert _env(template)[contract.REVISION_ENV] == "1"
    # The label is the pods' only: the Deployment's selector is immutable and never carries it.
    (dep,) = [m for m in first.children if m["kind"] == "Deployment"]
    assert contract.REVISION_LABEL not in dep["spec"]["selector"]["matchLabels"]
    assert (first.revision, [e[NUMBER] for e in first.revisions]) == (1, [1])

    stored = {"revision": first.revision, "revisions": first.revisions}
    # Resizing rolls no revision; new instructions do, and the status says what changed.
    same = make(snapshot({"pool": {"minReplicas": 3}}, status=stored))
    assert same.revision == 1 and same.revisions == first.revisions
    changed = make(snapshot({"story": {"instructions": "Tell a story about the sea."}}, status=stored))
    assert changed.revision == 2
    assert changed.revisions[0][CHANGE] == "story.instructions changed"
    assert _pod_template(changed)["metadata"]["labels"][contract.REVISION_LABEL] == "2"


def test_a_rotated_secret_is_a_new_revision() -> None:
    first = make(snapshot(secret_versions={"acme-livekit": "1"}))
    stored = {"revision": first.revision, "revisions": first.revisions}
    rotated = make(snapshot(status=stored, secret_versions={"acme-livekit": "2"}))
    assert rotated.revision == 2
    assert rotated.revisions[0][CHANGE] == "Secret acme-livekit rotated"


def test_the_history_limit_comes_from_the_spec() -> None:
    status: dict[str, Any] = {}
    for n in range(4):
        p = make(snapshot({"revisionHistoryLimit": 2, "worker": {"image": f"worker:{n}"}}, status=status))
        status = {"revision": p.revision, "revisions": p.revisions}
    assert [e[NUMBER] for e in status["revisions"]] == [4, 3]

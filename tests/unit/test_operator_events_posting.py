"""Posting Events: a repeat updates the first Event's count (like client-go's EventCorrelator) instead of
adding another. `Kube.post_event` against an in-memory events API; clocks injected."""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient, ApiException

from storyteller_operator.kube import Kube
from storyteller_operator.recent_events import RecentEvents, event_key

NS = "team-a"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEventsApi(Kube):
    """Kube with its one HTTP method replaced by an events endpoint in memory."""

    def __init__(self, clock: Clock, **recent: Any) -> None:
        self.wall = 0
        super().__init__(
            cast(ApiClient, None),
            recent_events=RecentEvents(clock=clock, **recent),
            now=lambda: f"2026-01-01T00:00:{self.wall:02d}Z",
        )
        self.events: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.patch_forbidden = False  # a ClusterRole granting only `create` on events (the chart today)
        self.down = False

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        self.requests.append((method, path))
        if self.down:
            raise OSError("connection refused")
        base = f"/api/v1/namespaces/{NS}/events"
        if method == "POST" and path == base:
            obj = copy.deepcopy(body)
            obj["metadata"]["name"] = obj["metadata"].pop("generateName") + f"{len(self.requests):x}"
            self.events[obj["metadata"]["name"]] = obj
            return copy.deepcopy(obj)
        if method == "PATCH" and path.startswith(base + "/"):
            assert content_type == "application/merge-patch+json"
            if self.patch_forbidden:
                raise ApiException(status=403, reason="Forbidden")
            name = path.rsplit("/", 1)[1]
            if name not in self.events:
                raise ApiException(status=404, reason="Not Found")
            self.events[name].update(body)
            return copy.deepcopy(self.events[name])
        raise AssertionError(f"unexpected {method} {path}")


def tenant(uid: str = "uid-1", name: str = "acme") -> dict[str, Any]:
    return {
        "apiVersion": "storyteller.dev/v1alpha1",
        "kind": "StorytellerDeployment",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> FakeEventsApi:
    return FakeEventsApi(clock)


def post(api: FakeEventsApi, obj: dict[str, Any] | None = None, /, **kw: str) -> None:
    event = {"type": "Warning", "reason": "SecretNotFound", "message": "secret lk-creds not found"} | kw
    api.post_event(obj or tenant(), **event)


def test_an_identical_event_counts_up_instead_of_adding_another(api: FakeEventsApi) -> None:
    for second in range(5):
        api.wall = second
        post(api)
    assert len(api.events) == 1
    (event,) = api.events.values()
    assert event["count"] == 5
    assert event["firstTimestamp"] == "2026-01-01T00:00:00Z"
    assert event["lastTimestamp"] == "2026-01-01T00:00:04Z"
    assert event["involvedObject"]["uid"] == "uid-1" and event["reason"] == "SecretNotFound"
    assert [m for m, _ in api.requests] == ["POST"] + ["PATCH"] * 4


@pytest.mark.parametrize(
    "differs",
    [
        {"message": "secret acme-openai not found"},
        {"reason": "ApplyFailed"},
        {"type": "Normal"},
        {"obj": "another tenant"},
    ],
)
def test_a_different_event_is_a_new_one(api: FakeEventsApi, differs: dict[str, str]) -> None:
    post(api)
    post(api)
    if differs.pop("obj", None):
        post(api, tenant(uid="uid-2", name="other"))
    else:
        post(api, **differs)
    post(api)
    assert sorted(e["count"] for e in api.events.values()) == [1, 3]


def test_an_expired_event_is_posted_again_and_then_counted(api: FakeEventsApi) -> None:
    post(api)
    api.events.clear()  # --event-ttl passed (or someone deleted it)
    post(api)
    post(api)
    assert [e["count"] for e in api.events.values()] == [2]


def test_a_repeat_after_the_window_is_a_new_event(api: FakeEventsApi, clock: Clock) -> None:
    post(api)
    clock.now += api.recent_events.window - 1
    post(api)  # within the window: counted
    clock.now += api.recent_events.window + 1
    post(api)  # the window counts from the last occurrence: now a new Event
    assert sorted(e["count"] for e in api.events.values()) == [1, 2]


def test_without_patch_permission_every_occurrence_is_still_posted(
    api: FakeEventsApi, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator newer than its ClusterRole (events: create only) loses no Event, and says why."""
    api.patch_forbidden = True
    with caplog.at_level(logging.WARNING, logger="storyteller.operator.kube"):
        for _ in range(3):
            post(api)
    assert [e["count"] for e in api.events.values()] == [1, 1, 1]
    warnings = [r for r in caplog.records if r.getMessage() == "cannot update event"]
    assert len(warnings) == 2 and all("403" in r.error for r in warnings)  # type: ignore[attr-defined]


def test_an_unreachable_api_server_fails_no_reconcile_and_the_next_post_starts_afresh(
    api: FakeEventsApi, caplog: pytest.LogCaptureFixture
) -> None:
    api.down = True
    with caplog.at_level(logging.WARNING, logger="storyteller.operator.kube"):
        post(api)  # must not raise
    assert any(r.getMessage() == "cannot post event" for r in caplog.records)
    api.down = False
    post(api)
    post(api)
    assert [e["count"] for e in api.events.values()] == [2]


def test_the_memory_of_recent_events_is_bounded(clock: Clock) -> None:
    api = FakeEventsApi(clock, max_entries=2)
    for message in ("one", "two", "three"):
        post(api, message=message)
    assert len(api.recent_events) == 2
    post(api, message="one")  # the least recently posted was forgotten: a new Event
    post(api, message="three")  # still remembered: counted
    counts = sorted((e["message"], e["count"]) for e in api.events.values())
    assert counts == [("one", 1), ("one", 1), ("three", 2), ("two", 1)]


def test_recent_events_keys_on_the_whole_message() -> None:
    long = "x" * 1000
    assert event_key("u", "Warning", "R", long) != event_key("u", "Warning", "R", long + "y")
    assert event_key("u", "Warning", "R", long) == event_key("u", "Warning", "R", "x" * 1000)

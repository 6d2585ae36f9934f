"""Two tenants with the same agent name on the same LiveKit server take each other's calls: both are told."""

from __future__ import annotations

import pytest

from storyteller_operator import status as st
from storyteller_operator.agent_names import AgentNames, identity_of, server_of
from storyteller_operator.reconcile import Reconciler
from tests.unit.test_operator_reconcile import Events, FakeKube, secret
from tests.unit.test_operator_render import tenant


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("wss://lk.example.com", "https://LK.example.com/"),
        ("wss://lk.example.com", "wss://lk.example.com:443"),
        ("ws://127.0.0.1:7880", "http://127.0.0.1:7880"),
    ],
)
def test_spellings_of_one_server_are_one_server(a: str, b: str) -> None:
    assert server_of(a) == server_of(b)


def test_different_servers_or_ports_are_different() -> None:
    assert server_of("wss://a.example.com") != server_of("wss://b.example.com")
    assert server_of("ws://127.0.0.1:7880") != server_of("ws://127.0.0.1:7881")


def test_the_agent_name_defaults_to_the_tenants_name() -> None:
    assert identity_of(tenant(name="acme")) == identity_of(tenant({"agentName": "acme"}, name="other"))
    assert identity_of({"metadata": {"name": "x"}, "spec": {}}) is None


def test_update_returns_whose_conflicts_changed() -> None:
    names = AgentNames()
    a, b, c = ("ns-a", "acme"), ("ns-b", "acme"), ("ns-c", "other")
    same = ("wss://lk:443", "acme")
    assert names.update(a, same) == set()
    assert names.update(c, ("wss://lk:443", "other")) == set()
    assert names.update(b, same) == {a}  # a now conflicts
    assert names.others(a) == [b] and names.others(b) == [a] and names.others(c) == []
    assert names.update(b, same) == set()  # unchanged
    assert names.update(b, ("wss://lk:443", "acme-2")) == {a}  # renamed: a is clear again
    assert names.others(a) == []
    names.update(b, same)
    assert names.update(b, None) == {a}  # deleted


def two_tenants() -> tuple[FakeKube, Events, Reconciler]:
    kube, events = FakeKube(), Events()
    for ns in ("team-a", "team-b"):
        obj = tenant(namespace=ns)
        obj["metadata"]["uid"] = f"uid-{ns}"
        kube.add(obj)
        kube.add(secret("lk-creds", ns))
    rec = Reconciler(kube, events, clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False)
    return kube, events, rec


def test_both_tenants_report_the_conflict_naming_the_other_until_one_is_renamed() -> None:
    kube, events, rec = two_tenants()
    assert rec.note_tenant("team-a", "acme", kube.objects[("StorytellerDeployment", "team-a", "acme")]) == []
    assert rec.note_tenant("team-b", "acme", kube.objects[("StorytellerDeployment", "team-b", "acme")]) == [
        ("team-a", "acme")
    ]
    for ns, other in (("team-a", "team-b"), ("team-b", "team-a")):
        rec.reconcile(ns, "acme")
        status = kube.objects[("StorytellerDeployment", ns, "acme")]["status"]
        degraded = st.condition(status, st.DEGRADED)
        assert degraded is not None and degraded["status"] == "True"
        assert degraded["reason"] == "AgentNameConflict"
        assert f"tenant {other}/acme" in degraded["message"] and '"acme"' in degraded["message"]
        assert status["phase"] == "Degraded"
    warnings = [m for t, r, m in events.posted if (t, r) == ("Warning", "AgentNameConflict")]
    assert len(warnings) == 2 and "team-b/acme" in warnings[0] and "team-a/acme" in warnings[1]

    renamed = kube.objects[("StorytellerDeployment", "team-b", "acme")]
    renamed["spec"]["agentName"] = "acme-b"
    renamed["metadata"]["generation"] = 2
    assert rec.note_tenant("team-b", "acme", renamed) == [("team-a", "acme")]
    for ns in ("team-a", "team-b"):
        rec.reconcile(ns, "acme")
        degraded = st.condition(kube.objects[("StorytellerDeployment", ns, "acme")]["status"], st.DEGRADED)
        assert degraded is not None and degraded["status"] == "False"

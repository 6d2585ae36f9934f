"""Two tenants with the same agent name on the same LiveKit server would take each other's calls: the one
that claimed it first keeps serving, a later one runs no worker and is told without naming the first."""

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


def test_the_earlier_claim_holds_the_later_one() -> None:
    names = AgentNames()
    a, b = ("ns-a", "acme"), ("ns-b", "acme")
    same = ("wss://lk:443", "acme")
    names.update(a, same, ("2026-01-02T00:00:00Z", "uid-a"))
    names.update(b, same, ("2026-01-01T00:00:00Z", "uid-b"))
    assert (names.held(a), names.held(b)) == (True, False)
    names.update(b, same, ("2026-01-02T00:00:00Z", "uid-0"))  # same second: the smaller uid is first
    assert (names.held(a), names.held(b)) == (True, False)
    names.update(b, None)
    assert names.held(a) is False


def two_tenants() -> tuple[FakeKube, Events, Reconciler]:
    kube, events = FakeKube(), Events()
    for ns in ("team-a", "team-b"):
        obj = tenant(namespace=ns)
        obj["metadata"]["uid"] = f"uid-{ns}"
        # team-b's tenant is the older one: the claim goes by creation, not by name.
        obj["metadata"]["creationTimestamp"] = {
            "team-a": "2026-01-02T00:00:00Z",
            "team-b": "2026-01-01T00:00:00Z",
        }[ns]
        kube.add(obj)
        kube.add(secret("lk-creds", ns))
    rec = Reconciler(kube, events, clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False)
    return kube, events, rec


def replicas(kube: FakeKube, ns: str) -> int:
    return int(kube.objects[("Deployment", ns, "acme-worker")]["spec"]["replicas"])


def test_the_first_claim_keeps_serving_and_a_later_one_runs_no_worker_until_renamed() -> None:
    kube, events, rec = two_tenants()
    sd = {ns: kube.objects[("StorytellerDeployment", ns, "acme")] for ns in ("team-a", "team-b")}
    assert rec.note_tenant("team-a", "acme", sd["team-a"]) == []
    assert rec.note_tenant("team-b", "acme", sd["team-b"]) == [("team-a", "acme")]
    for ns in ("team-a", "team-b"):
        rec.reconcile(ns, "acme")
    first = sd["team-b"]["status"]
    assert (st.condition(first, st.DEGRADED) or {}).get("status") == "False" and replicas(kube, "team-b") == 1

    later = sd["team-a"]["status"]
    degraded = st.condition(later, st.DEGRADED) or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "AgentNameConflict")
    assert '"acme"' in degraded["message"] and "team-b" not in degraded["message"]
    assert later["phase"] == "Degraded" and (st.condition(later, st.READY) or {}).get("reason") == (
        "AgentNameConflict"
    )
    assert replicas(kube, "team-a") == 0  # no worker registers under the taken name
    (warning,) = [m for t, r, m in events.posted if (t, r) == ("Warning", "AgentNameConflict")]
    assert "team-b" not in warning
    assert "suspend" not in sd["team-a"]["spec"] or sd["team-a"]["spec"]["suspend"] is False  # spec untouched

    # The later one takes another name: it serves, and nobody is held.
    sd["team-a"]["spec"]["agentName"] = "acme-a"
    sd["team-a"]["metadata"]["generation"] = 2
    assert rec.note_tenant("team-a", "acme", sd["team-a"]) == [("team-b", "acme")]
    for ns in ("team-a", "team-b"):
        rec.reconcile(ns, "acme")
        status = sd[ns]["status"]
        assert (st.condition(status, st.DEGRADED) or {}).get("status") == "False"
        assert replicas(kube, ns) == 1


def test_when_the_first_claimant_goes_the_next_one_serves() -> None:
    kube, _, rec = two_tenants()
    sd = {ns: kube.objects[("StorytellerDeployment", ns, "acme")] for ns in ("team-a", "team-b")}
    for ns in ("team-a", "team-b"):
        rec.note_tenant(ns, "acme", sd[ns])
    rec.reconcile("team-a", "acme")
    assert replicas(kube, "team-a") == 0
    assert rec.note_tenant("team-b", "acme", None) == [("team-a", "acme")]
    rec.reconcile("team-a", "acme")
    assert replicas(kube, "team-a") == 1
    assert (st.condition(sd["team-a"]["status"], st.DEGRADED) or {}).get("status") == "False"

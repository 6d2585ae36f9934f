"""The reconcile's log line: info when something was written or the phase moved, debug for the no-op
reconciles that are most of them (every recheck of every tenant)."""

from __future__ import annotations

import logging

import pytest

from storyteller_api import contract
from storyteller_operator.reconcile import Reconciler
from tests.unit.test_operator_reconcile import Events, FakeKube, secret
from tests.unit.test_operator_render import tenant

LOGGER = "storyteller.operator.reconcile"


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add(tenant({"providerSecrets": ["acme-openai"]}))
    k.add(secret("lk-creds"))
    k.add(secret("acme-openai"))
    return k


@pytest.fixture
def rec(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, Events(), clock=lambda: "2026-01-01T00:00:00Z", detect_pod_monitor=False)


def levels(caplog: pytest.LogCaptureFixture, message: str) -> list[str]:
    return [r.levelname for r in caplog.records if r.name == LOGGER and r.getMessage() == message]


def test_writes_log_at_info_and_unchanged_reconciles_at_debug(
    rec: Reconciler, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        rec.reconcile("team-a", "acme")  # children created, status written
        kube.roll_out("team-a", "acme")
        rec.reconcile("team-a", "acme")  # only the status (Pending → Ready) written
        rec.reconcile("team-a", "acme", force_apply=True)  # nothing to do, even re-applying everything
        rec.reconcile("team-a", "acme", force_apply=False)
    assert levels(caplog, "reconciled") == ["INFO", "INFO", "DEBUG", "DEBUG"]
    no_op = [r for r in caplog.records if r.getMessage() == "reconciled"][-1]
    assert no_op.changed == [] and no_op.status_written is False and no_op.phase == "Ready"  # type: ignore[attr-defined]


def test_at_the_default_level_an_unchanged_tenant_logs_nothing(
    rec: Reconciler, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    rec.reconcile("team-a", "acme")
    kube.roll_out("team-a", "acme")
    rec.reconcile("team-a", "acme")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(3):
            rec.reconcile("team-a", "acme")
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_an_invalid_spec_warns_once_not_on_every_recheck(
    rec: Reconciler, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    rec.reconcile("team-a", "acme")
    t = kube.objects[(contract.KIND, "team-a", "acme")]
    t["spec"]["pool"]["drainTimeoutSeconds"] = 0  # an older CRD let it through
    t["metadata"]["generation"] = 2
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for _ in range(3):
            rec.reconcile("team-a", "acme")
    assert levels(caplog, "invalid spec") == ["WARNING", "DEBUG", "DEBUG"]

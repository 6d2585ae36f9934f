"""The platform's rules for tenants (tenancy.py): pure checks, and the rules as the chart passes them."""

from __future__ import annotations

from typing import Any

import pytest

from storyteller_api.spec import TenantSpec
from storyteller_operator import tenancy
from storyteller_operator.tenancy import TenancyRules
from storyteller_operator.tenant import Tenant
from tests.unit.test_operator_render import tenant


def spec(worker: dict[str, Any] | None = None, **more: Any) -> TenantSpec:
    return Tenant.from_object(tenant({"worker": worker or {}, **more})).spec


def test_defaults_are_the_safe_ones() -> None:
    rules = TenancyRules()
    assert rules.secrets == "labelled" and rules.allowed_toleration_keys == ()
    assert rules.allowed_pod_annotation_prefixes == () and "nvidia.com/gpu" not in rules.allowed_resources
    assert tenancy.over_limits(rules, spec()) is None  # the default tenant fits them


def test_rules_from_the_chart_json_and_a_bad_one_names_the_field() -> None:
    rules = TenancyRules.from_json(
        '{"secrets": "any", "maxPods": 7, "allowedTolerationKeys": ["gpu"], '
        '"maxResourcesPerPod": {"cpu": "2"}}'
    )
    assert (rules.secrets, rules.max_pods, rules.allowed_toleration_keys) == ("any", 7, ("gpu",))
    with pytest.raises(ValueError, match="maxPods"):
        TenancyRules.from_json('{"maxPods": 0}')
    with pytest.raises(ValueError, match="maxResourcesPerPod"):
        TenancyRules.from_json('{"maxResourcesPerPod": {"cpu": "lots"}}')
    with pytest.raises(ValueError, match="secretz"):
        TenancyRules.from_json('{"secretz": "any"}')


@pytest.mark.parametrize(
    ("labels", "allowed"),
    [
        ({tenancy.SECRET_LABEL: "true"}, True),
        ({tenancy.SECRET_LABEL: "acme"}, True),
        ({tenancy.SECRET_LABEL: "billing"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_secret_opt_in(labels: dict[str, str] | None, allowed: bool) -> None:
    assert tenancy.secret_allowed(labels, "acme") is allowed
    refused = tenancy.refused_secrets(
        TenancyRules(), "acme", [("s", "spec.providerSecrets[0]")], {"s": labels}
    )
    assert (refused is None) is allowed
    assert tenancy.refused_secrets(TenancyRules(secrets="any"), "acme", [("s", "f")], {"s": labels}) is None


def test_an_absent_secret_is_not_refused_here() -> None:
    assert tenancy.refused_secrets(TenancyRules(), "acme", [("gone", "f")], {}) is None


@pytest.mark.parametrize(
    ("worker", "rules", "named"),
    [
        (
            {"tolerations": [{"key": "gpu", "operator": "Exists"}]},
            TenancyRules(),
            "spec.worker.tolerations[0]",
        ),
        ({"tolerations": [{"operator": "Exists"}]}, TenancyRules(allowed_toleration_keys=("gpu",)), "no key"),
        ({"podAnnotations": {"iam.amazonaws.com/role": "admin"}}, TenancyRules(), "iam.amazonaws.com/role"),
        ({"resources": {"requests": {"cpu": "9"}}}, TenancyRules(), "tenants.maxResourcesPerPod"),
        ({"resources": {"limits": {"nvidia.com/gpu": "1"}}}, TenancyRules(), "tenants.allowedResources"),
    ],
)
def test_pod_fields_over_a_limit_are_named(worker: dict[str, Any], rules: TenancyRules, named: str) -> None:
    found = tenancy.over_limits(rules, spec(worker))
    assert found is not None and found[0] == tenancy.PLATFORM_LIMIT and named in found[1]


def test_what_the_platform_allows_passes() -> None:
    rules = TenancyRules(
        allowed_toleration_keys=("gpu",),
        allowed_pod_annotation_prefixes=("example.com/",),
        allowed_resources=("cpu", "memory", "nvidia.com/gpu"),
        max_resources_per_pod={"nvidia.com/gpu": "1"},
    )
    worker = {
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "podAnnotations": {"example.com/team": "a"},
        "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "4Gi"}},
    }
    assert tenancy.over_limits(rules, spec(worker)) is None
    assert (
        tenancy.over_limits(
            TenancyRules(allowed_toleration_keys=("*",)), spec({"tolerations": [{"operator": "Exists"}]})
        )
        is None
    )


def test_the_default_resources_of_a_large_worker_count_too() -> None:
    found = tenancy.over_limits(TenancyRules(), spec(pool={"sessionsPerWorker": 100}))
    assert found is not None and "100 sessions per worker" in found[1]


def test_pods_cap() -> None:
    assert tenancy.pods_cap(TenancyRules(max_pods=4), 3) == (3, None)
    held, problem = tenancy.pods_cap(TenancyRules(max_pods=4), 9)
    assert held == 4 and problem is not None and "asks for 9" in problem[1]

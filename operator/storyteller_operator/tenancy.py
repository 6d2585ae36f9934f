"""What the platform lets a tenant use: the chart's rules (`tenants.*`), and pure checks of a tenant
against them.

Whoever may create a StorytellerDeployment makes the operator create pods for them, with the Secrets,
tolerations, resources and annotations the spec names: the operator must not do for a tenant what the
platform team would not let it do. A tenant over a rule is Degraded, naming the rule, and its pods are not
rolled (running pods stay as they are, and the pool is still sized); over `maxPods`, its pool is held
there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from storyteller_api import contract
from storyteller_api.spec import MAX_REPLICAS, TenantSpec
from storyteller_operator import resources

# A Secret a tenant may name carries this label: "true" (any tenant of its namespace) or the tenant's name.
SECRET_LABEL = f"{contract.GROUP}/tenant-secret"
ANY_TENANT = "true"

SECRET_NOT_ALLOWED = "SecretNotAllowed"  # Degraded reasons
PLATFORM_LIMIT = "PlatformLimit"

ENV = "STORYTELLER_OPERATOR_TENANT_RULES"  # the rules as JSON (the chart's `tenants` value)


class TenancyRules(BaseModel):
    """The chart's `tenants` value. Defaults are the safe ones: what a tenant may not be trusted with is
    refused until the platform team allows it."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    secrets: Literal["labelled", "any"] = Field(
        default="labelled",
        description=f"labelled: a tenant may name only Secrets labelled {SECRET_LABEL}=true or =<tenant "
        "name>; any: every Secret of its namespace (whoever may create a tenant can read them all).",
    )
    max_pods: int = Field(default=50, ge=1, le=MAX_REPLICAS)
    allowed_toleration_keys: tuple[str, ...] = ()  # "*": any key (and tolerations without a key)
    allowed_resources: tuple[str, ...] = ("cpu", "memory", "ephemeral-storage")
    max_resources_per_pod: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "20Gi"}
    )
    allowed_pod_annotation_prefixes: tuple[str, ...] = ()  # "": any annotation

    @field_validator("max_resources_per_pod")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            try:
                _quantity(quantity)
            except ValueError:
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity") from None
        return value

    @classmethod
    def from_json(cls, text: str) -> TenancyRules:
        """The rules from the operator's environment; a clear error naming the field otherwise."""
        try:
            return cls.model_validate(json.loads(text or "{}"))
        except (ValueError, ValidationError) as err:
            raise ValueError(f"{ENV}: {err}") from None


def _quantity(value: str | int) -> Decimal:
    parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    return parsed


def secret_allowed(labels: Mapping[str, str] | None, tenant: str) -> bool:
    return (labels or {}).get(SECRET_LABEL) in (ANY_TENANT, tenant)


def refused_secrets(
    rules: TenancyRules,
    tenant: str,
    referenced: Sequence[tuple[str, str]],
    labels: Mapping[str, Mapping[str, str] | None],
) -> tuple[str, str] | None:
    """(SecretNotAllowed, message) when the tenant names a Secret it may not use. `referenced`: (Secret,
    spec field); `labels`: each Secret the operator found → its labels (None: it may not read it). A Secret
    that is absent is reported as missing elsewhere (SecretNotFound)."""
    if rules.secrets == "any":
        return None
    refused = [
        (secret, field, labels[secret])
        for secret, field in dict(referenced).items()
        if secret in labels and not secret_allowed(labels[secret], tenant)
    ]
    if not refused:
        return None
    secret, field, found = refused[0]
    how = (
        "the operator may not read its labels in this namespace (grant it Secret metadata here: the "
        "chart's rbac.secretNamespaces)"
        if found is None
        else f"it is not labelled {SECRET_LABEL}: {ANY_TENANT} (or the tenant's name, {tenant})"
    )
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return (
        SECRET_NOT_ALLOWED,
        f'Secret "{secret}" ({field}){more} may not be used by this tenant: {how}; the pods are not rolled '
        "until the Secret's owner labels it (or the platform's tenants.secrets is any)",
    )


def over_limits(rules: TenancyRules, spec: TenantSpec) -> tuple[str, str] | None:
    """(PlatformLimit, message) naming the first rule the tenant's pods would break; None: within them."""
    problems = _pod_problems(rules, spec)
    if not problems:
        return None
    return (
        PLATFORM_LIMIT,
        f"{problems[0]} (a platform limit, chart value tenants.*); the pods are not rolled",
    )


def _pod_problems(rules: TenancyRules, spec: TenantSpec) -> list[str]:
    out = []
    keys = rules.allowed_toleration_keys
    for i, toleration in enumerate(spec.worker.tolerations or []):
        key = str(toleration.get("key") or "")
        if "*" not in keys and key not in keys:
            shown = f'key "{key}"' if key else "no key (it tolerates every taint)"
            out.append(
                f"spec.worker.tolerations[{i}] has {shown}: allowed keys are {list(keys) or 'none'} "
                "(tenants.allowedTolerationKeys)"
            )
    prefixes = rules.allowed_pod_annotation_prefixes
    for name in sorted(spec.worker.pod_annotations or {}):
        if not any(name.startswith(p) for p in prefixes):
            out.append(
                f'spec.worker.podAnnotations "{name}" is not allowed: allowed prefixes are '
                f"{list(prefixes) or 'none'} (tenants.allowedPodAnnotationPrefixes)"
            )
    effective = resources.container_resources(spec)
    for part in ("requests", "limits"):
        for name, quantity in sorted((effective.get(part) or {}).items()):
            if name not in rules.allowed_resources:
                out.append(
                    f"spec.worker.resources.{part}.{name}: resource {name} is not allowed "
                    f"(tenants.allowedResources: {list(rules.allowed_resources)})"
                )
                continue
            most = rules.max_resources_per_pod.get(name)
            if most is not None and _quantity(quantity) > _quantity(most):
                out.append(
                    f"spec.worker.resources.{part}.{name} is {quantity} (with the defaults for "
                    f"{spec.pool.sessions_per_worker} sessions per worker), above the {most} a pod may "
                    "have (tenants.maxResourcesPerPod)"
                )
    return out


def pods_cap(rules: TenancyRules, desired: int) -> tuple[int, tuple[str, str] | None]:
    """`desired` held at the platform's most pods per tenant, and (PlatformLimit, message) when held."""
    if desired <= rules.max_pods:
        return desired, None
    return rules.max_pods, (
        PLATFORM_LIMIT,
        f"the pool is held at {rules.max_pods} workers, the most one tenant may run (tenants.maxPods); it "
        f"asks for {desired}",
    )

"""A StorytellerDeployment as the operator holds it: identity, the typed spec, and the object as stored.

Read once per reconcile (`Tenant.from_object`): everything downstream reads typed fields with the
defaults of `storyteller_api.spec`, never `dict.get(key, default)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from storyteller_api import validation
from storyteller_api.spec import TenantSpec


class InvalidSpec(validation.SpecError):
    """The stored spec fails the spec models (the CRD let through what the models refuse)."""


@dataclasses.dataclass(frozen=True)
class Tenant:
    name: str
    namespace: str
    uid: str
    generation: int
    resource_version: str
    spec: TenantSpec
    # The spec exactly as stored: the worker config is rendered from it (its hash must not move when
    # only the operator's reading of it changes).
    stored_spec: Mapping[str, Any]
    obj: Mapping[str, Any]  # the whole object, for owner references and Events

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Tenant:
        meta = obj["metadata"]
        stored = obj.get("spec") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            resource_version=str(meta.get("resourceVersion", "")),
            spec=validation.parse(TenantSpec, stored, InvalidSpec),
            stored_spec=stored,
            obj=obj,
        )

    def _with_spec(self, **fields: Any) -> Tenant:
        """The same tenant with these top-level spec fields (named alike in the stored spec) set."""
        stored = {**self.stored_spec, **fields}
        return dataclasses.replace(self, spec=self.spec.model_copy(update=fields), stored_spec=stored)

    def with_replicas(self, replicas: int) -> Tenant:
        """The same tenant with spec.replicas set (a seeded size, before the API server echoes it)."""
        return self._with_spec(replicas=replicas)

    def held(self) -> Tenant:
        """The same tenant planned as if suspended: no worker runs (spec.suspend is not part of what the
        pods run, so this rolls nothing and the revision stays)."""
        return self._with_spec(suspend=True)


def as_tenant(tenant: Tenant | Mapping[str, Any]) -> Tenant:
    """Builders take a parsed Tenant; a raw object (tests, one-off renders) is parsed here."""
    return tenant if isinstance(tenant, Tenant) else Tenant.from_object(tenant)

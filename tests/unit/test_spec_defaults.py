"""The CRD, the operator and the worker cannot disagree on a default: one model, checked three ways."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from storyteller_api import contract
from storyteller_api.spec import AgentSpec, TenantSpec, WorkerConfig, WorkerPool
from storyteller_operator import render
from storyteller_operator.tenant import Tenant
from storyteller_worker.config import parse_tenant_config
from tests.unit.test_operator_render import apply_defaults, spec_schema

REPO = Path(__file__).resolve().parents[2]
LIVEKIT = {"url": "wss://lk.example.com", "credentialsSecret": "lk-creds"}
# Partial specs: each leaves most fields to the defaults, at a different depth.
PARTIAL_SPECS: list[dict[str, Any]] = [
    {},
    {"pool": {"minReplicas": 0, "autoscaler": "none"}, "replicas": 2},
    {"intro": {"llm": {"provider": "openai-realtime", "model": "gpt-realtime", "voice": "alloy"}}},
    {"story": {"carryChatContext": True}, "observability": {"tracing": {"otlpEndpoint": "http://otel:4318"}}},
    {"worker": {"image": "example/worker:1"}, "providerSecrets": ["keys"], "suspend": True},
]


def obj(spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": "acme", "namespace": "team-a", "uid": "uid-1", "generation": 1}
    return {"apiVersion": contract.API_VERSION, "kind": contract.KIND, "metadata": meta, "spec": spec}


@pytest.mark.parametrize("partial", PARTIAL_SPECS)
def test_crd_defaults_are_the_models_defaults(partial: dict[str, Any]) -> None:
    given = {"livekit": LIVEKIT, **partial}
    stored = apply_defaults(spec_schema(), given)  # what the API server would store
    assert TenantSpec.model_validate(stored) == TenantSpec.model_validate(given)


@pytest.mark.parametrize("partial", PARTIAL_SPECS)
def test_the_operator_renders_the_same_with_or_without_the_servers_defaults(partial: dict[str, Any]) -> None:
    given = {"livekit": LIVEKIT, **partial}
    stored = apply_defaults(spec_schema(), given)
    bare, defaulted = Tenant.from_object(obj(given)), Tenant.from_object(obj(stored))
    assert bare.spec == defaulted.spec
    # Every child but the ConfigMap (the stored spec, verbatim) is rendered from the typed spec alone.
    rendered = {m["kind"]: m for m in render.children(bare)}
    for manifest in render.children(defaulted):
        if manifest["kind"] == "ConfigMap":
            continue
        if manifest["kind"] == "Deployment":  # the config hash (and revision) is the stored spec's
            for m in (manifest, rendered["Deployment"]):
                m["spec"]["template"]["metadata"]["annotations"].pop(contract.CONFIG_HASH_ANNOTATION)
                m["spec"]["template"]["spec"]["volumes"][0]["configMap"].pop("name")
        assert manifest == rendered[manifest["kind"]], manifest["kind"]


@pytest.mark.parametrize("partial", PARTIAL_SPECS)
def test_the_worker_reads_the_same_config_with_or_without_the_servers_defaults(
    partial: dict[str, Any],
) -> None:
    given = {"livekit": LIVEKIT, **partial}
    stored = apply_defaults(spec_schema(), given)
    from_stored = parse_tenant_config(render.worker_config("acme", "team-a", stored))
    from_bare = parse_tenant_config(render.worker_config("acme", "team-a", given))
    assert from_stored == from_bare
    # and it is the same model the operator reads: the agent-facing fields agree one by one.
    spec = TenantSpec.model_validate(stored)
    for field in AgentSpec.model_fields:
        if field == "pool":  # the worker's part of it only
            worker_pool = {f: getattr(spec.pool, f) for f in WorkerPool.model_fields}
            assert from_stored.pool.model_dump() == worker_pool
        elif field != "agent_name":
            assert getattr(from_stored, field) == getattr(spec, field), field


def test_the_config_map_holds_exactly_what_the_worker_model_accepts() -> None:
    stored = apply_defaults(spec_schema(), {"livekit": LIVEKIT})
    cm = render.config_map(obj(stored))
    data = json.loads(cm["data"][contract.CONFIG_KEY])
    assert set(data) <= {f.alias or n for n, f in WorkerConfig.model_fields.items()}
    assert WorkerConfig.model_validate(data).tenant == "acme"


def _string_constants(path: Path) -> set[str]:
    return {
        n.value
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_no_module_but_the_api_package_spells_a_spec_default_or_key() -> None:
    """The operator and the worker read the spec through the models: no `"minReplicas"`-style key and no
    default model name written again in their sources."""
    # The spec's own multi-word keys; the ones Kubernetes' pod and Deployment specs share (nodeSelector,
    # imagePullPolicy, revisionHistoryLimit) and agentName (worker_config sets it: the config's identity,
    # like tenant and namespace) are left out.
    spec_keys = {
        f.alias or name
        for model in (TenantSpec, *(_nested_models(TenantSpec)))
        for name, f in model.model_fields.items()
        if (f.alias or name) != (f.alias or name).lower()
    } - {"nodeSelector", "imagePullPolicy", "revisionHistoryLimit", "agentName"}
    defaults = {
        "gpt-4o-mini",
        "gpt-4o-mini-tts",
        "nova-3",
        "ghcr.io/storyteller-dev/storyteller-worker:0.1.0",
    }
    offenders = []
    for package in ("operator/storyteller_operator", "worker/storyteller_worker"):
        for path in sorted((REPO / package).rglob("*.py")):
            found = _string_constants(path) & (spec_keys | defaults)
            if found:
                offenders.append(f"{path.relative_to(REPO)}: {sorted(found)}")
    assert not offenders, "read these through storyteller_api.spec:\n" + "\n".join(offenders)


def _nested_models(model: type[Any]) -> list[type[Any]]:
    from pydantic import BaseModel

    out: list[type[Any]] = []
    for f in model.model_fields.values():
        for tp in _types(f.annotation):
            if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in out:
                out += [tp, *_nested_models(tp)]
    return out


def _types(annotation: Any) -> list[Any]:
    import typing

    args = typing.get_args(annotation)
    return [annotation] if not args else [t for a in args for t in _types(a)]

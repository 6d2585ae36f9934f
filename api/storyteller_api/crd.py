"""The StorytellerDeployment CRD, generated from the spec models (`spec.py`) and the contract.

The spec's schema is derived field by field: type from the annotation, bounds from the field's
constraints, `description`, the stored default, and `json_schema_extra` merged last (for what only the
CRD says: list types, int-or-string quantities). A class's `CEL_RULES` become its
`x-kubernetes-validations`. Model-typed fields default to `{}` when their default is the bare class (the
API server then fills the nested defaults) and to the default instance's non-default fields otherwise;
list fields get no default unless `json_schema_extra` gives one (a stored `fallbacks: []` would change
every tenant's config). The status block and the CRD's envelope are written out here.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from storyteller_api import contract
from storyteller_api.spec import MAX_REVISION_HISTORY, TENANT_NAME, TENANT_NAME_MAX, SpecModel, TenantSpec

Schema = dict[str, Any]
STRING_MAP_MAX_PROPERTIES = 64
STRING_MAP_VALUE_MAX_LENGTH = 1024


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    """Constraint name → value, from pydantic's field metadata (annotated_types and its general bag)."""
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            out.update(_constraints(item.metadata))
        elif isinstance(item, annotated_types.MaxLen):
            out["max_length"] = item.max_length
        elif isinstance(item, annotated_types.MinLen):
            out["min_length"] = item.min_length
        elif isinstance(item, annotated_types.Ge):
            out["ge"] = item.ge
        elif isinstance(item, annotated_types.Le):
            out["le"] = item.le
        elif getattr(item, "pattern", None) is not None:
            out["pattern"] = item.pattern
    return out


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def type_schema(tp: Any, constraints: dict[str, Any] | None = None) -> Schema:
    """The structural schema of one annotation, with its constraints."""
    tp = _strip_optional(tp)
    c = dict(constraints or {})
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return type_schema(base, {**_constraints(meta), **c})
    origin = typing.get_origin(tp)
    schema: Schema
    if tp is str or origin is Literal:
        schema = {"type": "string"}
        for key, name in (("min_length", "minLength"), ("max_length", "maxLength"), ("pattern", "pattern")):
            if key in c:
                schema[name] = c[key]
        if origin is Literal:
            schema["enum"] = list(typing.get_args(tp))
        return schema
    if tp is bool:
        return {"type": "boolean"}
    if tp is int or tp is float:
        schema = {"type": "integer", "format": "int32"} if tp is int else {"type": "number"}
        if "ge" in c:
            schema["minimum"] = c["ge"]
        if "le" in c:
            schema["maximum"] = c["le"]
        return schema
    if isinstance(tp, type) and issubclass(tp, SpecModel):
        return object_schema(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        items = type_schema(item)
        if isinstance(item, type) and issubclass(item, SpecModel) and item.ITEM_DESCRIPTION:
            items = {"type": "object", "description": item.ITEM_DESCRIPTION, **items}
        schema = {"type": "array"}
        if "max_length" in c:
            schema["maxItems"] = c["max_length"]
        return {**schema, "items": items}
    if origin is dict:
        _, value = typing.get_args(tp)
        if value is str:
            return {
                "type": "object",
                "maxProperties": STRING_MAP_MAX_PROPERTIES,
                "additionalProperties": {"type": "string", "maxLength": STRING_MAP_VALUE_MAX_LENGTH},
            }
        if value is Any:  # a Kubernetes type passed through as is (affinity, a toleration)
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object"}  # the field's json_schema_extra says the rest
    raise TypeError(f"no CRD schema for the annotation {tp!r}")


def _stored_default(field: FieldInfo) -> Any:
    """The default the API server stores, or PydanticUndefined for none (see the module docstring)."""
    if field.default_factory is not None:
        factory: Any = field.default_factory
        model = _strip_optional(field.annotation)
        if isinstance(model, type) and issubclass(model, BaseModel):
            if factory is model:
                return {}
            return factory().model_dump(by_alias=True, exclude_defaults=True, mode="json")
        return PydanticUndefined
    if field.default is None:
        return PydanticUndefined
    return field.default


def _merge(base: Schema, extra: Schema) -> Schema:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def field_schema(field: FieldInfo) -> Schema:
    schema = type_schema(field.annotation, _constraints(field.metadata))
    if field.description:
        schema = {**schema, "description": field.description}
    default = _stored_default(field)
    if default is not PydanticUndefined:
        schema["default"] = default
    if isinstance(field.json_schema_extra, dict):
        schema = _merge(schema, dict(field.json_schema_extra))
    return schema


def object_schema(cls: type[SpecModel]) -> Schema:
    properties = {(f.alias or name): field_schema(f) for name, f in cls.model_fields.items()}
    required = [(f.alias or name) for name, f in cls.model_fields.items() if f.is_required()]
    schema: Schema = {"type": "object"}
    if required:
        schema["required"] = required
    schema["properties"] = properties
    if cls.CEL_RULES:
        schema["x-kubernetes-validations"] = [dict(rule) for rule in cls.CEL_RULES]
    return schema


def spec_schema() -> Schema:
    return {"description": TenantSpec.__doc__, **object_schema(TenantSpec)}


def _string(description: str, max_length: int, **extra: Any) -> Schema:
    # Every string is bounded: the API server estimates CEL cost from maxLength.
    return {"type": "string", "description": description, "maxLength": max_length, **extra}


def status_schema() -> Schema:
    """Written by the operator only (storyteller_operator.status computes it)."""
    condition = {
        "type": "object",
        "description": "A standard Kubernetes condition.",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": _string("Ready, Progressing, Degraded or ScalingLimited.", 316),
            "status": _string("True, False or Unknown.", 16, enum=["True", "False", "Unknown"]),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The generation this condition was computed from.",
                "minimum": 0,
            },
            "lastTransitionTime": _string("When the status last changed.", 64, format="date-time"),
            "reason": _string("Machine-readable CamelCase reason.", 1024),
            "message": _string("Human-readable explanation.", 32768),
        },
    }
    count = {"type": "integer", "format": "int32", "minimum": 0}
    revision = {"type": "integer", "format": "int64", "minimum": 1}
    ratio = {"type": "number", "minimum": 0}
    figures = {
        "type": "object",
        "properties": {
            "sessions": {**count, "description": "Sessions started."},
            "handoffRate": {**ratio, "description": "Sessions that reached the StoryAgent, per session."},
            "providerErrorRate": {**ratio, "description": "Failed LLM/STT/TTS requests per session."},
            "errorEndRate": {**ratio, "description": "Sessions ended by an error, per session."},
            "firstAudioP95Seconds": {**ratio, "description": "p95 time to first audio."},
            "ttftP95Seconds": {**ratio, "description": "p95 LLM time to first token."},
            "windowSeconds": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "The window they were read over (in status.revisions).",
            },
        },
    }
    canary = {
        "type": "object",
        "description": "The canary revision running beside the stable one, and its analysis so far.",
        "properties": {
            "revision": {**revision, "description": "The canary's revision."},
            "stableRevision": {**revision, "description": "The revision it is compared with."},
            "started": _string("When it started: the analysis window's start.", 64, format="date-time"),
            "weight": {**count, "description": "The share of new sessions it is sized for, in %."},
            "replicas": {**count, "description": "Its pods."},
            "readyReplicas": {**count, "description": "Its ready pods."},
            "message": _string("The analysis so far.", 4096),
            "canaryFigures": {**figures, "description": "The canary's figures since it started."},
            "stableFigures": {
                **figures,
                "description": "The stable revision's figures over the same window.",
            },
        },
    }
    revision_entry = {
        "type": "object",
        "description": "One revision: what the pods of that number ran.",
        "required": ["revision", "configHash", "image", "created"],
        "properties": {
            "revision": {**revision, "description": "Its number, counting up per tenant."},
            "configHash": _string("Hash of the worker config it ran.", 128),
            "image": _string("Worker image it ran.", 512),
            "secretsHash": _string("Hash of the referenced Secrets' versions it read.", 128),
            "change": _string("What it changed against the revision served before it, in one line.", 512),
            "created": _string("When the operator first rendered it.", 64, format="date-time"),
            "state": _string(
                "Failed: its canary was rolled back; it is not tried again until the spec changes.", 16
            ),
            "failure": _string(
                "Why its canary was rolled back: the figure that fell behind and by how much.", 4096
            ),
            "figures": {
                **figures,
                "description": "Its figures as last read: over its canary's window, else since it began "
                "serving (at most 7 days): the sessions it served, and how they went.",
            },
            "digests": {
                "type": "object",
                "description": "Short digests of the parts of what it ran (config parts, image, each "
                "Secret), for the next revision's change line.",
                "maxProperties": 256,
                "additionalProperties": _string("A digest.", 64),
            },
        },
    }
    return {
        "type": "object",
        "description": "What the operator observed; written by the operator only.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The metadata.generation the operator last reconciled.",
            },
            "phase": _string(
                "Summary: Pending, Progressing, Ready, Degraded or Suspended.",
                16,
                enum=["Pending", "Progressing", "Ready", "Degraded", "Suspended"],
            ),
            "conditions": {
                "type": "array",
                "description": "Ready, Progressing and Degraded conditions, with reason and message.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": condition,
            },
            "replicas": {**count, "description": "Worker pods that exist (the scale subresource's count)."},
            "readyReplicas": {**count, "description": "Worker pods that are ready."},
            "desiredReplicas": {**count, "description": "Worker pods the operator asks for."},
            "activeSessions": {**count, "description": "Sessions running across the pool, when known."},
            "capacity": {
                **count,
                "description": "Sessions the ready pods can take (readyReplicas × sessionsPerWorker).",
            },
            "lastScaleTime": {
                "type": "string",
                "format": "date-time",
                "description": "When the autoscaler last changed desiredReplicas.",
            },
            "configHash": _string("Hash of the rendered worker config; changes roll the pool.", 128),
            "selector": _string("Label selector of the worker pods (for the scale subresource).", 1024),
            "revision": {**revision, "description": "The revision the pods run (or are rolling to)."},
            "canary": canary,
            "revisions": {
                "type": "array",
                "description": "The last spec.revisionHistoryLimit revisions, newest first.",
                "maxItems": MAX_REVISION_HISTORY,
                "items": revision_entry,
            },
        },
    }


def _printer_columns() -> list[Schema]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Whether the pool is ready.",
        },
        {
            "name": "Phase",
            "type": "string",
            "jsonPath": ".status.phase",
            "description": "Summary of the tenant's state.",
        },
        {
            "name": "Replicas",
            "type": "integer",
            "jsonPath": ".status.readyReplicas",
            "description": "Ready worker pods.",
        },
        {
            "name": "Desired",
            "type": "integer",
            "jsonPath": ".status.desiredReplicas",
            "description": "Worker pods asked for.",
            "priority": 1,
        },
        {
            "name": "Active Sessions",
            "type": "integer",
            "jsonPath": ".status.activeSessions",
            "description": "Sessions running across the pool.",
        },
        {
            "name": "Revision",
            "type": "integer",
            "jsonPath": ".status.revision",
            "description": "The revision the pods run (status.revisions).",
            "priority": 1,
        },
        {
            "name": "Canary",
            "type": "integer",
            "jsonPath": ".status.canary.revision",
            "description": "The revision running as a canary, when one is.",
            "priority": 1,
        },
        {
            "name": "Agent",
            "type": "string",
            "jsonPath": ".spec.agentName",
            "description": "Agent name (metadata.name when empty).",
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> Schema:
    root: Schema = {
        "type": "object",
        "description": "A tenant's prewarmed pool of LiveKit voice-agent workers running the "
        "storyteller flow.",
        "required": ["spec"],
        "properties": {
            "apiVersion": _string(f"Version of this object's schema ({contract.API_VERSION}).", 64),
            "kind": _string(f"Kind of this object ({contract.KIND}).", 64),
            # The API server allows nothing but the type here (not even a description).
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.matches('{TENANT_NAME}') "
                f"&& size(self.metadata.name) <= {TENANT_NAME_MAX}",
                "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting "
                f"with a letter) of at most {TENANT_NAME_MAX} characters",
                "reason": "FieldValueInvalid",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": contract.CRD_NAME, "labels": {contract.LABEL_PART_OF: contract.PART_OF}},
        "spec": {
            "group": contract.GROUP,
            "names": {
                "kind": contract.KIND,
                "listKind": contract.LIST_KIND,
                "plural": contract.PLURAL,
                "singular": contract.SINGULAR,
                "shortNames": list(contract.SHORT_NAMES),
                "categories": [contract.CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": contract.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }

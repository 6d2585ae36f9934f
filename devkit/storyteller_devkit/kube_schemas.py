"""JSON schemas for kubeconform, generated offline from the API server's OpenAPI document and CRDs.

kubeconform finds one schema per resource through a file-name template. This writes the flavour
yannh/kubernetes-json-schema publishes as ``-standalone-strict``, named the way kubeconform's
``{{ .ResourceKind }}{{ .KindSuffix }}.json`` asks for it: the kind lowercased, the first label of the group
(none for the core group), the version (``deployment-apps-v1.json``, ``configmap-v1.json``,
``servicemonitor-monitoring-v1.json``, ``storytellerdeployment-storyteller-v1alpha1.json``).

Each file stands alone: every ``$ref`` is inlined (a recursive type, only ``JSONSchemaProps`` in practice,
keeps a local ``#/definitions/...`` reference instead). On top of the OpenAPI schema, as the API server
judges a manifest:

* ``additionalProperties: false`` on every object that declares properties, the root included, unless
  ``x-kubernetes-preserve-unknown-fields`` keeps unknown fields (strict: a typo is an error);
* int-or-string (``format: int-or-string``, ``x-kubernetes-int-or-string``) is an integer or a string, and a
  resource Quantity a string or a number (``cpu: 1`` is valid YAML and a valid quantity);
* an optional field may be null (the API server treats null as unset; a CRD field with ``nullable: true``
  keeps it), a required one may not;
* ``kind`` and ``apiVersion`` are enums of the one kind and group/version the file is for;
* a CRD's ``metadata`` (``type: object`` in every CRD) is checked against the API server's ObjectMeta;
* a ``x-kubernetes-list-type: set`` list must not repeat an item (server-side apply, the operator's way of
  writing, refuses one that does).

Not checked (no JSON Schema equivalent): CEL rules (``x-kubernetes-validations``), list-map key uniqueness.

    python -m storyteller_devkit.kube_schemas [OUT_DIR] [--swagger PATH] [--crd FILE ...]

writes the schemas (only when an input or this generator changed) and prints the ``-schema-location`` to
give kubeconform. The defaults come from ``tests/cluster/lib.sh``: ``$KUBE_SCHEMAS``, the OpenAPI document
``make tools`` copies from k8s.io/kubernetes at ``$K8S_VERSION``, and the CRDs of this repository, KEDA and
the Prometheus Operator.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "tests" / "cluster"
# kubeconform's own template variables: the file it opens for a resource's kind and apiVersion.
LOCATION_TEMPLATE = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
STAMP = ".inputs.sha256"

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
DEFINITIONS_PREFIX = "#/definitions/"
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]

Schema = dict[str, Any]


def file_name(kind: str, group: str, version: str) -> str:
    """The file kubeconform opens for this kind: its ResourceKind and KindSuffix, lowercased."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}.json".lower()


def schema_location(out_dir: Path) -> str:
    """The value of kubeconform's ``-schema-location`` for schemas written to `out_dir`."""
    return f"{out_dir}/{LOCATION_TEMPLATE}"


# ------------------------------------------------------------------------------------ the transformations


def _subschemas(node: Schema) -> Iterator[Schema]:
    """The schemas directly inside `node` (never the keys of a properties map, which are field names)."""
    for key in ("properties", "patternProperties", "definitions"):
        value = node.get(key)
        if isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, dict))
    for key in ("items", "additionalProperties", "additionalItems", "not"):
        value = node.get(key)
        if isinstance(value, dict):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, dict))
    for key in ("allOf", "anyOf", "oneOf"):
        value = node.get(key)
        if isinstance(value, list):
            yield from (v for v in value if isinstance(v, dict))


def _allow_null(node: Schema) -> None:
    kind = node.get("type")
    if kind is None:  # no type: null passes already
        return
    types = [kind] if isinstance(kind, str) else list(kind)
    if "null" not in types:
        node["type"] = [*types, "null"]
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]


def _tighten(node: Schema) -> None:
    """Strict and API-server-shaped, in place (see the module docstring)."""
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string") is True:
        node.pop("format", None)
        node["type"] = ["integer", "string"]
        # A CRD spells it anyOf [integer, string] too; as a type list an optional one can also take null.
        if node.get("anyOf") in (INT_OR_STRING, INT_OR_STRING[::-1]):
            del node["anyOf"]
    if node.get("x-kubernetes-list-type") == "set":
        node["uniqueItems"] = True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    properties = node.get("properties")
    if isinstance(properties, dict):
        if node.get("x-kubernetes-embedded-resource") is True and not preserve:
            properties.setdefault("apiVersion", {"type": "string"})
            properties.setdefault("kind", {"type": "string"})
            properties.setdefault("metadata", {"type": "object"})
        if not preserve:
            node.setdefault("additionalProperties", False)
    for sub in _subschemas(node):
        _tighten(sub)
    if isinstance(properties, dict):
        required = set(node.get("required") or ())
        for name, sub in properties.items():
            if isinstance(sub, dict) and name not in required:
                _allow_null(sub)
    if node.get("nullable") is True:
        _allow_null(node)


def _inline(node: Any, defs: Mapping[str, Any], stack: tuple[str, ...], recursive: set[str]) -> Any:
    """`node` with every ``#/definitions/`` reference replaced by a copy of its target."""
    if isinstance(node, list):
        return [_inline(item, defs, stack, recursive) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not isinstance(ref, str):  # a field named "$ref" (JSONSchemaProps has one) is a dict, not a reference
        return {key: _inline(value, defs, stack, recursive) for key, value in node.items()}
    if not ref.startswith(DEFINITIONS_PREFIX):
        raise ValueError(f"unsupported $ref {ref!r}: only {DEFINITIONS_PREFIX}...")
    name = ref.removeprefix(DEFINITIONS_PREFIX)
    siblings = {key: _inline(value, defs, stack, recursive) for key, value in node.items() if key != "$ref"}
    if name in stack:  # a recursive type cannot be inlined: a local reference to it instead
        recursive.add(name)
        return {"$ref": ref}
    target = _inline(defs[name], defs, (*stack, name), recursive)
    return {**target, **siblings}  # the referring field's own description wins


def _standalone(root: Schema, defs: Mapping[str, Any]) -> Schema:
    """`root` with its references inlined, and the recursive ones it needs under ``definitions``."""
    recursive: set[str] = set()
    schema: Schema = _inline(root, defs, (), recursive)
    local: dict[str, Any] = {}
    while pending := sorted(recursive - local.keys()):
        for name in pending:
            local[name] = _inline(defs[name], defs, (name,), recursive)
    if local:
        schema["definitions"] = local
    return schema


def _pin_kind(schema: Schema, group: str, version: str, kind: str) -> None:
    properties = schema.setdefault("properties", {})
    api_version = f"{group}/{version}" if group else version
    for field, value in (("apiVersion", api_version), ("kind", kind)):
        properties[field] = {**properties.get(field, {}), "type": "string", "enum": [value]}


def _prepared_definitions(swagger: Mapping[str, Any]) -> dict[str, Any]:
    definitions: dict[str, Any] = copy.deepcopy(dict(swagger["definitions"]))
    quantity = definitions.get(QUANTITY)
    if isinstance(quantity, dict):
        quantity["type"] = ["string", "number"]
    return definitions


def builtin_schemas(swagger: Mapping[str, Any]) -> dict[str, Schema]:
    """File name -> schema for every kind the OpenAPI v2 document (``definitions``) names a GVK for."""
    definitions = _prepared_definitions(swagger)
    out: dict[str, Schema] = {}
    for definition in definitions.values():
        gvks = definition.get("x-kubernetes-group-version-kind", ())
        if len(gvks) > 1:  # DeleteOptions and WatchEvent, one GVK per group: request bodies, not manifests
            continue
        for gvk in gvks:
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            schema = _standalone(definition, definitions)
            schema.pop("x-kubernetes-group-version-kind", None)
            _tighten(schema)
            _pin_kind(schema, group, version, kind)
            _add(out, file_name(kind, group, version), schema)
    return out


def object_meta(swagger: Mapping[str, Any]) -> Schema:
    """The API server's ObjectMeta, inlined (what every object's ``metadata`` is)."""
    definitions = _prepared_definitions(swagger)
    return _standalone(definitions[OBJECT_META], definitions)


def crd_schemas(crds: Iterable[Mapping[str, Any]], metadata: Schema | None = None) -> dict[str, Schema]:
    """File name -> schema for every version of these CRDs; `metadata` (ObjectMeta) replaces theirs."""
    out: dict[str, Schema] = {}
    for crd in crds:
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for version in spec.get("versions") or ():
            root = (version.get("schema") or {}).get("openAPIV3Schema")
            if root is None:
                continue
            schema: Schema = copy.deepcopy(root)
            properties = schema.setdefault("properties", {})
            if metadata is not None:
                description = (properties.get("metadata") or {}).get("description")
                properties["metadata"] = copy.deepcopy(metadata)
                if description:
                    properties["metadata"]["description"] = description
            _tighten(schema)
            _pin_kind(schema, group, version["name"], kind)
            _add(out, file_name(kind, group, version["name"]), schema)
    return out


def _add(out: dict[str, Schema], name: str, schema: Schema) -> None:
    # Two kinds whose groups share a first label would share a file: kubeconform could not tell them apart.
    if name in out and out[name] != schema:
        raise ValueError(f"two different schemas for {name}")
    out[name] = schema


def load_crds(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in these YAML files (a List's items too)."""
    found: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            for item in doc.get("items") or [doc]:
                if isinstance(item, dict) and item.get("kind") == "CustomResourceDefinition":
                    found.append(item)
    return found


def generate(swagger: Mapping[str, Any], crds: Iterable[Mapping[str, Any]]) -> dict[str, Schema]:
    """File name -> schema: the built-in kinds of `swagger` and the versions of `crds`."""
    out = builtin_schemas(swagger)
    for name, schema in crd_schemas(crds, object_meta(swagger)).items():
        if name in out:
            raise ValueError(f"a CRD's {name} would replace a built-in kind's")
        out[name] = schema
    return out


# ------------------------------------------------------------------------------------------------ writing


def _inputs_digest(swagger: Path, crds: Sequence[Path]) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in (swagger, *sorted(crds)):
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_schemas(out_dir: Path, swagger: Path, crds: Sequence[Path]) -> bool:
    """Write the schemas to `out_dir` unless its inputs are unchanged since the last write; True if written.

    Each file is replaced atomically and the stamp is written last, so a concurrent kubeconform (or a second
    writer, which writes the same bytes) never reads a half-written schema.
    """
    for path in (swagger, *crds):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `make tools`")
    stamp = out_dir / STAMP
    digest = _inputs_digest(swagger, crds)
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return False
    schemas = generate(json.loads(swagger.read_text()), load_crds(crds))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        _write_atomic(out_dir / name, json.dumps(schema, indent=1, sort_keys=True) + "\n")
    for stale in out_dir.glob("*.json"):
        if stale.name not in schemas:
            stale.unlink(missing_ok=True)
    _write_atomic(stamp, digest + "\n")
    return True


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ defaults


@functools.cache
def lib_settings() -> dict[str, str]:
    """K8S_VERSION and the schema inputs' paths, from tests/cluster/lib.sh (one definition, shell's)."""
    names = ("K8S_VERSION", "KUBE_SCHEMAS", "K8S_OPENAPI", "KEDA_CRDS", "PROMETHEUS_CRDS")
    script = 'source "$1/lib.sh" && printf "%s\\n" ' + " ".join(f'"${n}"' for n in names)
    out = subprocess.run(
        ["bash", "-c", script, "lib", str(CLUSTER_DIR)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return dict(zip(names, out, strict=True))


def default_crds() -> list[Path]:
    """Our CRD, KEDA's ScaledObject and the Prometheus Operator's (copied by `make tools`)."""
    settings = lib_settings()
    paths = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    for key in ("KEDA_CRDS", "PROMETHEUS_CRDS"):
        found = sorted(Path(settings[key]).glob("*.yaml"))
        if not found:
            raise FileNotFoundError(f"no CRDs in {settings[key]}: run `make tools`")
        paths += found
    return paths


def ensure_default_schemas() -> str:
    """The default schemas, written if out of date; returns the ``-schema-location`` for kubeconform."""
    settings = lib_settings()
    out_dir = Path(settings["KUBE_SCHEMAS"])
    write_schemas(out_dir, Path(settings["K8S_OPENAPI"]), default_crds())
    return schema_location(out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m storyteller_devkit.kube_schemas",
        description="Write kubeconform's JSON schemas; print the -schema-location to pass it.",
    )
    parser.add_argument("out_dir", nargs="?", type=Path, help="default: lib.sh's $KUBE_SCHEMAS")
    parser.add_argument("--swagger", type=Path, help="the API server's OpenAPI v2 document (swagger.json)")
    parser.add_argument("--crd", type=Path, action="extend", nargs="+", default=[], help="CRD YAML files")
    args = parser.parse_args(argv)
    out_dir: Path = args.out_dir or Path(lib_settings()["KUBE_SCHEMAS"])
    swagger: Path = args.swagger or Path(lib_settings()["K8S_OPENAPI"])
    crds: list[Path] = args.crd or default_crds()
    try:
        written = write_schemas(out_dir, swagger, crds)
    except (FileNotFoundError, ValueError) as e:
        print(f"kube_schemas: {e}", file=sys.stderr)
        return 1
    if written:
        count = len(list(out_dir.glob("*.json")))
        print(f"kube_schemas: wrote {count} schemas to {out_dir}", file=sys.stderr)
    print(schema_location(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

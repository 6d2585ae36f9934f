"""The spec's bounds and refusals, without a cluster: every field bounded in the CRD, every refusal names
its field and never its value, and the models refuse what the CRD's CEL rules refuse.

The CEL rules themselves run on the API server only: tests/cluster/test_operator_lifecycle.py's INVALID
table applies each case there. What can be checked here is that the rules search with the very
expressions the models use (`URL_USERINFO`, `URL_CREDENTIAL_PARAM`, `CIDR`), written so RE2 and Python's
`re` read them alike.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from storyteller_api import contract, validation
from storyteller_api.spec import (
    CIDR,
    URL_CREDENTIAL_PARAM,
    URL_USERINFO,
    TenantSpec,
    WorkerConfig,
    WorkerPool,
)
from tests.unit.test_operator_render import spec_schema

REPO = Path(__file__).resolve().parents[2]
LIVEKIT = {"url": "wss://lk.example.com", "credentialsSecret": "lk"}
# The credential in every URL case: no error may repeat it.
LEAK = "hunter2"


def llm(**block: Any) -> dict[str, Any]:
    return {"intro": {"llm": {"provider": "openai", "model": "m", **block}}}


# (case, spec, field): the models refuse `spec` naming `field` (the dotted path under spec). The same
# cases, and the CEL-only ones (reserved labels and annotations), are in the cluster's INVALID table.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    # bounds
    ("drain-zero", {"pool": {"drainTimeoutSeconds": 0}}, "pool.drainTimeoutSeconds"),
    ("drain-30-years", {"pool": {"drainTimeoutSeconds": 946_080_000}}, "pool.drainTimeoutSeconds"),
    ("sessions-per-worker-huge", {"pool": {"sessionsPerWorker": 101}}, "pool.sessionsPerWorker"),
    ("idle-processes-huge", {"pool": {"idleProcesses": 17}}, "pool.idleProcesses"),
    ("negative-idle-processes", {"pool": {"idleProcesses": -1}}, "pool.idleProcesses"),
    ("min-replicas-huge", {"pool": {"minReplicas": 1001, "maxReplicas": 1000}}, "pool.minReplicas"),
    ("max-replicas-huge", {"pool": {"maxReplicas": 1001}}, "pool.maxReplicas"),
    ("spare-sessions-huge", {"pool": {"spareSessions": 1001}}, "pool.spareSessions"),
    ("scale-down-delay-years", {"pool": {"scaleDownDelaySeconds": 86401}}, "pool.scaleDownDelaySeconds"),
    ("replicas-huge", {"replicas": 1001}, "replicas"),
    ("negative-replicas", {"replicas": -1}, "replicas"),
    ("metrics-port-huge", {"observability": {"metricsPort": 65536}}, "observability.metricsPort"),
    # shapes
    ("model-with-space", {"intro": {"stt": {"provider": "deepgram", "model": "nova 3"}}}, "intro.stt.model"),
    (
        "language-not-a-tag",
        {"intro": {"stt": {"provider": "deepgram", "model": "nova-3", "language": "english (us)"}}},
        "intro.stt.language",
    ),
    ("image-with-space", {"worker": {"image": "reg.example/w:1 --privileged"}}, "worker.image"),
    ("url-without-host", {"livekit": {**LIVEKIT, "url": "wss://"}}, "livekit.url"),
    # credentials in URLs
    (
        "livekit-url-userinfo",
        {"livekit": {**LIVEKIT, "url": f"wss://key:{LEAK}@lk.example.com"}},
        "livekit.url",
    ),
    ("livekit-url-token-userinfo", {"livekit": {**LIVEKIT, "url": f"wss://{LEAK}@lk"}}, "livekit.url"),
    (
        "livekit-url-access-token",
        {"livekit": {**LIVEKIT, "url": f"wss://lk.example.com/rtc?access_token={LEAK}"}},
        "livekit.url",
    ),
    ("base-url-api-key", llm(baseURL=f"https://models.example.com/v1?api-key={LEAK}"), "intro.llm.baseURL"),
    ("base-url-userinfo", llm(baseURL=f"http://user:{LEAK}@models:8000/v1"), "intro.llm.baseURL"),
    (
        "fallback-base-url-key",
        llm(fallbacks=[{"provider": "openai", "model": "m2", "baseURL": f"https://m/v1?x=1&Key={LEAK}"}]),
        "intro.llm.fallbacks[0].baseURL",
    ),
    (
        "stt-base-url-x-api-key",
        {
            "story": {
                "stt": {"provider": "deepgram", "model": "nova-3", "baseURL": f"https://d?X-API-KEY={LEAK}"}
            }
        },
        "story.stt.baseURL",
    ),
    (
        "otlp-userinfo",
        {"observability": {"tracing": {"otlpEndpoint": f"https://tenant:{LEAK}@otel.example.com"}}},
        "observability.tracing.otlpEndpoint",
    ),
    (
        "otlp-signature",
        {"observability": {"tracing": {"otlpEndpoint": f"https://otel/v1/traces?sig={LEAK}"}}},
        "observability.tracing.otlpEndpoint",
    ),
    # LiveKit media
    (
        "media-range-reversed",
        {"worker": {"livekitMedia": {"udpPortRangeStart": 60000, "udpPortRangeEnd": 50000}}},
        "worker.livekitMedia.udpPortRangeStart",
    ),
    (
        "media-range-start-zero",
        {"worker": {"livekitMedia": {"udpPortRangeStart": 0}}},
        "worker.livekitMedia.udpPortRangeStart",
    ),
    (
        "media-range-end-huge",
        {"worker": {"livekitMedia": {"udpPortRangeEnd": 65536}}},
        "worker.livekitMedia.udpPortRangeEnd",
    ),
    (
        "media-udp-port-zero",
        {"worker": {"livekitMedia": {"udpPorts": [0]}}},
        "worker.livekitMedia.udpPorts[0]",
    ),
    (
        "media-tcp-port-huge",
        {"worker": {"livekitMedia": {"tcpPorts": [443, 70000]}}},
        "worker.livekitMedia.tcpPorts[1]",
    ),
    (
        "media-too-many-ports",
        {"worker": {"livekitMedia": {"tcpPorts": list(range(1000, 1009))}}},
        "worker.livekitMedia.tcpPorts",
    ),
    (
        "media-cidr-prefix",
        {"worker": {"livekitMedia": {"cidrs": ["10.0.0.0/33"]}}},
        "worker.livekitMedia.cidrs[0]",
    ),
    (
        "overlapping-bridge-without-tts",
        {
            "intro": {
                "llm": {"provider": "openai-realtime", "model": "gpt-realtime"},
                "handoff": {"mode": "overlapping"},
            }
        },
        "intro.handoff.mode",
    ),
    ("bridge-mode-unknown", {"intro": {"handoff": {"mode": "parallel"}}}, "intro.handoff.mode"),
    ("turn-detection-unknown", {"turnDetection": "silence"}, "turnDetection"),
    ("bridge-empty", {"intro": {"handoff": {"bridge": ""}}}, "intro.handoff.bridge"),
    (
        "media-cidr-host",
        {"worker": {"livekitMedia": {"cidrs": ["10.0.0.0/8", "livekit.example.com"]}}},
        "worker.livekitMedia.cidrs[1]",
    ),
]


@pytest.mark.parametrize(("case", "spec", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_the_models_refuse_naming_the_field_never_the_value(
    case: str, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(validation.SpecError) as err:
        validation.parse(TenantSpec, {"livekit": LIVEKIT, **spec})
    message = str(err.value)
    assert message.startswith(f"{field}:"), message
    assert LEAK not in message and "\n" not in message


# The cases on fields the worker's config holds (the agent-facing spec, the worker's part of the pool).
WORKER_INVALID = [
    c
    for c in INVALID
    if c[2].split(".")[0] in WorkerConfig.model_fields
    and (
        not c[2].startswith("pool.")
        or c[2].split(".")[1] in {f.alias for f in WorkerPool.model_fields.values()}
    )
]


@pytest.mark.parametrize(("case", "spec", "field"), WORKER_INVALID, ids=[c[0] for c in WORKER_INVALID])
def test_the_worker_refuses_the_same_in_its_config(case: str, spec: dict[str, Any], field: str) -> None:
    """The worker parses tenant.json with the same models: a hand-written config is held to the rules."""
    with pytest.raises(validation.SpecError) as err:
        validation.parse(WorkerConfig, {"tenant": "acme", "livekit": LIVEKIT, **spec})
    assert str(err.value).startswith(f"{field}:"), str(err.value)
    assert LEAK not in str(err.value)


def test_the_defaults_and_the_example_tenant_are_valid() -> None:
    TenantSpec.model_validate({"livekit": LIVEKIT})
    (doc,) = yaml.safe_load_all((REPO / "examples" / "tenant.yaml").read_text())
    TenantSpec.model_validate(doc["spec"])


# ------------------------------------------------------------------------------------ credentials in URLs

CLEAN_URLS = [
    "wss://lk.example.com",
    "ws://livekit-server.livekit.svc.cluster.local:7880",
    "https://api.example.com/v1",
    "http://[::1]:8000/v1",
    "https://my-resource.openai.azure.com/openai/deployments/x?api-version=2024-10-01",
    "https://keycloak.example.com/token/v1",  # key and token in host and path: not a credential
    "https://user.example.com/v1?user=me&signal=1",  # '@'-free authority; sig only as a whole name
]
CREDENTIAL_URLS = [
    "wss://user:pass@lk.example.com",
    "wss://token@lk.example.com/path",
    "https://:pass@host",
    "https://host/v1?api_key=x",
    "https://host/v1?apikey=x",
    "https://host/v1?apiKey=x",
    "https://host/v1?a=1&x-api-key=x",
    "https://host/v1?access_token=x",
    "https://host/v1?AccessToken=x",
    "https://host/v1?client_secret=x",
    "https://host/v1?password=x",
    "https://host/v1?passwd=x",
    "https://host/v1?pwd=x",
    "https://host/v1?X-Amz-Signature=x&X-Amz-Credential=y",
    "https://host/v1?sv=2024&sig=x",
    "https://host/v1?auth=x",
    "https://host/v1?Authorization=Bearer",
    "https://host/v1?credentials=x",
    "https://host/v1#access_token=x",
    "https://host/v1;jsessionid=1;token=x",
    "https://host/v1?key",
    # Deliberately broad: any parameter name holding a credential word. A false refusal costs a rename, a
    # missed credential lands in a ConfigMap, an env literal and a log line.
    "https://host/v1?monkeys=3",
    "https://host/v1?author=me",
]


@pytest.mark.parametrize("url", CLEAN_URLS)
def test_a_clean_url_passes(url: str) -> None:
    assert not re.search(URL_USERINFO, url) and not re.search(URL_CREDENTIAL_PARAM, url)


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_a_url_with_a_credential_is_refused(url: str) -> None:
    assert re.search(URL_USERINFO, url) or re.search(URL_CREDENTIAL_PARAM, url)


def _schemas(schema: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _schemas(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _schemas(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _schemas(schema["additionalProperties"], f"{path}{{}}")


def test_every_url_field_carries_both_credential_rules() -> None:
    url_fields = {p: s for p, s in _schemas(spec_schema()) if re.search(r"(url|URL|Endpoint)$", p)}
    assert set(url_fields) == {
        "spec.livekit.url",
        "spec.observability.tracing.otlpEndpoint",
        *(
            f"spec.{phase}.{kind}{fb}.baseURL"
            for phase in ("intro", "story")
            for kind in ("llm", "stt", "tts")
            for fb in ("", ".fallbacks[]")
        ),
    }
    for path, schema in url_fields.items():
        rules = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
        assert rules == [f"!self.matches('{URL_USERINFO}')", f"!self.matches('{URL_CREDENTIAL_PARAM}')"], path


@pytest.mark.parametrize("regex", [URL_USERINFO, URL_CREDENTIAL_PARAM, CIDR])
def test_the_shared_expressions_read_alike_in_re2_and_python(regex: str) -> None:
    """No lookaround, backreference or possessive form (RE2 has none); no quote or backslash (the CEL
    string literal would end or unescape); a flag only at the start (Python wants it there)."""
    assert not re.search(r"\(\?[=!<]|\\[0-9]|[*+?]\+", regex)
    assert "'" not in regex and "\\" not in regex
    assert "(?" not in regex.removeprefix("(?i)")


# ---------------------------------------------------------------------------------------------- CIDRs

GOOD_CIDRS = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "203.0.113.7/32",
    "255.255.255.255/32",
    "::/0",
    "2001:db8::/32",
    "fe80::1/128",
    "2001:db8:0:0:0:0:0:1/64",
    "::1/128",
    "1::/16",
    "1:2:3:4:5:6:7::/112",
]
BAD_CIDRS = [
    "10.0.0.0",
    "10.0.0.0/33",
    "256.0.0.0/8",
    "10.0.0/8",
    "2001:db8::/129",
    "1:::2/64",
    "1:2:3:4:5:6:7:8:9/64",
    "::ffff:10.0.0.1/128",  # an embedded IPv4 address is not taken: write it in hexadecimal
    "host.example.com/24",
    "10.0.0.0/8 ",
    "",
]


@pytest.mark.parametrize("cidr", GOOD_CIDRS)
def test_a_cidr_is_accepted(cidr: str) -> None:
    assert re.search(CIDR, cidr)
    ipaddress.ip_network(cidr, strict=False)


@pytest.mark.parametrize("cidr", BAD_CIDRS)
def test_a_non_cidr_is_refused(cidr: str) -> None:
    assert not re.search(CIDR, cidr)


def test_every_compressed_ipv6_form_is_a_cidr() -> None:
    """Each run of zero groups compressed at each position, as Python writes it and in full."""
    for zeros_at in range(8):
        for run in range(1, 9 - zeros_at):
            groups = [str(i + 1) for i in range(8)]
            groups[zeros_at : zeros_at + run] = ["0"] * run
            address = ipaddress.IPv6Address(":".join(groups))
            for text in (str(address), address.exploded):
                assert re.search(CIDR, f"{text}/64"), text


# ----------------------------------------------------------------------------------------- the bounds


def _bounds_missing(path: str, schema: dict[str, Any]) -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        # Kubernetes' own types (affinity, a toleration) passed to the pod as they are: the API server
        # validates them there, and no CEL rule walks them (their size costs no rule anything).
        return
    if schema.get("x-kubernetes-int-or-string"):  # a quantity: the string form is the long one
        if "maxLength" not in schema:
            yield f"{path}: no maxLength"
        return
    kind = schema.get("type")
    if kind in ("integer", "number"):
        if "minimum" not in schema or "maximum" not in schema:
            yield f"{path}: no minimum and maximum"
        elif kind == "integer" and "description" in schema:
            words = f"{schema['minimum']} to {schema['maximum']}"
            if words not in schema["description"]:
                yield f"{path}: the description does not say {words!r}"
    elif kind == "string" and "maxLength" not in schema and "enum" not in schema:
        yield f"{path}: no maxLength"
    elif kind == "array":
        if "maxItems" not in schema:
            yield f"{path}: no maxItems"
        elif f"at most {schema['maxItems']}" not in schema.get("description", ""):
            yield f"{path}: the description does not say 'at most {schema['maxItems']}'"
    elif kind == "object" and "additionalProperties" in schema:
        if "maxProperties" not in schema:
            yield f"{path}: no maxProperties"
        elif f"at most {schema['maxProperties']}" not in schema.get("description", ""):
            yield f"{path}: the description does not say 'at most {schema['maxProperties']}'"
    elif kind == "object" and "properties" not in schema:
        yield f"{path}: an object with neither properties nor additionalProperties"


def test_every_field_of_the_crd_is_bounded_and_says_so() -> None:
    """Every integer and number has a minimum and a maximum (an integer's description says "MIN to MAX",
    as kubectl explain shows descriptions, not bounds), every string a maxLength (or an enum), every list
    maxItems and every map maxProperties (their descriptions say "at most N")."""
    missing = [m for path, schema in _schemas(spec_schema()) for m in _bounds_missing(path, schema)]
    assert not missing, "\n".join(missing)


def test_every_stored_default_is_within_its_bounds() -> None:
    for path, schema in _schemas(spec_schema()):
        default = schema.get("default")
        if isinstance(default, int) and not isinstance(default, bool):
            assert schema["minimum"] <= default <= schema["maximum"], path
        if isinstance(default, str):
            assert len(default) <= schema["maxLength"], path
            assert re.search(schema.get("pattern", ""), default), path
        if isinstance(default, list):
            assert len(default) <= schema["maxItems"], path
            for item in default:
                assert schema["items"]["minimum"] <= item <= schema["items"]["maximum"], path


# --------------------------------------------------------------------------------- reserved annotations


def test_the_reserved_annotations_rule_names_every_reserved_key_and_the_field() -> None:
    (rule,) = spec_schema()["properties"]["worker"]["properties"]["podAnnotations"][
        "x-kubernetes-validations"
    ]
    for key in contract.RESERVED_ANNOTATION_KEYS:
        assert f"k == '{key}'" in rule["rule"] and key in rule["message"]
    for prefix in contract.RESERVED_ANNOTATION_PREFIXES:
        assert f"k.startsWith('{prefix}')" in rule["rule"] and prefix in rule["message"]
    assert rule["message"].startswith("spec.worker.podAnnotations ")
    # What the operator writes on its pods is among them.
    assert contract.CONFIG_HASH_ANNOTATION.startswith(contract.RESERVED_ANNOTATION_PREFIXES)
    assert contract.POD_DELETION_COST in contract.RESERVED_ANNOTATION_KEYS

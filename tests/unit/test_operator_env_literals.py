"""No spec string reaches the kubelet's `$(VAR)` expansion: an env value written in a tenant's spec must
reach the container as written, never as another variable (a Secret's key) it names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from storyteller_operator import render
from tests.unit.test_operator_render import tenant

SECRET = "«a secret's value»"
FIELD = "«a pod field»"
HOSTILE = "$(OPENAI_API_KEY)$(LIVEKIT_API_SECRET)$$(POD_NAME)$(UNSET)$"


def kubelet_expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' env expansion (k8s.io/kubernetes third_party/forked/golang/expansion): `$$` is `$`,
    `$(NAME)` is NAME's value when NAME is defined, else left as written; any other `$` stays."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            end = value.find(")", i + 2) if nxt == "(" else -1
            if end != -1:
                name = value[i + 2 : end]
                out.append(defined.get(name, value[i : end + 1]))
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def container_env(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Every container's environment as its process sees it, expanded as the kubelet does: a variable from
    a Secret (envFrom keys are unknown here, so any name not defined otherwise) is SECRET."""
    seen: dict[str, str] = {}
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        defined: dict[str, str] = {}
        for entry in container.get("env") or []:
            if "value" in entry:
                expanded = kubelet_expand(entry["value"], _Secrets(defined))
            else:
                expanded = FIELD if "fieldRef" in entry["valueFrom"] else SECRET
            defined[entry["name"]] = expanded
        seen.update(defined)
    return seen


class _Secrets(dict[str, str]):
    """The variables defined so far; any other name could come from a Secret's envFrom."""

    def __init__(self, defined: Mapping[str, str]) -> None:
        super().__init__(defined)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key, SECRET)


def test_the_expansion_emulator_expands_what_the_kubelet_would() -> None:
    # The check below is only as good as this: an unescaped reference must come out as the secret.
    assert kubelet_expand("x/$(KEY)", _Secrets({})) == f"x/{SECRET}"
    assert kubelet_expand("x/$$(KEY)$", _Secrets({})) == "x/$(KEY)$"
    assert kubelet_expand("a=$(POD_NAME)", _Secrets({"POD_NAME": FIELD})) == f"a={FIELD}"


@pytest.mark.parametrize(
    "endpoint",
    [
        f"http://sink.example:4318/{HOSTILE}",
        f"https://sink.example/v1/traces?x={HOSTILE}",
        "http://sink.example:4318/$$(OPENAI_API_KEY)",
    ],
)
def test_every_env_value_from_the_spec_reaches_the_container_as_written(endpoint: str) -> None:
    spec = {
        "providerSecrets": ["openai", "deepgram"],
        "observability": {"tracing": {"otlpEndpoint": endpoint}},
    }
    for canary in (False, True):
        env = container_env(render.deployment(tenant(spec), replicas=1, revision=3, canary=canary))
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
        leaked = {
            name: value
            for name, value in env.items()
            if SECRET in value and name not in {"LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"}
        }
        assert leaked == {}, f"env values that expand to a Secret's value: {sorted(leaked)}"
        # Our own reference still expands: the pod's name in the trace's resource.
        assert env["OTEL_RESOURCE_ATTRIBUTES"].endswith(f"k8s.pod.name={FIELD}")

"""Write crds/storyteller.dev_storytellerdeployments.yaml, the StorytellerDeployment CRD.

The CRD is the single source of truth for the API; this script only exists because the model block
(llm/stt/tts, each with fallbacks) repeats six times and hand-editing six copies drifts. Edit here, run
`python crds/generate.py`, commit both; tests/unit/test_chart.py checks the YAML matches this script and
that the chart's copy is byte-identical.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

import storyteller_worker.config as worker_config

OUT = Path(__file__).with_name("storyteller.dev_storytellerdeployments.yaml")

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The worker's defaults are the contract's: the CRD shows and applies the same ones.
DEFAULT_PERSONA, DEFAULT_INTRO_INSTRUCTIONS, DEFAULT_STORY_INSTRUCTIONS = (
    worker_config.DEFAULT_PERSONA,
    worker_config.DEFAULT_INTRO_INSTRUCTIONS,
    worker_config.DEFAULT_STORY_INSTRUCTIONS,
)
PROVIDERS = {
    "llm": ["openai", "openai-realtime"],
    "stt": ["deepgram", "openai"],
    "tts": ["openai", "deepgram"],
}
KIND_WORDS = {"llm": "language model", "stt": "speech-to-text model", "tts": "text-to-speech model"}
Schema = dict[str, Any]
# Kubernetes' resource.Quantity syntax (what `kubectl` accepts for cpu/memory).
_NUM = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = rf"^(\+|-)?{_NUM}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUM}))?$"


def string(description: str, max_length: int = 256, **extra: Any) -> Schema:
    # Every string is bounded: the API server estimates CEL cost from maxLength.
    return {"type": "string", "description": description, "maxLength": max_length, **extra}


def integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", "description": description, **extra}


def string_map(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 1024},
    }


def model(kind: str, where: str, fallback: bool = False, default: Schema | None = None) -> Schema:
    """A model block: which provider and model, with optional fallbacks of the same shape."""
    word = KIND_WORDS[kind]
    providers = PROVIDERS[kind]
    props: Schema = {
        "provider": string(f"Who serves the {word}: one of {', '.join(providers)}.", 32, enum=providers),
        "model": string(f"The provider's model name, for example {default_model(kind)}.", minLength=1),
        "voice": string("Voice name, for text-to-speech and realtime models (for example echo).", 128),
        "language": string("Language code, for speech-to-text and text-to-speech (for example en).", 32),
        "baseURL": string(
            "Base URL of an OpenAI-compatible (or Deepgram-compatible) endpoint, for self-hosted models; "
            "the provider's public endpoint when absent.",
            2048,
            pattern="^https?://",
        ),
        "temperature": {
            "type": "number",
            "description": "Sampling temperature, 0 to 2; the provider's default when absent.",
            "minimum": 0,
            "maximum": 2,
        },
    }
    schema: Schema = {
        "type": "object",
        "description": (
            f"A fallback {word}, tried in order when the primary fails."
            if fallback
            else f"The {word} {where}."
        ),
        "required": ["provider", "model"],
        "properties": props,
    }
    rules: list[Schema] = []
    if not fallback:
        props["fallbacks"] = {
            "type": "array",
            "description": f"Other {word}s tried in order when this one fails (at most 5).",
            "maxItems": 5,
            "items": model(kind, where, fallback=True),
        }
        if kind == "llm":
            rules.append(
                {
                    "rule": "self.provider != 'openai-realtime' || !has(self.fallbacks) "
                    "|| size(self.fallbacks) == 0",
                    "message": "a realtime llm (openai-realtime) takes no fallbacks",
                    "fieldPath": ".fallbacks",
                    "reason": "FieldValueForbidden",
                }
            )
    elif kind == "llm":
        rules.append(
            {
                "rule": "self.provider != 'openai-realtime'",
                "message": "an openai-realtime model cannot be an llm fallback",
                "fieldPath": ".provider",
                "reason": "FieldValueForbidden",
            }
        )
    if rules:
        schema["x-kubernetes-validations"] = rules
    if default is not None:
        schema["default"] = default
    return schema


def default_model(kind: str) -> str:
    return {"llm": "gpt-4o-mini", "stt": "nova-3", "tts": "gpt-4o-mini-tts"}[kind]


def realtime_rule(block: str) -> Schema:
    return {
        "rule": "!has(self.llm) || self.llm.provider != 'openai-realtime' || !has(self.tts)",
        "message": f"spec.{block}.tts must be absent when spec.{block}.llm is openai-realtime "
        "(a realtime model speaks by itself)",
        "fieldPath": ".tts",
        "reason": "FieldValueForbidden",
    }


def spec_schema() -> Schema:
    intro_llm = {"provider": "openai", "model": "gpt-4o-mini"}
    return {
        "type": "object",
        "description": "What the tenant wants: its LiveKit project, models, prompts and pool size.",
        "required": ["livekit"],
        "properties": {
            "agentName": string(
                "The agent name workers register under (explicit dispatch); defaults to metadata.name.",
                63,
                pattern=DNS_LABEL,
            ),
            "livekit": {
                "type": "object",
                "description": "The LiveKit server the workers register with.",
                "required": ["url", "credentialsSecret"],
                "properties": {
                    "url": string(
                        "WebSocket URL of the LiveKit server, ws:// or wss://.", 2048, pattern="^wss?://"
                    ),
                    "credentialsSecret": string(
                        "Name of a Secret in this namespace with the keys LIVEKIT_API_KEY and "
                        "LIVEKIT_API_SECRET.",
                        63,
                        pattern=DNS_LABEL,
                    ),
                },
            },
            "providerSecrets": {
                "type": "array",
                "description": "Names of Secrets in this namespace whose keys become the workers' "
                "environment "
                "(OPENAI_API_KEY, DEEPGRAM_API_KEY, ...). Values are never copied anywhere else.",
                "default": [],
                "maxItems": 16,
                "x-kubernetes-list-type": "set",
                "items": string("A Secret name (DNS label).", 63, pattern=DNS_LABEL),
            },
            "persona": string(
                "Who the agent is; prepended to both phases' instructions.", 8192, default=DEFAULT_PERSONA
            ),
            "intro": {
                "type": "object",
                "description": "The intro phase: greets the user and asks for name and location.",
                "default": {},
                "properties": {
                    "instructions": string(
                        "Instructions of the intro agent (appended to the persona).",
                        16384,
                        default=DEFAULT_INTRO_INSTRUCTIONS,
                    ),
                    "llm": model("llm", "of the intro agent", default=intro_llm),
                    "stt": model(
                        "stt",
                        "of the intro agent (also the story's when the story sets none)",
                        default={"provider": "deepgram", "model": "nova-3", "language": "en"},
                    ),
                    # No schema default: a realtime intro llm must be able to leave it out (CEL rule below).
                    # The worker fills openai gpt-4o-mini-tts with voice echo when absent otherwise.
                    "tts": model(
                        "tts",
                        "of the intro agent (also the story's when the story sets none); when absent, "
                        "openai gpt-4o-mini-tts with voice echo, unless the llm is openai-realtime "
                        "(it speaks itself)",
                    ),
                },
                "x-kubernetes-validations": [realtime_rule("intro")],
            },
            "story": {
                "type": "object",
                "description": "The story phase: tells an interactive story using what the intro gathered.",
                "default": {},
                "properties": {
                    "instructions": string(
                        "Instructions of the story agent (appended to the persona).",
                        16384,
                        default=DEFAULT_STORY_INSTRUCTIONS,
                    ),
                    "llm": model(
                        "llm", "of the story agent; openai-realtime speaks by itself", default=intro_llm
                    ),
                    "stt": model("stt", "of the story agent; the intro's when absent"),
                    "tts": model(
                        "tts", "of the story agent; the intro's when absent and the llm is not realtime"
                    ),
                    "carryChatContext": {
                        "type": "boolean",
                        "description": "Whether the story agent starts with the intro's chat history.",
                        "default": False,
                    },
                },
                "x-kubernetes-validations": [realtime_rule("story")],
            },
            "replicas": integer(
                "Worker pods asked for by hand or by KEDA, through the scale subresource (kubectl scale "
                "sd/NAME --replicas=N, or a KEDA ScaledObject). Used when pool.autoscaler is none or keda, "
                "held within pool.minReplicas..maxReplicas, and pool.minReplicas when absent; the builtin "
                "autoscaler ignores it.",
                minimum=0,
            ),
            "pool": pool_schema(),
            "worker": worker_schema(),
            "observability": observability_schema(),
            "suspend": {
                "type": "boolean",
                "description": "Scale the pool to zero and keep it there; everything else stays in place.",
                "default": False,
            },
        },
    }


def pool_schema() -> Schema:
    return {
        "type": "object",
        "description": "The prewarmed worker pool and how it scales.",
        "default": {},
        "properties": {
            "minReplicas": integer(
                "Workers kept running even at zero load (the pool's floor). 0 allows an empty pool.",
                minimum=0,
                default=1,
            ),
            "maxReplicas": integer("Most workers the pool may grow to.", minimum=1, default=10),
            "sessionsPerWorker": integer(
                "Sessions one worker pod accepts; it refuses jobs beyond this.", minimum=1, default=4
            ),
            "idleProcesses": integer(
                "Prewarmed job processes per pod (models already loaded).", minimum=0, default=2
            ),
            "spareSessions": integer("Free session slots kept warm across the pool.", minimum=0, default=2),
            "scaleDownDelaySeconds": integer(
                "How long load must stay low before the pool shrinks.", minimum=0, default=300
            ),
            "drainTimeoutSeconds": integer(
                "How long a pod being removed may keep finishing its sessions; the pod's grace period is "
                "this plus 30 seconds.",
                minimum=0,
                default=900,
            ),
            "autoscaler": string(
                "Who sizes the pool between minReplicas and maxReplicas: builtin (the operator, on the "
                "sessions its workers report), keda (a KEDA ScaledObject on the same formula writes "
                "spec.replicas) or none (spec.replicas, set by kubectl scale).",
                16,
                enum=["builtin", "keda", "none"],
                default="builtin",
            ),
        },
        "x-kubernetes-validations": [
            {
                # has(): the API server also checks the rule against the bare `default: {}`.
                "rule": "!has(self.minReplicas) || !has(self.maxReplicas) "
                "|| self.minReplicas <= self.maxReplicas",
                "message": "spec.pool.minReplicas must not exceed spec.pool.maxReplicas",
                "fieldPath": ".minReplicas",
                "reason": "FieldValueInvalid",
            }
        ],
    }


def worker_schema() -> Schema:
    quantity = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    quantities = {
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {
            **quantity,
            "pattern": QUANTITY,
        },
    }
    reserved = "k.startsWith('app.kubernetes.io/') || k.startsWith('storyteller.dev/')"
    return {
        "type": "object",
        "description": "The worker pods: image and scheduling.",
        "default": {},
        "properties": {
            "image": string(
                "Worker container image.",
                512,
                minLength=1,
                default="ghcr.io/storyteller-dev/storyteller-worker:0.1.0",
            ),
            "imagePullPolicy": string(
                "When to pull the image: Always, IfNotPresent or Never.",
                16,
                enum=["Always", "IfNotPresent", "Never"],
                default="IfNotPresent",
            ),
            "resources": {
                "type": "object",
                "description": "CPU and memory of the worker container (Kubernetes ResourceRequirements).",
                "properties": {
                    "limits": {**quantities, "description": "Most of each resource the container may use."},
                    "requests": {**quantities, "description": "Resources reserved for the container."},
                },
            },
            "nodeSelector": string_map("Node labels the worker pods must be scheduled on."),
            "tolerations": {
                "type": "array",
                "description": "Taints the worker pods tolerate (Kubernetes Toleration objects).",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "description": "A Kubernetes Toleration.",
                    "x-kubernetes-preserve-unknown-fields": True,
                },
            },
            "affinity": {
                "type": "object",
                "description": "Scheduling affinity of the worker pods (a Kubernetes Affinity object).",
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "podAnnotations": string_map("Extra annotations on the worker pods."),
            "podLabels": {
                **string_map(
                    "Extra labels on the worker pods (app.kubernetes.io/ and storyteller.dev/ keys are "
                    "reserved)."
                ),
                "x-kubernetes-validations": [
                    {
                        "rule": f"!self.exists(k, {reserved})",
                        "message": "spec.worker.podLabels must not set app.kubernetes.io/ or "
                        "storyteller.dev/ "
                        "labels (the operator owns them)",
                        "reason": "FieldValueForbidden",
                    }
                ],
            },
        },
    }


def observability_schema() -> Schema:
    return {
        "type": "object",
        "description": "Metrics, logs and traces of the workers.",
        "default": {},
        "properties": {
            "metricsPort": integer(
                "Port of the workers' Prometheus /metrics endpoint (not 8081 or 8082, the health and "
                "readiness ports).",
                minimum=1024,
                maximum=65535,
                default=9100,
            ),
            "logLevel": string(
                "Worker log level.", 16, enum=["debug", "info", "warning", "error"], default="info"
            ),
            "tracing": {
                "type": "object",
                "description": "OpenTelemetry traces over OTLP.",
                "default": {},
                "properties": {
                    "otlpEndpoint": string(
                        "OTLP endpoint (http:// or https://) traces are sent to; no tracing when absent.",
                        2048,
                        pattern="^https?://",
                    ),
                    "sampleRatio": {
                        "type": "number",
                        "description": "Fraction of sessions traced, 0 to 1.",
                        "minimum": 0,
                        "maximum": 1,
                        "default": 1.0,
                    },
                    "captureContent": {
                        "type": "boolean",
                        "description": "Whether spans carry conversation text (off: only timings and usage).",
                        "default": False,
                    },
                },
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.metricsPort) || !(self.metricsPort in [8081, 8082])",
                "message": "spec.observability.metricsPort must not be 8081 or 8082 (the worker's health "
                "and readiness ports)",
                "fieldPath": ".metricsPort",
                "reason": "FieldValueInvalid",
            }
        ],
    }


def status_schema() -> Schema:
    condition = {
        "type": "object",
        "description": "A standard Kubernetes condition.",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": string("Ready, Progressing, Degraded or ScalingLimited.", 316),
            "status": string("True, False or Unknown.", 16, enum=["True", "False", "Unknown"]),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The generation this condition was computed from.",
                "minimum": 0,
            },
            "lastTransitionTime": string("When the status last changed.", 64, format="date-time"),
            "reason": string("Machine-readable CamelCase reason.", 1024),
            "message": string("Human-readable explanation.", 32768),
        },
    }
    count = {"type": "integer", "format": "int32", "minimum": 0}
    return {
        "type": "object",
        "description": "What the operator observed; written by the operator only.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The metadata.generation the operator last reconciled.",
            },
            "phase": string(
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
            "configHash": string("Hash of the rendered worker config; changes roll the pool.", 128),
            "selector": string("Label selector of the worker pods (for the scale subresource).", 1024),
        },
    }


def crd() -> Schema:
    root: Schema = {
        "type": "object",
        "description": "A tenant's prewarmed pool of LiveKit voice-agent workers running the "
        "storyteller flow.",
        "required": ["spec"],
        "properties": {
            "apiVersion": string("Version of this object's schema (storyteller.dev/v1alpha1).", 64),
            "kind": string("Kind of this object (StorytellerDeployment).", 64),
            # The API server allows nothing but the type here (not even a description).
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                # Child objects are named <name>-metrics, <name>-worker...: Service names are DNS-1035
                # labels of at most 63 characters, so the tenant name must leave room for the suffix.
                "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') "
                "&& size(self.metadata.name) <= 48",
                "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting "
                "with a letter) of at most 48 characters",
                "reason": "FieldValueInvalid",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "storytellerdeployments.storyteller.dev",
            "labels": {"app.kubernetes.io/part-of": "storyteller"},
        },
        "spec": {
            "group": "storyteller.dev",
            "names": {
                "kind": "StorytellerDeployment",
                "listKind": "StorytellerDeploymentList",
                "plural": "storytellerdeployments",
                "singular": "storytellerdeployment",
                "shortNames": ["sd"],
                "categories": ["storyteller"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
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
                    "additionalPrinterColumns": [
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
                            "name": "Agent",
                            "type": "string",
                            "jsonPath": ".spec.agentName",
                            "description": "Agent name (metadata.name when empty).",
                            "priority": 1,
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


HEADER = "# Generated by crds/generate.py: edit that script and run it, never this file by hand.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=4096, allow_unicode=True)


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

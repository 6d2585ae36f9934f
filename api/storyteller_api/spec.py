"""The StorytellerDeployment spec as typed models: every field, bound, default and rule, once.

- The CRD's OpenAPI schema and CEL rules are generated from these classes (`crd.py`): a field's
  `description`, bounds (`ge`/`le`/`max_length`/`pattern`), default and `json_schema_extra` become its
  schema; a class's `CEL_RULES` become its `x-kubernetes-validations` (the API server enforces them; the
  rules the worker depends on are also validators here, so a hand-written config file is held to them).
- The operator reads a stored tenant through `TenantSpec` (defaults in one place, no `dict.get`).
- The worker's config (`WorkerConfig`) is the agent-facing part of the same spec plus the tenant's
  identity: the operator renders it into the tenant's ConfigMap, the worker validates it on start.

Keys are the CRD's camelCase names (alias), attributes snake_case. Unknown keys are refused, so a typo
never passes silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from storyteller_api import contract

# --------------------------------------------------------------------------------- shared field types
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Tenant names: child objects are <name>-metrics, <name>-worker..., and Service names are DNS-1035 labels
# of at most 63 characters, so the tenant name leaves room for the suffix.
TENANT_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
TENANT_NAME_MAX = 48
# Kubernetes' resource.Quantity syntax (what `kubectl` accepts for cpu/memory).
_NUM = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = rf"^(\+|-)?{_NUM}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUM}))?$"

# One token: no whitespace (a model, a voice, an image reference).
TOKEN = r"^\S+$"
# A BCP 47 language tag (en, en-US, zh-Hans-CN) or a provider's word of the same shape (Deepgram's multi).
LANGUAGE = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"
# A URL with a host and no whitespace; the scheme is the field's.
_URL_REST = r"://[^\s/?#]+([/?#]\S*)?$"
HTTP_URL = rf"^https?{_URL_REST}"
WS_URL = rf"^wss?{_URL_REST}"
URL_MAX = 2048
# Credentials in a URL would land in the ConfigMap, an env literal and log lines: they belong in a Secret.
# The API server (CEL `matches`, RE2) and the models (Python `re.search`) apply these same expressions.
# Userinfo: an '@' in the authority (user:password@host, token@host).
URL_USERINFO = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
# A query (or fragment, or ;-parameter) name that looks like a credential, whatever its case: any name
# holding key, token, secret, passw(or)d, pwd, credential, signature or auth (api-key, x-api-key,
# access_token, client_secret, X-Amz-Signature...), or Azure SAS's sig.
URL_CREDENTIAL_PARAM = (
    r"(?i)[?&#;]([^=&#;]*(key|token|secret|passw|pwd|credential|signature|auth)[^=&#;]*|sig)(=|[&#;]|$)"
)
_USERINFO_MESSAGE = "must not carry user information (user:password@host)"
_PARAM_MESSAGE = "must not carry a credential-looking query parameter (key, token, secret, password, auth...)"


def _credential_free(url: str) -> str:
    # The message never repeats the URL: it holds the credential.
    if re.search(URL_USERINFO, url):
        raise ValueError(f"{_USERINFO_MESSAGE}; put credentials in a Secret")
    if re.search(URL_CREDENTIAL_PARAM, url):
        raise ValueError(f"{_PARAM_MESSAGE}; put credentials in a Secret")
    return url


def url_rules(field: str, secret: str) -> dict[str, Any]:
    """The CRD's side of `_credential_free`, for a URL field's `json_schema_extra`.

    A CEL refusal shows the value's type, not the value (a `pattern` refusal would echo the URL).
    """
    return {
        "x-kubernetes-validations": [
            {
                "rule": f"!self.matches('{regex}')",
                "message": f"{field} {message}: put credentials in {secret}",
                "reason": "FieldValueForbidden",
            }
            for regex, message in ((URL_USERINFO, _USERINFO_MESSAGE), (URL_CREDENTIAL_PARAM, _PARAM_MESSAGE))
        ]
    }


_PROVIDER_SECRET = "a Secret named in spec.providerSecrets"

DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
HttpURL = Annotated[str, Field(pattern=HTTP_URL, max_length=URL_MAX), AfterValidator(_credential_free)]
WsURL = Annotated[str, Field(pattern=WS_URL, max_length=URL_MAX), AfterValidator(_credential_free)]
Token = Annotated[str, Field(pattern=TOKEN)]
Port = Annotated[int, Field(ge=1, le=65535)]
# A CEL rule as the CRD states it: rule, message, and optionally fieldPath and reason.
CelRule = dict[str, str]

# ------------------------------------------------------------------------------------------ defaults
DEFAULT_PERSONA = "Your name is Echo. You are a story teller that interacts with the user via voice."
DEFAULT_INTRO_INSTRUCTIONS = (
    "You are a curious, friendly person. Your goal is to gather a few pieces of information from the "
    "user to make the story personalized and engaging. Ask the user for their name and where they are "
    "from. Start the conversation with a short introduction."
)
DEFAULT_STORY_INSTRUCTIONS = (
    "You are a storyteller. Use the user's information to make the story personalized and "
    "interactive: ask what should happen next now and then."
)
DEFAULT_WORKER_IMAGE = "ghcr.io/storyteller-dev/storyteller-worker:0.1.0"

LLMProvider = Literal["openai", "openai-realtime"]
STTProvider = Literal["deepgram", "openai"]
TTSProvider = Literal["openai", "deepgram"]
REALTIME: LLMProvider = "openai-realtime"
Autoscaler = Literal["builtin", "keda", "none"]
BridgeMode = Literal["sequential", "overlapping"]
TurnDetection = Literal["model", "vad", "stt"]
# What the intro says as it hands the call to the story (the seed's handoff tool output).
DEFAULT_BRIDGE = "Let's start the story!"
# The most worker pods one tenant may run (min, max and spec.replicas).
MAX_REPLICAS = 1000
DEFAULT_REVISION_HISTORY = 10  # status.revisions entries, like a Deployment's revisionHistoryLimit
MAX_REVISION_HISTORY = 100
MAX_REVISION = 1_000_000  # revisions count up per tenant; the CRD's integers are bounded
# Autoscalers whose size is spec.replicas (written by kubectl scale or KEDA), not the operator's policy.
MANUAL_AUTOSCALERS: tuple[Autoscaler, ...] = ("none", "keda")


class SpecModel(BaseModel):
    """Base of every spec block: camelCase keys, unknown keys refused, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
    # The block's x-kubernetes-validations (see crd.py); the validators below enforce the same rules.
    CEL_RULES: ClassVar[tuple[CelRule, ...]] = ()
    # The block's description where it is a list item (fallbacks); a field's description otherwise.
    ITEM_DESCRIPTION: ClassVar[str] = ""


# ------------------------------------------------------------------------------------- model blocks


class ModelBlock(SpecModel):
    """Fields shared by every model block (llm, stt, tts) and their fallbacks."""

    # First, as in the CRD; each kind narrows it to its providers.
    provider: str = Field(max_length=32, description="Who serves the model.")
    model: Token = Field(
        min_length=1, max_length=256, description="The provider's model name (no whitespace, at most 256)."
    )
    voice: Token | None = Field(
        default=None,
        max_length=128,
        description="Voice name, for text-to-speech and realtime models (for example echo; no whitespace, "
        "at most 128).",
    )
    language: str | None = Field(
        default=None,
        pattern=LANGUAGE,
        max_length=32,
        description="Language code, for speech-to-text and text-to-speech: a BCP 47 tag such as en or "
        "en-US (or the provider's multi).",
    )
    base_url: HttpURL | None = Field(
        default=None,
        alias="baseURL",
        description="Base URL of an OpenAI-compatible (or Deepgram-compatible) endpoint, for self-hosted "
        "models; the provider's public endpoint when absent. http:// or https://, at most 2048 characters, "
        "with no credentials (no user:password@, no key or token query parameter): the key goes in a "
        "Secret named in spec.providerSecrets.",
        json_schema_extra=url_rules("baseURL", _PROVIDER_SECRET),
    )
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Sampling temperature, 0 to 2; the provider's default when absent.",
    )


def _provider(word: str) -> str:
    return f"Who serves the {word}."


def _fallbacks(word: str) -> str:
    return f"Other {word}s tried in order when this one fails (at most 5)."


class LLMFallback(ModelBlock):
    ITEM_DESCRIPTION = "A fallback language model, tried in order when the primary fails."
    CEL_RULES = (
        {
            "rule": f"self.provider != '{REALTIME}'",
            "message": f"an {REALTIME} model cannot be an llm fallback",
            "fieldPath": ".provider",
            "reason": "FieldValueForbidden",
        },
    )
    # The realtime provider is in the enum so the CEL rule, not the enum, says why it is refused.
    provider: LLMProvider = Field(max_length=32, description=_provider("language model"))

    @model_validator(mode="after")
    def _not_realtime(self) -> Self:
        if self.provider == REALTIME:
            raise ValueError(f"provider: an {REALTIME} model cannot be an llm fallback")
        return self


class STTFallback(ModelBlock):
    ITEM_DESCRIPTION = "A fallback speech-to-text model, tried in order when the primary fails."
    provider: STTProvider = Field(max_length=32, description=_provider("speech-to-text model"))


class TTSFallback(ModelBlock):
    ITEM_DESCRIPTION = "A fallback text-to-speech model, tried in order when the primary fails."
    provider: TTSProvider = Field(max_length=32, description=_provider("text-to-speech model"))


class LLMSpec(ModelBlock):
    """A chat LLM (`openai`) or a speech-to-speech realtime model (`openai-realtime`)."""

    CEL_RULES = (
        {
            "rule": f"self.provider != '{REALTIME}' || !has(self.fallbacks) || size(self.fallbacks) == 0",
            "message": f"a realtime llm ({REALTIME}) takes no fallbacks",
            "fieldPath": ".fallbacks",
            "reason": "FieldValueForbidden",
        },
    )
    provider: LLMProvider = Field(max_length=32, description=_provider("language model"))
    fallbacks: list[LLMFallback] = Field(
        default_factory=list, max_length=5, description=_fallbacks("language model")
    )

    @property
    def realtime(self) -> bool:
        return self.provider == REALTIME

    @model_validator(mode="after")
    def _realtime_has_no_fallbacks(self) -> Self:
        if self.realtime and self.fallbacks:
            raise ValueError("fallbacks: a realtime llm takes no fallbacks")
        return self


class STTSpec(ModelBlock):
    provider: STTProvider = Field(max_length=32, description=_provider("speech-to-text model"))
    fallbacks: list[STTFallback] = Field(
        default_factory=list, max_length=5, description=_fallbacks("speech-to-text model")
    )


class TTSSpec(ModelBlock):
    provider: TTSProvider = Field(max_length=32, description=_provider("text-to-speech model"))
    fallbacks: list[TTSFallback] = Field(
        default_factory=list, max_length=5, description=_fallbacks("text-to-speech model")
    )


def default_llm() -> LLMSpec:
    return LLMSpec(provider="openai", model="gpt-4o-mini")


def default_stt() -> STTSpec:
    return STTSpec(provider="deepgram", model="nova-3", language="en")


def default_tts() -> TTSSpec:
    """The intro's voice when it sets none and its llm is not realtime (a realtime model speaks itself)."""
    return TTSSpec(provider="openai", model="gpt-4o-mini-tts", voice="echo")


# ------------------------------------------------------------------------------------------- phases


def _realtime_rule(phase: str) -> CelRule:
    return {
        "rule": f"!has(self.llm) || self.llm.provider != '{REALTIME}' || !has(self.tts)",
        "message": f"spec.{phase}.tts must be absent when spec.{phase}.llm is {REALTIME} "
        "(a realtime model speaks by itself)",
        "fieldPath": ".tts",
        "reason": "FieldValueForbidden",
    }


class Handoff(SpecModel):
    """How the intro hands the call to the story agent."""

    bridge: str = Field(
        default=DEFAULT_BRIDGE,
        min_length=1,
        max_length=256,
        description="What the intro says as it hands off, 1 to 256 characters: the handoff tool's output, "
        "which the intro's model answers (sequential), or the words spoken as written (overlapping).",
    )
    mode: BridgeMode = Field(
        default="sequential",
        max_length=16,
        description="sequential: the intro's model answers the handoff with a reply played in full before "
        "the story agent starts (the original flow). overlapping: the bridge is rendered in the intro's "
        "voice while the intro runs, played at the handoff, and the story agent's first reply is generated "
        "meanwhile, so it follows with no silence; needs the intro's tts (not an openai-realtime intro).",
    )


class IntroPhase(SpecModel):
    """The intro phase: greets the user and asks for name and location."""

    CEL_RULES = (
        _realtime_rule("intro"),
        {
            "rule": f"!has(self.handoff) || self.handoff.mode != 'overlapping' || !has(self.llm) "
            f"|| self.llm.provider != '{REALTIME}'",
            "message": "spec.intro.handoff.mode overlapping needs the intro's tts: the bridge is rendered in "
            f"its voice (not with an {REALTIME} intro)",
            "fieldPath": ".handoff.mode",
            "reason": "FieldValueInvalid",
        },
    )
    instructions: str = Field(
        default=DEFAULT_INTRO_INSTRUCTIONS,
        max_length=16384,
        description="Instructions of the intro agent (appended to the persona).",
    )
    llm: LLMSpec = Field(default_factory=default_llm, description="The language model of the intro agent.")
    stt: STTSpec = Field(
        default_factory=default_stt,
        description="The speech-to-text model of the intro agent (also the story's when the story sets "
        "none).",
    )
    # No stored default: a realtime llm must be able to leave it out. `default_tts()` otherwise.
    tts: TTSSpec | None = Field(
        default=None,
        description="The text-to-speech model of the intro agent (also the story's when the story sets "
        "none); when absent, openai gpt-4o-mini-tts with voice echo, unless the llm is openai-realtime "
        "(it speaks itself).",
    )
    handoff: Handoff = Field(default_factory=Handoff, description=Handoff.__doc__)

    @model_validator(mode="before")
    @classmethod
    def _default_tts_unless_realtime(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tts") is None:
            llm = data.get("llm")
            provider = llm.get("provider") if isinstance(llm, dict) else getattr(llm, "provider", None)
            if provider != REALTIME:
                return {**data, "tts": default_tts()}
        return data

    @model_validator(mode="after")
    def _realtime_speaks_itself(self) -> Self:
        if self.llm.realtime and self.tts is not None:
            raise ValueError(f"tts: must be absent when llm.provider is {REALTIME}")
        if not self.llm.realtime and self.tts is None:
            raise ValueError(f"tts: required unless llm.provider is {REALTIME}")
        if self.handoff.mode == "overlapping" and self.tts is None:
            raise ValueError(
                "handoff.mode: overlapping needs the intro's tts (the bridge is rendered in its voice)"
            )
        return self


class StoryPhase(SpecModel):
    """The story phase: tells an interactive story using what the intro gathered."""

    CEL_RULES = (_realtime_rule("story"),)
    instructions: str = Field(
        default=DEFAULT_STORY_INSTRUCTIONS,
        max_length=16384,
        description="Instructions of the story agent (appended to the persona).",
    )
    llm: LLMSpec = Field(
        default_factory=default_llm,
        description="The language model of the story agent; openai-realtime speaks by itself.",
    )
    stt: STTSpec | None = Field(
        default=None, description="The speech-to-text model of the story agent; the intro's when absent."
    )
    tts: TTSSpec | None = Field(
        default=None,
        description="The text-to-speech model of the story agent; the intro's when absent and the llm is "
        "not realtime.",
    )
    carry_chat_context: bool = Field(
        default=False, description="Whether the story agent starts with the intro's chat history."
    )

    @model_validator(mode="after")
    def _realtime_speaks_itself(self) -> Self:
        if self.llm.realtime and self.tts is not None:
            raise ValueError(f"tts: must be absent when llm.provider is {REALTIME}")
        return self


# ----------------------------------------------------------------------------- project, pool, pods


class LiveKit(SpecModel):
    """The LiveKit server the workers register with."""

    url: WsURL = Field(
        description="WebSocket URL of the LiveKit server, ws:// or wss://, at most 2048 characters, with no "
        "credentials (no user:password@, no token query parameter): the key and secret go in "
        "credentialsSecret.",
        json_schema_extra=url_rules("spec.livekit.url", "the Secret spec.livekit.credentialsSecret names"),
    )
    credentials_secret: DnsLabel = Field(
        description=f"Name of a Secret in this namespace with the keys {contract.LIVEKIT_API_KEY_ENV} and "
        f"{contract.LIVEKIT_API_SECRET_ENV}."
    )


class WorkerPool(SpecModel):
    """The part of the pool a worker pod reads: its capacity and how it starts and stops jobs.

    Only these reach the worker's config, so resizing the pool never changes what the pods run (and
    never rolls them).
    """

    sessions_per_worker: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Sessions one worker pod accepts; it refuses jobs beyond this. 1 to 100.",
    )
    # Each one holds its own copy of the models in memory.
    idle_processes: int = Field(
        default=2,
        ge=0,
        le=16,
        description="Prewarmed job processes per pod (models already loaded). 0 to 16.",
    )
    drain_timeout_seconds: int = Field(
        default=900,
        ge=1,
        le=10800,
        description="How long a pod being removed may keep finishing its sessions, 1 to 10800 seconds (3 "
        "hours). The pod's grace period is this plus 30 seconds, and a node drain waits that long. Not 0: "
        "LiveKit reads 0 as no limit, and the pod would be killed at its grace period mid-session.",
    )


class Pool(WorkerPool):
    """The prewarmed worker pool and how it scales."""

    CEL_RULES = (
        {
            # has(): the API server also checks the rule against the bare `default: {}`.
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) "
            "|| self.minReplicas <= self.maxReplicas",
            "message": "spec.pool.minReplicas must not exceed spec.pool.maxReplicas",
            "fieldPath": ".minReplicas",
            "reason": "FieldValueInvalid",
        },
    )
    min_replicas: int = Field(
        default=1,
        ge=0,
        le=MAX_REPLICAS,
        description="Workers kept running even at zero load (the pool's floor), 0 to 1000. 0 allows an "
        "empty pool.",
    )
    max_replicas: int = Field(
        default=10, ge=1, le=MAX_REPLICAS, description="Most workers the pool may grow to, 1 to 1000."
    )
    spare_sessions: int = Field(
        default=2, ge=0, le=1000, description="Free session slots kept warm across the pool, 0 to 1000."
    )
    # The builtin policy keeps the load history of this window.
    scale_down_delay_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long load must stay low before the pool shrinks, 0 to 86400 seconds (a day).",
    )
    autoscaler: Autoscaler = Field(
        default="builtin",
        max_length=16,
        description="Who sizes the pool between minReplicas and maxReplicas: builtin (the operator, on the "
        "sessions its workers report), keda (a KEDA ScaledObject on the same formula writes spec.replicas) "
        "or none (spec.replicas, set by kubectl scale).",
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas: must not exceed maxReplicas")
        return self


Quantities = dict[str, int | str]
_QUANTITIES: dict[str, Any] = {
    "maxProperties": 16,
    "additionalProperties": {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY,
        "maxLength": 64,
    },
}


class Resources(SpecModel):
    """CPU and memory of the worker container (Kubernetes ResourceRequirements)."""

    limits: Quantities | None = Field(
        default=None,
        description="Most of each resource the container may use (quantities such as 500m or 2Gi, at most "
        "16 resources).",
        json_schema_extra=_QUANTITIES,
    )
    requests: Quantities | None = Field(
        default=None,
        description="Resources reserved for the container (quantities such as 500m or 1Gi, at most 16 "
        "resources).",
        json_schema_extra=_QUANTITIES,
    )


_RESERVED_LABEL = " || ".join(f"k.startsWith('{p}')" for p in contract.RESERVED_LABEL_PREFIXES)
_RESERVED_OR = " or ".join(contract.RESERVED_LABEL_PREFIXES)
_RESERVED_AND = " and ".join(contract.RESERVED_LABEL_PREFIXES)
_RESERVED_ANNOTATION = " || ".join(
    [f"k == '{k}'" for k in contract.RESERVED_ANNOTATION_KEYS]
    + [f"k.startsWith('{p}')" for p in contract.RESERVED_ANNOTATION_PREFIXES]
)
_RESERVED_ANNOTATION_NAMES = [
    *contract.RESERVED_ANNOTATION_KEYS,
    *(f"{p}*" for p in contract.RESERVED_ANNOTATION_PREFIXES),
]
_RESERVED_ANNOTATIONS_OR = (
    ", ".join(_RESERVED_ANNOTATION_NAMES[:-1]) + " or " + _RESERVED_ANNOTATION_NAMES[-1]
)


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}[.]){{3}}{_OCTET}"  # [.], not an escape: the CEL string literal takes it as is
_H = "[0-9a-fA-F]{1,4}"
# Every compressed form of a hexadecimal IPv6 address (no embedded IPv4, no zone).
_IPV6 = "|".join(
    (
        f"({_H}:){{7}}{_H}",
        f"({_H}:){{1,7}}:",
        *(f"({_H}:){{1,{7 - n}}}(:{_H}){{1,{n}}}" for n in range(1, 7)),
        f":((:{_H}){{1,7}}|:)",
    )
)
# An IPv4 or IPv6 CIDR (what a NetworkPolicy's ipBlock.cidr takes); RE2 and Python read it alike. A CEL
# rule, not a `pattern`, in the CRD: a refusal then says what is wanted instead of quoting this expression.
CIDR = rf"^({_IPV4}/(3[0-2]|[12]?[0-9])|({_IPV6})/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
_CIDR_MESSAGE = "must be an IPv4 or IPv6 CIDR such as 203.0.113.0/24 or 2001:db8::/32"


def _cidr(value: str) -> str:
    if not re.search(CIDR, value):
        raise ValueError(_CIDR_MESSAGE)
    return value


Cidr = Annotated[str, Field(max_length=43), AfterValidator(_cidr)]

# LiveKit's own defaults (self-hosted livekit-server and LiveKit Cloud alike).
LIVEKIT_UDP_RANGE = (50000, 60000)  # rtc.port_range_start..port_range_end: ICE over UDP
LIVEKIT_UDP_PORTS = (3478, 7882)  # TURN over UDP; a self-hosted server's single UDP port (rtc.udp_port)
LIVEKIT_TCP_PORTS = (7881, 443, 5349)  # ICE over TCP (rtc.tcp_port), TURN over TLS on 443 and 5349


def _ports(protocol: str, default: tuple[int, ...]) -> dict[str, Any]:
    return {
        "default": list(default),
        "x-kubernetes-list-type": "set",
        "items": {"description": f"A {protocol} port, 1 to 65535."},
    }


class LiveKitMedia(SpecModel):
    """Where the worker pods' LiveKit media may go: the ports (and addresses) of their media egress."""

    # The field's description (kubectl explain): what the defaults are and when to change them.
    DOC: ClassVar[str] = (
        "Where the worker pods' LiveKit media (WebRTC audio) may go: their NetworkPolicy's media egress. The "
        "defaults are LiveKit's own, for LiveKit Cloud and a self-hosted livekit-server alike: ICE over UDP "
        "50000-60000 and TCP 7881, TURN over UDP 3478 and over TLS on 443 and 5349. A server with other rtc "
        "or turn ports needs them here, or under a CNI that enforces NetworkPolicy the workers register "
        "but hear nothing. Changing it never rolls the pods."
    )

    CEL_RULES = (
        {
            "rule": "!has(self.udpPortRangeStart) || !has(self.udpPortRangeEnd) "
            "|| self.udpPortRangeStart <= self.udpPortRangeEnd",
            "message": "spec.worker.livekitMedia.udpPortRangeStart must not exceed udpPortRangeEnd",
            "fieldPath": ".udpPortRangeStart",
            "reason": "FieldValueInvalid",
        },
    )
    udp_port_range_start: int = Field(
        default=LIVEKIT_UDP_RANGE[0],
        ge=1,
        le=65535,
        description="First UDP port of the server's ICE range (LiveKit's rtc.port_range_start), 1 to 65535.",
    )
    udp_port_range_end: int = Field(
        default=LIVEKIT_UDP_RANGE[1],
        ge=1,
        le=65535,
        description="Last UDP port of the server's ICE range (LiveKit's rtc.port_range_end), 1 to 65535; "
        "equal to udpPortRangeStart for a server on one UDP port (rtc.udp_port).",
    )
    udp_ports: list[Port] = Field(
        default_factory=lambda: list(LIVEKIT_UDP_PORTS),
        max_length=8,
        description="More UDP ports media may use, at most 8 (TURN over UDP: 3478; a self-hosted server's "
        "single UDP port, rtc.udp_port: 7882).",
        json_schema_extra=_ports("UDP", LIVEKIT_UDP_PORTS),
    )
    tcp_ports: list[Port] = Field(
        default_factory=lambda: list(LIVEKIT_TCP_PORTS),
        max_length=8,
        description="TCP ports media may use, at most 8 (ICE over TCP: 7881; TURN over TLS: 443 and 5349).",
        json_schema_extra=_ports("TCP", LIVEKIT_TCP_PORTS),
    )
    cidrs: list[Cidr] = Field(
        default_factory=list,
        max_length=16,
        description="Addresses the media egress is limited to, at most 16 CIDRs (IPv4 or IPv6, such as "
        "203.0.113.0/24): the LiveKit servers' and TURN servers' networks. Any address when empty.",
        json_schema_extra={
            "default": [],
            "x-kubernetes-list-type": "set",
            "items": {
                "description": "An IPv4 or IPv6 CIDR.",
                "x-kubernetes-validations": [
                    {
                        "rule": f"self.matches('{CIDR}')",
                        "message": f"spec.worker.livekitMedia.cidrs {_CIDR_MESSAGE}",
                        "reason": "FieldValueInvalid",
                    }
                ],
            },
        },
    )

    @model_validator(mode="after")
    def _range_in_order(self) -> Self:
        if self.udp_port_range_start > self.udp_port_range_end:
            raise ValueError("udpPortRangeStart: must not exceed udpPortRangeEnd")
        return self


class WorkerPod(SpecModel):
    """The worker pods: image, scheduling and network."""

    image: Token = Field(
        default=DEFAULT_WORKER_IMAGE,
        min_length=1,
        max_length=512,
        description="Worker container image (no whitespace, at most 512 characters).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent",
        max_length=16,
        description="When to pull the image: Always, IfNotPresent or Never.",
    )
    resources: Resources | None = Field(default=None, description=Resources.__doc__)
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the worker pods must be scheduled on, at most 64."
    )
    # Kubernetes' own types, passed through to the pod unchanged: the API server validates them there.
    tolerations: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=32,
        description="Taints the worker pods tolerate (Kubernetes Toleration objects), at most 32.",
        json_schema_extra={"items": {"description": "A Kubernetes Toleration."}},
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="Scheduling affinity of the worker pods (a Kubernetes Affinity object)."
    )
    pod_annotations: dict[str, str] | None = Field(
        default=None,
        description=f"Extra annotations on the worker pods, at most 64 ({_RESERVED_ANNOTATIONS_OR} are "
        "reserved: the operator and kubectl write them).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!self.exists(k, {_RESERVED_ANNOTATION})",
                    "message": f"spec.worker.podAnnotations must not set {_RESERVED_ANNOTATIONS_OR} "
                    "annotations (the operator and kubectl write them)",
                    "reason": "FieldValueForbidden",
                }
            ]
        },
    )
    pod_labels: dict[str, str] | None = Field(
        default=None,
        description=f"Extra labels on the worker pods, at most 64 ({_RESERVED_AND} keys are reserved).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!self.exists(k, {_RESERVED_LABEL})",
                    "message": f"spec.worker.podLabels must not set {_RESERVED_OR} labels (the operator "
                    "owns them)",
                    "reason": "FieldValueForbidden",
                }
            ]
        },
    )
    livekit_media: LiveKitMedia = Field(default_factory=LiveKitMedia, description=LiveKitMedia.DOC)


class Tracing(SpecModel):
    """OpenTelemetry traces over OTLP."""

    otlp_endpoint: HttpURL | None = Field(
        default=None,
        description="OTLP endpoint (http:// or https://, at most 2048 characters) traces are sent to; no "
        "tracing when absent. No credentials in it (no user:password@, no key or token query parameter): "
        "headers go in OTEL_EXPORTER_OTLP_HEADERS, from a Secret named in spec.providerSecrets.",
        json_schema_extra=url_rules(
            "spec.observability.tracing.otlpEndpoint",
            f"{_PROVIDER_SECRET} (for example as OTEL_EXPORTER_OTLP_HEADERS)",
        ),
    )
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="Fraction of sessions traced, 0 to 1.")
    capture_content: bool = Field(
        default=False, description="Whether spans carry conversation text (off: only timings and usage)."
    )


_RESERVED_PORTS = ", ".join(str(p) for p in contract.RESERVED_PORTS)
_RESERVED_PORTS_WORDS = " or ".join(str(p) for p in contract.RESERVED_PORTS)


class Observability(SpecModel):
    """Metrics, logs and traces of the workers."""

    CEL_RULES = (
        {
            "rule": f"!has(self.metricsPort) || !(self.metricsPort in [{_RESERVED_PORTS}])",
            "message": f"spec.observability.metricsPort must not be {_RESERVED_PORTS_WORDS} (the worker's "
            "health and readiness ports)",
            "fieldPath": ".metricsPort",
            "reason": "FieldValueInvalid",
        },
    )
    metrics_port: int = Field(
        default=contract.DEFAULT_METRICS_PORT,
        ge=1024,
        le=65535,
        description=f"Port of the workers' Prometheus /metrics endpoint, 1024 to 65535 (not "
        f"{_RESERVED_PORTS_WORDS}, the health and readiness ports).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", max_length=16, description="Worker log level."
    )
    tracing: Tracing = Field(default_factory=Tracing, description=Tracing.__doc__)

    @model_validator(mode="after")
    def _not_a_reserved_port(self) -> Self:
        if self.metrics_port in contract.RESERVED_PORTS:
            raise ValueError(f"metricsPort: must not be {_RESERVED_PORTS_WORDS} (health and readiness ports)")
        return self


# ------------------------------------------------------------------------------------ the whole spec


class AgentSpec(SpecModel):
    """The part of the spec the agent itself runs on (and so the worker's config holds)."""

    agent_name: DnsLabel | None = Field(
        default=None,
        description="The agent name workers register under (explicit dispatch); defaults to metadata.name.",
    )
    livekit: LiveKit = Field(description=LiveKit.__doc__)
    persona: str = Field(
        default=DEFAULT_PERSONA,
        max_length=8192,
        description="Who the agent is; prepended to both phases' instructions.",
    )
    intro: IntroPhase = Field(default_factory=IntroPhase, description=IntroPhase.__doc__)
    story: StoryPhase = Field(default_factory=StoryPhase, description=StoryPhase.__doc__)
    pool: WorkerPool = Field(default_factory=WorkerPool, description=WorkerPool.__doc__)
    observability: Observability = Field(default_factory=Observability, description=Observability.__doc__)
    turn_detection: TurnDetection = Field(
        default="model",
        max_length=8,
        description="How the end of the caller's turn is found (a realtime model finds it itself). model: "
        "the framework's end-of-turn model reads what was said (least likely to cut a caller off; its "
        "weights take about 245 MiB per pod, shared by its job processes). vad: a pause in the caller's "
        "voice ends the turn (no model loaded). stt: the speech-to-text service's own endpointing.",
    )

    def model_blocks(self) -> Iterator[tuple[str, ModelBlock]]:
        """Every model block in use with its dotted field path, fallbacks included."""
        phases: list[tuple[str, IntroPhase | StoryPhase]] = [("intro", self.intro), ("story", self.story)]
        for phase_name, phase in phases:
            for kind in ("llm", "stt", "tts"):
                block: LLMSpec | STTSpec | TTSSpec | None = getattr(phase, kind)
                if block is None:
                    continue
                yield f"{phase_name}.{kind}", block
                for i, fallback in enumerate(block.fallbacks):
                    yield f"{phase_name}.{kind}.fallbacks[{i}]", fallback


RolloutStrategy = Literal["Replace", "Canary"]


class CanaryAnalysis(SpecModel):
    """How a canary revision is judged against the stable one, on the same window (since the canary
    started), from the workers' per-revision metrics in Prometheus (the operator's prometheus.url)."""

    min_sessions: int = Field(
        default=20,
        ge=1,
        le=100000,
        description="Sessions the canary must have served before it is judged, 1 to 100000.",
    )
    max_duration_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        description="How long the canary may run without reaching minSessions; then it is rolled back "
        "(not enough evidence), 60 to 604800.",
    )
    max_handoff_rate_drop: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="How far the canary's handoff rate (sessions that reached the StoryAgent per session) "
        "may fall below the stable revision's, 0 to 1.",
    )
    max_provider_error_rate_increase: float = Field(
        default=0.1,
        ge=0,
        le=1000,
        description="How many more failed LLM/STT/TTS requests per session than the stable revision the "
        "canary may have.",
    )
    max_error_end_rate_increase: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="How much higher than the stable revision's the canary's share of sessions ended by an "
        "error may be, 0 to 1.",
    )
    max_first_audio_p95_ratio: float = Field(
        default=1.5,
        ge=1,
        le=100,
        description="How many times the stable revision's p95 time to first audio the canary's may be.",
    )
    max_ttft_p95_ratio: float = Field(
        default=1.5,
        ge=1,
        le=100,
        description="How many times the stable revision's p95 LLM time to first token the canary's may be.",
    )


class Rollout(SpecModel):
    """How a new revision (a change to what the pods run: config, image, a Secret) reaches the callers."""

    strategy: RolloutStrategy = Field(
        default="Replace",
        max_length=8,
        description="Replace: roll every pod to the new revision at once (the Deployment's rolling update). "
        "Canary: run it first as a second Deployment taking about canaryWeight % of new sessions, judge it "
        "against the stable revision (analysis), then promote it or roll it back.",
    )
    canary_weight: int = Field(
        default=10,
        ge=1,
        le=50,
        description="The share of new sessions the canary is sized to take, in %, 1 to 50 (LiveKit spreads "
        "calls over the available workers: the canary gets this share of the pods, at least one).",
    )
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis, description=CanaryAnalysis.__doc__)
    pinned_revision: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REVISION,
        description="Serve this revision from status.revisions (a rollback to an earlier one) and start no "
        f"canary while it is set; unset it to serve the spec again. 1 to {MAX_REVISION}.",
    )
    promote_revision: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REVISION,
        description="Promote the canary now when it is this revision, without waiting for its analysis, "
        f"1 to {MAX_REVISION}.",
    )


class TenantSpec(AgentSpec):
    """What the tenant wants: its LiveKit project, models, prompts and pool size."""

    provider_secrets: list[DnsLabel] = Field(
        default_factory=list,
        max_length=16,
        description="Names of Secrets in this namespace whose keys become the workers' environment "
        "(OPENAI_API_KEY, DEEPGRAM_API_KEY, ...), at most 16. Values are never copied anywhere else.",
        json_schema_extra={
            "default": [],
            "x-kubernetes-list-type": "set",
            "items": {"description": "A Secret name (DNS label)."},
        },
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description="Worker pods asked for by hand or by KEDA, through the scale subresource (kubectl scale "
        "sd/NAME --replicas=N, or a KEDA ScaledObject), 0 to 1000. Used when pool.autoscaler is none or "
        "keda, held within pool.minReplicas..maxReplicas, and pool.minReplicas when absent; the builtin "
        "autoscaler ignores it.",
    )
    # The whole pool: the worker's part plus the sizing only the operator reads.
    pool: Pool = Field(default_factory=Pool, description=Pool.__doc__)
    worker: WorkerPod = Field(default_factory=WorkerPod, description=WorkerPod.__doc__)
    suspend: bool = Field(
        default=False, description="Scale the pool to zero and keep it there; everything else stays in place."
    )
    rollout: Rollout = Field(default_factory=Rollout, description=Rollout.__doc__)
    revision_history_limit: int = Field(
        default=DEFAULT_REVISION_HISTORY,
        ge=1,
        le=MAX_REVISION_HISTORY,
        description="Revisions kept in status.revisions (what the pods ran: config, image, Secret versions), "
        f"1 to {MAX_REVISION_HISTORY}.",
    )

    @property
    def sized_by_replicas(self) -> bool:
        """Whether spec.replicas sizes the pool (none/keda) rather than the operator's policy."""
        return self.pool.autoscaler in MANUAL_AUTOSCALERS


# Spec fields that configure the pod rather than the agent: the worker's config forbids them. spec.replicas
# too: a `kubectl scale` (or KEDA) must resize the pool, not roll every pod with a new config.
POD_LEVEL_FIELDS: tuple[str, ...] = tuple(
    TenantSpec.model_fields[f].alias or f for f in TenantSpec.model_fields if f not in AgentSpec.model_fields
)
# Pool fields only the operator reads (sizing): kept out of the worker's config for the same reason.
OPERATOR_POOL_FIELDS: tuple[str, ...] = tuple(
    Pool.model_fields[f].alias or f for f in Pool.model_fields if f not in WorkerPool.model_fields
)


class WorkerConfig(AgentSpec):
    """The worker's tenant.json: the agent-facing spec (as stored, defaults applied) plus its identity."""

    tenant: DnsLabel
    namespace: str = "default"
    agent_name: DnsLabel  # required here: the tenant's name when unset

    @model_validator(mode="before")
    @classmethod
    def _agent_name_defaults_to_tenant(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("agentName") and not data.get("agent_name"):
            return {**data, "agentName": data.get("tenant")}
        return data

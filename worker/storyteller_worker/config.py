"""The tenant's worker configuration: the StorytellerDeployment spec as the operator renders it.

The operator writes the stored spec (defaults applied) as JSON into the tenant's ConfigMap, minus the
pod-level fields (`worker`, `suspend`, `providerSecrets`), plus `tenant` and `namespace`. Keys are the
CRD's camelCase names. Unknown keys are refused so a typo never passes silently. Secrets are never
part of this file: keys arrive as environment variables from the tenant's Secrets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

CONFIG_PATH_ENV = "STORYTELLER_CONFIG"
DEFAULT_CONFIG_PATH = "/etc/storyteller/tenant.json"

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

# Which environment variable carries each provider's key. The operator fills them from the Secrets
# named in spec.providerSecrets; the worker only checks they are present and never reads them itself.
PROVIDER_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "openai-realtime": "OPENAI_API_KEY",
    "deepgram": "DEEPGRAM_API_KEY",
}
LIVEKIT_KEY_ENVS = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")

DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
HttpURL = Annotated[str, Field(pattern=r"^https?://")]


class ConfigError(Exception):
    """A tenant config that cannot run; the message names the field (dotted camelCase path)."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _ModelBase(_Model):
    """Fields shared by every model block (llm, stt, tts) and their fallbacks."""

    model: str = Field(min_length=1)
    voice: str | None = None
    language: str | None = None
    base_url: HttpURL | None = Field(default=None, alias="baseURL")
    temperature: float | None = Field(default=None, ge=0, le=2)


class LLMFallback(_ModelBase):
    provider: Literal["openai"]


class STTFallback(_ModelBase):
    provider: Literal["deepgram", "openai"]


class TTSFallback(_ModelBase):
    provider: Literal["openai", "deepgram"]


class LLMSpec(_ModelBase):
    """A chat LLM (`openai`) or a speech-to-speech realtime model (`openai-realtime`)."""

    provider: Literal["openai", "openai-realtime"]
    fallbacks: list[LLMFallback] = Field(default_factory=list)

    @property
    def realtime(self) -> bool:
        return self.provider == "openai-realtime"

    @model_validator(mode="after")
    def _realtime_has_no_fallbacks(self) -> Self:
        if self.realtime and self.fallbacks:
            raise ValueError("fallbacks: a realtime llm takes no fallbacks")
        return self


class STTSpec(_ModelBase):
    provider: Literal["deepgram", "openai"]
    fallbacks: list[STTFallback] = Field(default_factory=list)


class TTSSpec(_ModelBase):
    provider: Literal["openai", "deepgram"]
    fallbacks: list[TTSFallback] = Field(default_factory=list)


def _default_intro_llm() -> LLMSpec:
    return LLMSpec(provider="openai", model="gpt-4o-mini")


def _default_stt() -> STTSpec:
    return STTSpec(provider="deepgram", model="nova-3", language="en")


def _default_tts() -> TTSSpec:
    return TTSSpec(provider="openai", model="gpt-4o-mini-tts", voice="echo")


class IntroPhase(_Model):
    instructions: str = DEFAULT_INTRO_INSTRUCTIONS
    llm: LLMSpec = Field(default_factory=_default_intro_llm)
    stt: STTSpec = Field(default_factory=_default_stt)
    tts: TTSSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_tts_unless_realtime(cls, data: Any) -> Any:
        # Not a plain default: a realtime llm speaks itself, so it gets no tts when none is given.
        if isinstance(data, dict) and data.get("tts") is None:
            llm = data.get("llm")
            provider = llm.get("provider") if isinstance(llm, dict) else getattr(llm, "provider", None)
            if provider != "openai-realtime":
                return {**data, "tts": _default_tts()}
        return data

    @model_validator(mode="after")
    def _realtime_speaks_itself(self) -> Self:
        if self.llm.realtime and self.tts is not None:
            raise ValueError("tts: must be absent when llm.provider is openai-realtime")
        if not self.llm.realtime and self.tts is None:
            raise ValueError("tts: required unless llm.provider is openai-realtime")
        return self


class StoryPhase(_Model):
    """The story phase; stt/tts left out inherit the intro's, unless the llm is realtime."""

    instructions: str = DEFAULT_STORY_INSTRUCTIONS
    llm: LLMSpec = Field(default_factory=_default_intro_llm)
    stt: STTSpec | None = None
    tts: TTSSpec | None = None
    carry_chat_context: bool = False

    @model_validator(mode="after")
    def _realtime_speaks_itself(self) -> Self:
        if self.llm.realtime and self.tts is not None:
            raise ValueError("tts: must be absent when llm.provider is openai-realtime")
        return self


class LiveKit(_Model):
    url: Annotated[str, Field(pattern=r"^wss?://")]
    credentials_secret: DnsLabel


class Pool(_Model):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    sessions_per_worker: int = Field(default=4, ge=1)
    idle_processes: int = Field(default=2, ge=0)
    spare_sessions: int = Field(default=2, ge=0)
    scale_down_delay_seconds: int = Field(default=300, ge=0)
    drain_timeout_seconds: int = Field(default=900, ge=0)
    autoscaler: Literal["builtin", "keda", "none"] = "builtin"

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas: must not exceed maxReplicas")
        return self


class Tracing(_Model):
    otlp_endpoint: HttpURL | None = None
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    capture_content: bool = False


class Observability(_Model):
    metrics_port: int = Field(default=9100, ge=1024, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tracing: Tracing = Field(default_factory=Tracing)


class TenantConfig(_Model):
    """Everything tenant-specific the worker needs; see the module docstring for where it comes from."""

    tenant: DnsLabel
    namespace: str = "default"
    agent_name: DnsLabel
    livekit: LiveKit
    persona: str = DEFAULT_PERSONA
    intro: IntroPhase = Field(default_factory=IntroPhase)
    story: StoryPhase = Field(default_factory=StoryPhase)
    pool: Pool = Field(default_factory=Pool)
    observability: Observability = Field(default_factory=Observability)

    @model_validator(mode="before")
    @classmethod
    def _agent_name_defaults_to_tenant(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("agentName") and not data.get("agent_name"):
            return {**data, "agentName": data.get("tenant")}
        return data

    def model_blocks(self) -> Iterator[tuple[str, _ModelBase]]:
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


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(("function-", "literal[", "union[")):
            path += f".{part}" if path else part
    return path


def _first_error(err: ValidationError) -> str:
    """One line naming the field. The offending value is left out: it may be a secret."""
    first = err.errors(include_url=False, include_input=False)[0]
    path = _field_path(tuple(first["loc"]))
    msg = str(first["msg"]).removeprefix("Value error, ")
    # Validators that know a more precise field say it as "field: message".
    if ": " in msg and msg.split(": ", 1)[0].replace(".", "").isalnum():
        sub, msg = msg.split(": ", 1)
        path = f"{path}.{sub}" if path else sub
    return f"{path}: {msg}" if path else msg


def parse_tenant_config(data: Mapping[str, Any]) -> TenantConfig:
    """Validate a rendered config; raise ConfigError with one line naming the first bad field."""
    try:
        return TenantConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_first_error(err)) from None


def load_tenant_config(path: str | os.PathLike[str] | None = None) -> TenantConfig:
    """Read the tenant config from `path`, else $STORYTELLER_CONFIG, else the in-pod default."""
    file = Path(path or os.environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {file} not found (set {CONFIG_PATH_ENV})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {file} is not JSON: line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a JSON object")
    return parse_tenant_config(data)


def required_env(config: TenantConfig) -> dict[str, str]:
    """Environment variable → the first field that needs it (LiveKit credentials, provider keys)."""
    needed = {name: "livekit.credentialsSecret" for name in LIVEKIT_KEY_ENVS}
    for path, block in config.model_blocks():
        provider: str = block.provider  # type: ignore[attr-defined]
        needed.setdefault(PROVIDER_KEY_ENV[provider], f"{path}.provider")
    return needed


def check_env(config: TenantConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse to start when a key the config needs is absent; names the variable, never a value."""
    for name, field in required_env(config).items():
        if not environ.get(name):
            raise ConfigError(
                f"{field}: environment variable {name} is not set "
                "(put it in a Secret listed in spec.providerSecrets or spec.livekit.credentialsSecret)"
            )

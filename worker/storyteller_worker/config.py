"""The tenant's worker configuration as the worker loads it: `storyteller_api.spec.WorkerConfig`.

The operator renders the stored spec's agent-facing part (defaults applied) as JSON into the tenant's
ConfigMap, plus `tenant` and `namespace`; the models, defaults and rules live in `storyteller_api.spec`.
Here: reading that file, and checking the keys it needs arrived as environment variables (Secrets are
never part of the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from storyteller_api import contract, validation
from storyteller_api.spec import WorkerConfig

__all__ = [
    "ConfigError",
    "WorkerConfig",
    "check_env",
    "load_tenant_config",
    "parse_tenant_config",
    "required_env",
]


class ConfigError(validation.SpecError):
    """A tenant config the worker cannot run; the message names the field or the variable."""


def parse_tenant_config(data: Mapping[str, Any]) -> WorkerConfig:
    """Validate a rendered config; raise ConfigError with one line naming the first bad field."""
    return validation.parse(WorkerConfig, data, ConfigError)


def load_tenant_config(path: str | os.PathLike[str] | None = None) -> WorkerConfig:
    """Read the tenant config from `path`, else $STORYTELLER_CONFIG, else the in-pod default."""
    file = Path(path or os.environ.get(contract.CONFIG_PATH_ENV) or contract.DEFAULT_CONFIG_PATH)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {file} not found (set {contract.CONFIG_PATH_ENV})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {file} is not JSON: line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a JSON object")
    return parse_tenant_config(data)


def required_env(config: WorkerConfig) -> dict[str, str]:
    """Environment variable → the first field that needs it (LiveKit credentials, provider keys)."""
    needed = {name: "livekit.credentialsSecret" for name in contract.LIVEKIT_KEY_ENVS}
    for path, block in config.model_blocks():
        provider: str = block.provider
        needed.setdefault(contract.PROVIDER_KEY_ENV[provider], f"{path}.provider")
    return needed


def check_env(config: WorkerConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse to start when a key the config needs is absent; names the variable, never a value."""
    for name, field in required_env(config).items():
        if not environ.get(name):
            raise ConfigError(
                f"{field}: environment variable {name} is not set "
                "(put it in a Secret listed in spec.providerSecrets or spec.livekit.credentialsSecret)"
            )


def job_memory_limit_mb(environ: Mapping[str, str] = os.environ) -> int:
    """The memory (MiB) one job process may use before the worker kills it; 0: no limit.

    The operator sets it from the pod's memory limit (one session's share), so a runaway session ends
    alone instead of the kernel killing the whole pod and every call on it.
    """
    raw = environ.get(contract.JOB_MEMORY_LIMIT_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{contract.JOB_MEMORY_LIMIT_ENV} must be a whole number of MiB") from None
    if value < 0:
        raise ConfigError(f"{contract.JOB_MEMORY_LIMIT_ENV} must not be negative")
    return value

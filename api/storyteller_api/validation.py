"""Validation with one line of error naming the field (dotted camelCase path), never the value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """A spec or config that cannot run; the message names the field (dotted camelCase path)."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(("function-", "literal[", "union[")):
            path += f".{part}" if path else part
    return path


def first_error(err: ValidationError) -> str:
    """One line naming the field. The offending value is left out: it may be a secret."""
    first = err.errors(include_url=False, include_input=False)[0]
    path = _field_path(tuple(first["loc"]))
    msg = str(first["msg"]).removeprefix("Value error, ")
    # Validators that know a more precise field say it as "field: message".
    if ": " in msg and msg.split(": ", 1)[0].replace(".", "").isalnum():
        sub, msg = msg.split(": ", 1)
        path = f"{path}.{sub}" if path else sub
    return f"{path}: {msg}" if path else msg


def parse(model: type[M], data: Mapping[str, Any], error: type[SpecError] = SpecError) -> M:
    """Validate `data` as `model`; raise `error` with one line naming the first bad field."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise error(first_error(err)) from None

"""Fixtures every cluster test module shares without importing them."""

from __future__ import annotations

import pytest


@pytest.fixture
def operator_env() -> dict[str, str]:
    """Extra STORYTELLER_OPERATOR_* settings for the `operator` fixture; a test module overrides this."""
    return {}

"""The operator's job memory limit reaches the LiveKit AgentServer; bad values are refused by name."""

from __future__ import annotations

import pytest

from storyteller_api import contract
from storyteller_devkit.tenant_config import tenant_dict
from storyteller_worker.config import ConfigError, job_memory_limit_mb, parse_tenant_config
from storyteller_worker.server.tenant_server import build_server


def test_unset_or_empty_means_no_limit() -> None:
    assert job_memory_limit_mb({}) == 0
    assert job_memory_limit_mb({contract.JOB_MEMORY_LIMIT_ENV: " "}) == 0
    assert job_memory_limit_mb({contract.JOB_MEMORY_LIMIT_ENV: "560"}) == 560


@pytest.mark.parametrize("raw", ["lots", "1.5", "-1"])
def test_a_bad_value_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=contract.JOB_MEMORY_LIMIT_ENV):
        job_memory_limit_mb({contract.JOB_MEMORY_LIMIT_ENV: raw})


def test_the_server_kills_a_job_above_the_limit_and_warns_before() -> None:
    tenant = parse_tenant_config(tenant_dict("http://127.0.0.1:1/v1"))
    limited = build_server(tenant, job_memory_limit_mb=560)
    assert (limited._job_memory_limit_mb, limited._job_memory_warn_mb) == (560, 448)
    unlimited = build_server(tenant)
    assert unlimited._job_memory_limit_mb == 0

"""`python -m storyteller_worker start|dev|console ...`: the tenant's worker.

The tenant config and the environment are checked before the worker registers with LiveKit: a bad
config exits with status 2 and one line naming the field, never a key's value.
"""

from __future__ import annotations

import os
import sys

from storyteller_api.contract import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, READY_PORT_ENV

from .config import ConfigError, check_env, job_memory_limit_mb, load_tenant_config
from .telemetry.metrics_dir import prepare_multiprocess_dir, start_reaper

EXIT_CONFIG_ERROR = 2


def main() -> int:
    config_path = os.environ.setdefault(CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH)  # job processes read it too
    try:
        tenant = load_tenant_config(config_path)
        check_env(tenant)
        memory_limit_mb = job_memory_limit_mb()
    except ConfigError as err:
        print(f"storyteller-worker: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR

    # Before the framework imports prometheus_client: job processes' metrics reach /metrics only so.
    # Only the main process reaps: job processes never run main().
    start_reaper(prepare_multiprocess_dir())
    # Imported after the checks: importing the framework takes seconds, a bad config should not wait.
    from livekit.agents import cli

    from .server.readiness import READY_PORT
    from .server.tenant_server import HTTP_PORT, build_server

    # The ports are fixed in a pod (probes point at them); several local workers need their own, and
    # one whose health port is moved serves readiness only where told (STORYTELLER_READY_PORT).
    http_port = int(os.environ.get("STORYTELLER_HTTP_PORT", HTTP_PORT))
    ready_env = os.environ.get(READY_PORT_ENV)
    ready_port = int(ready_env) if ready_env else (READY_PORT if http_port == HTTP_PORT else None)
    server = build_server(
        tenant, http_port=http_port, ready_port=ready_port, job_memory_limit_mb=memory_limit_mb
    )
    cli.run_app(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())

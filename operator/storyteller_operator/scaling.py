"""How many workers a tenant's pool should run: the one place a scaling policy plugs in.

Today the pool is static: minReplicas (which `kubectl scale sd/NAME --replicas=N` sets through the scale
subresource), or zero when suspended. A later autoscaler (builtin / keda) replaces the body of
`desired_replicas` with a policy over observed sessions; callers already take its answer from here and
report it as status.desiredReplicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def desired_replicas(spec: Mapping[str, Any]) -> int:
    if spec.get("suspend"):
        return 0
    pool = spec.get("pool") or {}
    return int(pool.get("minReplicas", 1))

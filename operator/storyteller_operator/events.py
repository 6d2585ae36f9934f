"""Which Kubernetes Events a reconcile posts: pure rules over the old and new status.

Events say what the operator did and which transitions happened, never anything about an unchanged
reconcile (a watch-happy operator that posts on every pass buries the useful ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from storyteller_operator import revisions
from storyteller_operator import status as status_mod


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def transitions(
    old: Mapping[str, Any], new: Mapping[str, Any], changed: Sequence[str], *, secrets_changed: bool = False
) -> list[Event]:
    """Events for what was applied and for the status's transitions (Degraded, Ready, keda, suspend).

    `secrets_changed`: a referenced Secret changed (a rotated key) and the pool rolls for it.
    """
    out: list[Event] = []
    if changed:
        message = "applied " + ", ".join(changed)
        revision = new.get("revision")
        if old.get("revision") and revision != old.get("revision"):
            change = revisions.entry(revisions.entries(new), revision).get(revisions.CHANGE, "")
            message += f"; revision {revision} ({change}), rolling the pool"
        elif old.get("configHash") and old.get("configHash") != new["configHash"]:
            message += (
                f"; worker config changed ({old['configHash']} → {new['configHash']}), rolling the pool"
            )
        elif secrets_changed:
            # The pods read a Secret by name: every revision's pods get the new key (not canaried).
            message += (
                "; a referenced Secret changed, rolling every pod onto it (a canary's and the stable "
                "revision's alike: a Secret rotation is not canaried)"
            )
        out.append(Event("Normal", "Applied", message))
    old_deg = status_mod.condition(old, status_mod.DEGRADED) or {}
    new_deg = status_mod.condition(new, status_mod.DEGRADED) or {}
    if new_deg.get("status") == "True" and (
        old_deg.get("status") != "True" or old_deg.get("message") != new_deg.get("message")
    ):
        out.append(Event("Warning", str(new_deg["reason"]), str(new_deg["message"])))
    elif old_deg.get("status") == "True" and new_deg.get("status") != "True":
        out.append(Event("Normal", "Recovered", f"no longer {old_deg.get('reason')}"))
    old_ready = status_mod.condition(old, status_mod.READY) or {}
    new_ready = status_mod.condition(new, status_mod.READY) or {}
    if new_ready.get("status") == "True" and old_ready.get("status") != "True":
        out.append(Event("Normal", "PoolReady", str(new_ready.get("message"))))
    # ScalingLimited at a bound is routine; a KEDA tenant without KEDA needs somebody to act.
    old_lim = status_mod.condition(old, status_mod.SCALING_LIMITED) or {}
    new_lim = status_mod.condition(new, status_mod.SCALING_LIMITED) or {}
    if str(new_lim.get("reason", "")).startswith("Keda") and new_lim.get("reason") != old_lim.get("reason"):
        out.append(Event("Warning", str(new_lim["reason"]), str(new_lim["message"])))
    if new.get("phase") == "Suspended" and old.get("phase") != "Suspended":
        out.append(Event("Normal", "Suspended", "pool scaled to zero (spec.suspend)"))
    return out

"""Which tenants register which agent name on which LiveKit server: two that share both would take each
other's calls (LiveKit dispatches a room to any worker registered under the name). The tenant that claimed
the pair first (the older creationTimestamp, then the smaller uid) keeps it; any later one is held at zero
workers and told, without naming the first (it may be another team's, in another namespace).

Filled from the tenant watch (every tenant the operator sees, in every namespace it watches); read by
observe.py. Pure apart from a lock: no API calls.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

Key = tuple[str, str]  # (namespace, name)
Identity = tuple[str, str]  # (the LiveKit server, normalised; the agent name)
Claim = tuple[str, str]  # (creationTimestamp as RFC 3339 UTC, uid): the earlier claim sorts first

# The SDKs turn https:// into wss:// (and http:// into ws://): the same server either way.
_SCHEMES = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
_DEFAULT_PORTS = {"wss": 443, "ws": 80}


def server_of(url: str) -> str:
    """The LiveKit server a URL names, so that spellings of one server compare equal."""
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    host = (parts.hostname or "").lower()
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


def identity_of(obj: Mapping[str, Any]) -> Identity | None:
    """The tenant's (server, agent name) as stored; None when its spec names no LiveKit URL."""
    spec = obj.get("spec") or {}
    url = (spec.get("livekit") or {}).get("url")
    if not isinstance(url, str) or not url:
        return None
    name = spec.get("agentName") or (obj.get("metadata") or {}).get("name") or ""
    return server_of(url), str(name)


def claim_of(obj: Mapping[str, Any]) -> Claim:
    """When the tenant was created, and its uid: who came first."""
    meta = obj.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("uid") or "")


class AgentNames:
    def __init__(self) -> None:
        self._identities: dict[Key, Identity] = {}
        self._claims: dict[Key, Claim] = {}
        self._guard = threading.Lock()

    def _sharing(self, identity: Identity | None, key: Key) -> set[Key]:
        if identity is None:
            return set()
        return {k for k, i in self._identities.items() if i == identity and k != key}

    def update(self, key: Key, identity: Identity | None, claim: Claim = ("", "")) -> set[Key]:
        """Record the tenant's identity (None: it is gone) and claim; return the other tenants whose
        conflicts changed (they must be reconciled again: one may now be first, or no longer alone)."""
        with self._guard:
            before = self._sharing(self._identities.get(key), key)
            if identity is None:
                self._identities.pop(key, None)
                self._claims.pop(key, None)
            else:
                self._identities[key] = identity
                self._claims[key] = claim
            after = self._sharing(identity, key)
        return before ^ after

    def held(self, key: Key) -> bool:
        """Whether another tenant claimed this tenant's agent name on its server first."""
        with self._guard:
            mine = (self._claims.get(key, ("", "")), key)
            return any(
                (self._claims.get(k, ("", "")), k) < mine
                for k in self._sharing(self._identities.get(key), key)
            )

    def others(self, key: Key) -> list[Key]:
        """The other tenants registering the same agent name on the same server, sorted."""
        with self._guard:
            return sorted(self._sharing(self._identities.get(key), key))

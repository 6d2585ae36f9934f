"""Which optional APIs the cluster serves (the Prometheus Operator's PodMonitor, KEDA's ScaledObject).

Cached: re-checked every few minutes while served, every few seconds while absent, so a user installing
KEDA waits seconds, not minutes, and a steady cluster costs one discovery call per API per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kubernetes.client import ApiException

from storyteller_operator.kube import error_text

log = logging.getLogger("storyteller.operator.discovery")

API_RECHECK_SECONDS = 300.0  # how stale "is this optional API served?" may be once it is
API_ABSENT_RECHECK_SECONDS = 30.0  # sooner while it is not: a user installing KEDA waits this long at most

Api = tuple[str, str]  # (group/version, kind)


class ApiDiscovery:
    def __init__(
        self, has_api: Callable[[str, str], bool], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._has_api = has_api
        self._clock = clock
        self._checked: dict[Api, tuple[bool, float]] = {}  # api → (served, when checked)
        self._guard = threading.Lock()

    def served(self, api: Api) -> bool:
        """Whether the API server serves `api`; a failed check keeps the last answer until the next."""
        with self._guard:
            served, checked = self._checked.get(api, (False, -1e12))
        now = self._clock()
        if now - checked < (API_RECHECK_SECONDS if served else API_ABSENT_RECHECK_SECONDS):
            return served
        try:
            served = self._has_api(*api)
        except ApiException as err:
            log.warning("cannot discover an API", extra={"api": "/".join(api), "error": error_text(err)})
        with self._guard:
            self._checked[api] = (served, now)
        return served

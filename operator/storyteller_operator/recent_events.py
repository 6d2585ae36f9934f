"""The Events this process posted recently, so an identical one updates the first instead of adding another.

Like client-go's EventCorrelator (`kubectl describe` shows "x5 over 3m"): an Event with the same involved
object, type, reason and message as one posted within `window` becomes a PATCH of that Event's count and
lastTimestamp. Pure bookkeeping, in memory: after a restart the next repeat creates a new Event, as
client-go does. `kube.Kube.post_event` does the I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

# (involved object's uid or namespace/name, type, reason, sha256 of the message): the message may be 1 KiB.
EventKey = tuple[str, str, str, str]

# The API server's default --event-ttl: an Event not updated for longer is gone anyway (a PATCH would 404).
WINDOW_SECONDS = 3600.0
# Bounds the memory of an operator whose tenants post many distinct Events (client-go's cache holds 4096).
MAX_ENTRIES = 4096


def event_key(involved: str, type: str, reason: str, message: str) -> EventKey:
    return (involved, type, reason, hashlib.sha256(message.encode()).hexdigest())


@dataclasses.dataclass(frozen=True)
class Posted:
    name: str  # the Event object's metadata.name
    count: int  # its count as last written
    seen: float  # the clock when it was last written


class RecentEvents:
    """Thread-safe: reconciles of different tenants post Events concurrently."""

    def __init__(
        self,
        *,
        window: float = WINDOW_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[EventKey, Posted] = OrderedDict()
        self._guard = threading.Lock()

    def previous(self, key: EventKey) -> Posted | None:
        """The Event to update for a repeat of `key`, or None: post a new one."""
        with self._guard:
            posted = self._entries.get(key)
            if posted is None:
                return None
            if self._clock() - posted.seen > self.window:
                del self._entries[key]
                return None
            return posted

    def remember(self, key: EventKey, name: str, count: int) -> None:
        """`name` now holds `count` occurrences of `key` (just created, or just patched)."""
        with self._guard:
            self._entries[key] = Posted(name, count, self._clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)  # the least recently posted

    def forget(self, key: EventKey) -> None:
        """The Event is gone (expired, deleted): the next repeat creates a new one."""
        with self._guard:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)

"""The typed userdata every agent of one session shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StoryData:
    """What the intro learns and the story uses; shared by every agent of one session."""

    name: str | None = None
    location: str | None = None

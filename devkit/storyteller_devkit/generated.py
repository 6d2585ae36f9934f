"""Generated files kept in the repository: write them, or (`--check`, a unit test) say which are stale."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def sync(files: Mapping[Path, str], *, check: bool, command: str) -> int:
    """Write every file, or with `check` write nothing and list those that differ; the exit status.

    `command`: what regenerates them, for the message.
    """
    stale = []
    for path, text in files.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date (run {command}):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0

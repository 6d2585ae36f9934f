"""`python -m storyteller_worker`: a bad config or a missing key stops it before it registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from storyteller_devkit.tenant_config import tenant_dict

SECRET = "sk-live-do-not-print-0123456789"


def _run(
    tmp_path: Path, config: dict[str, Any] | str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tenant.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_SECRET"))}
    return subprocess.run(
        [sys.executable, "-m", "storyteller_worker", "start"],
        env={**clean, "STORYTELLER_CONFIG": str(path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


KEYS = {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": SECRET, "OPENAI_API_KEY": SECRET}


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        (
            tenant_dict("http://127.0.0.1:1/v1", pool={"sessionsPerWorker": 0}),
            {**KEYS, "DEEPGRAM_API_KEY": SECRET},
            "pool.sessionsPerWorker:",
        ),
        (
            tenant_dict("http://127.0.0.1:1/v1"),
            KEYS,  # DEEPGRAM_API_KEY missing for the intro's deepgram STT
            "intro.stt.provider: environment variable DEEPGRAM_API_KEY is not set",
        ),
        ("[1, 2]", KEYS, "must hold a JSON object"),
    ],
    ids=["invalid field", "missing provider key", "not an object"],
)
def test_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path, config: dict[str, Any] | str, env: dict[str, str], expected: str
) -> None:
    proc = _run(tmp_path, config, env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("storyteller-worker: config error: ")
    assert expected in lines[0]
    assert SECRET not in proc.stderr + proc.stdout

"""`make demo` (text stage) runs the example tenant's whole flow and prints its transcript."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_text_demo_prints_the_whole_conversation() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "text_session.py")], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    lines = [line.strip() for line in out.splitlines()]
    assert lines.index("-- handoff intro_agent -> story_agent --") < next(
        i for i, line in enumerate(lines) if "Once upon a time in Lisbon, Ada" in line
    )
    assert "agent: Goodbye, Ada! Thank you for listening." in lines
    assert "session ended; room 'fake-room' deleted: True" in out
    assert "StoryData(name='Ada', location='Lisbon')" in out
    # The example tenant as written: the story on the realtime model, through the Realtime API websocket.
    assert "StoryPhase: llm openai-realtime gpt-realtime, voice echo" in lines
    assert "realtime API: 1 session(s), 3 spoken answer(s), tool calls ['story_finished']" in lines

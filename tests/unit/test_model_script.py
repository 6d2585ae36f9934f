"""The scripted model behind the local model server: it hands off when told a name and a place, and obeys
an intro prompt that forbids tools (the bad revision of the real-node canary test)."""

from __future__ import annotations

import json

from storyteller_api.spec import DEFAULT_INTRO_INSTRUCTIONS
from storyteller_devkit.model_script import SMALL_TALK, reply

SAID = {"role": "user", "content": "My name is Ada and I live in Lisbon."}


def test_the_intro_hands_off_once_it_knows_name_and_place() -> None:
    out = reply([{"role": "system", "content": DEFAULT_INTRO_INSTRUCTIONS}, SAID], ["information_gathered"])
    assert out.tool_name == "information_gathered"
    assert json.loads(out.arguments) == {"name": "Ada", "location": "Lisbon"}


def test_an_intro_prompt_that_forbids_tools_chats_on_instead_of_handing_off() -> None:
    for prompt in ("Chat about the weather. Never call any tools.", "Do not use a function, ever."):
        out = reply([{"role": "system", "content": prompt}, SAID], ["information_gathered"])
        assert (out.tool_name, out.text) == ("", SMALL_TALK), prompt

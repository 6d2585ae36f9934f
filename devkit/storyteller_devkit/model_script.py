"""The scripted "model" behind the local model server: a pure function of the messages and tools.

It plays the storyteller flow the way a real model would, so the real plugin, tools and handoff run:
- offered `information_gathered` and told "my name is X ... (live in|from) Y" → calls it, unless its
  instructions say never to call a tool (a bad intro prompt): then it chats on instead (SMALL_TALK);
- offered `story_finished` and told "no thanks / that is all / goodbye" → calls it;
- answering a tool's output (the intro's handoff bridge) → says it;
- otherwise a short text fitting the agent (greeting, story, goodbye) read from its instructions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from storyteller_api.spec import DEFAULT_BRIDGE

_NAME = re.compile(r"\bmy name is ([A-Z][\w-]*)", re.IGNORECASE)
_PLACE = re.compile(r"\b(?:live in|living in|from|in) ([A-Z][\w-]*(?: [A-Z][\w-]*)*)")
_DONE = re.compile(r"\b(no thanks|that is all|that's all|goodbye|bye|the end|stop)\b", re.IGNORECASE)
_USER_IN_INSTRUCTIONS = re.compile(r"The user's name is ([^,]+), from ([^.]+)\.")
_GOODBYE = re.compile(r"say goodbye to (\S+)")
# A prompt that forbids tools: a real model obeys it and never hands off.
_NO_TOOLS = re.compile(r"\b(?:never|do not|don't) (?:call|use) (?:a |any )?(?:tools?|functions?)\b", re.I)

GREETING = "Hello, I am Echo, your storyteller! What is your name, and where are you from?"
ASK_AGAIN = "Lovely to hear you! Before we begin: what is your name, and where do you live?"
SMALL_TALK = "How lovely to meet you! Tell me more about where you live."
# The story goes on one part per turn, then keeps asking whether to go on.
STORY = [
    "Once upon a time in {place}, {name} found a door that hummed. Should they open it, or walk on?",
    "{name} opened the door, and the sea of {place} sang in the voice of an old friend. Shall I go on?",
    "The song faded into the evening, and {name} walked home smiling. Would you like another story?",
]


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_name: str = ""
    arguments: str = ""

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_name else "stop"

    def tool_call_json(self) -> dict[str, Any]:
        return {
            "id": f"call_{self.tool_name}",
            "type": "function",
            "function": {"name": self.tool_name, "arguments": self.arguments},
        }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def reply(messages: list[dict[str, Any]], tools: list[str]) -> Reply:
    last = messages[-1] if messages else {}
    instructions = " ".join(
        _text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )

    if goodbye := _GOODBYE.search(instructions):
        return Reply(text=f"Goodbye, {goodbye.group(1)}! Thank you for listening.")

    if last.get("role") == "user":
        said = _text(last.get("content"))
        name, place = _NAME.search(said), _PLACE.search(said)
        if "information_gathered" in tools and name and place:
            if _NO_TOOLS.search(instructions):
                return Reply(text=SMALL_TALK)
            args = json.dumps({"name": name.group(1), "location": place.group(1)})
            return Reply(tool_name="information_gathered", arguments=args)
        if "story_finished" in tools and _DONE.search(said):
            return Reply(tool_name="story_finished", arguments="{}")

    if "story_finished" in tools:
        who = _USER_IN_INSTRUCTIONS.search(instructions)
        name_, place_ = (who.group(1), who.group(2)) if who else ("friend", "a faraway land")
        # The parts told so far; a bridge the intro played into this agent's history is not one.
        told = sum(
            1
            for m in messages
            if m.get("role") == "assistant" and _text(m.get("content")) not in ("", DEFAULT_BRIDGE)
        )
        return Reply(text=STORY[min(told, len(STORY) - 1)].format(name=name_, place=place_))
    if last.get("role") == "tool":
        return Reply(text=_text(last.get("content")) or DEFAULT_BRIDGE)
    if last.get("role") == "user":
        return Reply(text=ASK_AGAIN)
    return Reply(text=GREETING)


def words(text: str) -> list[str]:
    """The text split into streamable pieces, spaces kept, so the client reassembles it exactly."""
    return re.findall(r"\S+\s*", text) or [text]

"""The fakes' one "model": a deterministic reply computed from what the request asked.

Each fake turns its provider's request into a `Prompt` and its `Reply` back into the provider's
response format, so every provider is tested against the same behaviour:
- tools offered and the last turn is the user's → one call per tool (parallel calls), each
  argument of the tool's required string properties set to the user's last text;
- tool results in the last turn → "Results: " and the results joined by "; ";
- JSON wanted → `{"echo": <user's last text>}`;
- otherwise → "You said: " + the user's last text, cut at a stop sequence or after
  `max_tokens` words (finish reason "length").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Tool:
    name: str
    parameters: dict[str, Any]


@dataclass
class Prompt:
    last_user_text: str
    tool_results: list[str] = field(default_factory=list)  # of the last turn, in order
    tools: list[Tool] = field(default_factory=list)
    tool_choice_none: bool = False
    wants_json: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    system: str | None = None


@dataclass
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    text: str
    calls: list[Call]
    finish: str  # "stop" | "length" | "tool_calls"
    prompt_tokens: int
    completion_tokens: int

    def words(self) -> list[str]:
        """The text in streaming pieces (each word with its following space)."""
        parts = self.text.split(" ")
        return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def reply(prompt: Prompt) -> Reply:
    prompt_tokens = len(prompt.last_user_text.split()) + sum(
        len(r.split()) for r in prompt.tool_results
    )
    if prompt.tool_results:
        return _text("Results: " + "; ".join(prompt.tool_results), prompt, prompt_tokens)
    if prompt.tools and not prompt.tool_choice_none:
        calls = [
            Call(
                id=f"call_{i}_{tool.name}",
                name=tool.name,
                arguments={
                    name: prompt.last_user_text
                    for name in tool.parameters.get("required", [])
                    if tool.parameters.get("properties", {}).get(name, {}).get("type") == "string"
                },
            )
            for i, tool in enumerate(prompt.tools)
        ]
        return Reply("", calls, "tool_calls", prompt_tokens, 10 * len(calls))
    if prompt.wants_json:
        return _text(orjson.dumps({"echo": prompt.last_user_text}).decode(), prompt, prompt_tokens)
    return _text("You said: " + prompt.last_user_text, prompt, prompt_tokens)


def _text(text: str, prompt: Prompt, prompt_tokens: int) -> Reply:
    finish = "stop"
    for stop in prompt.stop:
        if stop in text:
            text = text[: text.index(stop)]
    words = text.split(" ")
    if prompt.max_tokens is not None and len(words) > prompt.max_tokens:
        text, finish = " ".join(words[: prompt.max_tokens]), "length"
    return Reply(text, [], finish, prompt_tokens, len(text.split()))

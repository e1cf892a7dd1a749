"""A streamed answer put back together as the one body it would have been unstreamed."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def assemble_stream(chunks: list[Json]) -> Json:
    """The chat (or completions) body equivalent to `chunks`: texts joined, tool-call
    fragments merged by index, the last finish reason and the usage kept."""
    if not chunks:
        return {}
    choices: dict[int, Json] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or ():
            index = part.get("index", 0)
            choice = choices.setdefault(index, {"index": index, "finish_reason": None})
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]
            if "text" in part:  # completions
                choice["text"] = choice.get("text", "") + (part["text"] or "")
            else:
                _merge_delta(choice.setdefault("message", {"role": "assistant"}), part)
    first = chunks[0]
    body: Json = {
        "id": first.get("id"),
        "object": "chat.completion" if any("message" in c for c in choices.values())
        else "text_completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
    }  # fmt: skip
    if usage:
        body["usage"] = usage
    return body


def _merge_delta(message: Json, part: Json) -> None:
    delta = part.get("delta") or {}
    if delta.get("content"):
        message["content"] = (message.get("content") or "") + delta["content"]
    for call in delta.get("tool_calls") or ():
        calls = message.setdefault("tool_calls", [])
        index = call.get("index", 0)
        while len(calls) <= index:
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        target = calls[index]
        target["id"] = call.get("id") or target["id"]
        function = call.get("function") or {}
        target["function"]["name"] += function.get("name") or ""
        target["function"]["arguments"] += function.get("arguments") or ""

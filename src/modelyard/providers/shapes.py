"""OpenAI-shaped answers and the parts of OpenAI requests every translating provider reads.

Translators (anthropic, bedrock, gemini, cohere, ...) build their results with these, so
every provider's answer has the same fields, ids and finish reasons.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from modelyard.errors import BadRequest
from modelyard.schemas.query import ChatRequest, Message

Json = dict[str, Any]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> Json:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class ToolCallOut:
    """A tool call as the model made it: arguments already a JSON string."""

    id: str
    name: str
    arguments: str

    def as_json(self) -> Json:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def chat_completion(
    *,
    model: str,
    content: str | None,
    finish_reason: FinishReason | None,
    usage_: Json | None,
    tool_calls: Iterable[ToolCallOut] = (),
    id: str | None = None,
) -> Json:
    """A non-streamed chat completion with one choice."""
    calls = [c.as_json() for c in tool_calls]
    message: Json = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = calls
    body: Json = {
        "id": id or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


@dataclass
class ChunkWriter:
    """Makes the chunks of one streamed chat completion, all with the same id and time."""

    model: str
    id: str = field(default_factory=new_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _started: bool = False

    def _chunk(self, choices: list[Json], **extra: Any) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def delta(self, **delta: Any) -> Json:
        """A chunk carrying part of the message; the first one also carries the role."""
        if not self._started:
            self._started = True
            delta = {"role": "assistant", **delta}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def text(self, text: str) -> Json:
        return self.delta(content=text)

    def tool_call_start(self, index: int, call_id: str, name: str) -> Json:
        """The first chunk of a tool call: its id and name, arguments still empty."""
        return self.delta(
            tool_calls=[
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        )

    def tool_call_arguments(self, index: int, fragment: str) -> Json:
        return self.delta(tool_calls=[{"index": index, "function": {"arguments": fragment}}])

    def finish(self, reason: FinishReason) -> Json:
        if not self._started:
            self._started = True
            return self._chunk(
                [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": reason}]
            )
        return self._chunk([{"index": 0, "delta": {}, "finish_reason": reason}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> Json:
        """The closing usage chunk (no choices), as OpenAI sends it with include_usage."""
        return self._chunk([], usage=usage(prompt_tokens, completion_tokens))


# -- reading OpenAI requests ----------------------------------------------------------------


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: Json


def function_tools(request: ChatRequest) -> list[FunctionTool]:
    """The request's `tools` as functions, or a 400 naming the malformed one."""
    tools = []
    for i, tool in enumerate(request.tools or ()):
        fn = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise BadRequest(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}."
            )
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"tools[{i}].function.name must be a non-empty string.")
        parameters = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema object.")
        tools.append(FunctionTool(name, fn.get("description"), parameters))
    return tools


@dataclass(frozen=True)
class ToolChoice:
    """`tool_choice` normalised: auto, none, required (any tool), or one named function."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


def tool_choice(request: ChatRequest) -> ToolChoice | None:
    """The request's `tool_choice`, or None when it gave none."""
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return ToolChoice(choice)  # type: ignore[arg-type]
        raise BadRequest("tool_choice must be 'auto', 'none', 'required' or a function.")
    fn = choice.get("function")
    if (
        choice.get("type") == "function"
        and isinstance(fn, dict)
        and isinstance(fn.get("name"), str)
    ):
        return ToolChoice("function", fn["name"])
    raise BadRequest("tool_choice must be {'type': 'function', 'function': {'name': ...}}.")


def parse_arguments(arguments: str, where: str) -> Json:
    """A tool call's JSON-string arguments as an object, as other providers want them."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        raise BadRequest(f"{where}.function.arguments is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise BadRequest(f"{where}.function.arguments must be a JSON object.")
    return parsed


def dump_arguments(arguments: Any) -> str:
    """A provider's tool input (an object) as OpenAI's JSON-string arguments."""
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def system_prompt(messages: Iterable[Message]) -> str | None:
    """The system and developer messages joined, for providers that take the prompt apart."""
    parts = [m.text() for m in messages if m.role in ("system", "developer")]
    return "\n\n".join(parts) if parts else None


def stop_sequences(request: ChatRequest) -> list[str] | None:
    if request.stop is None:
        return None
    return [request.stop] if isinstance(request.stop, str) else list(request.stop)


def json_schema(request: ChatRequest) -> Json | None:
    """The JSON schema the answer must follow (`json_schema` response format), if any."""
    fmt = request.response_format
    if fmt is None or fmt.type != "json_schema" or fmt.json_schema is None:
        return None
    return fmt.json_schema.get("schema")


def wants_json(request: ChatRequest) -> bool:
    fmt = request.response_format
    return fmt is not None and fmt.type in ("json_object", "json_schema")


def passthrough(request: ChatRequest) -> Json:
    """`extra_params` and the unknown top-level keys (the openai client's extra_body)."""
    extras = dict(request.model_extra or {})
    extras.update(request.extra_params or {})
    return extras

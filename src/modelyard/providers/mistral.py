"""`mistral`: Mistral's La Plateforme API, which is OpenAI-like with its own field list.

The API refuses fields it does not document, so the body is built from what it takes rather
than passed on: `seed` is `random_seed`, `tool_choice` `required` is `any`, messages keep only
their documented fields (a tool result also gets the called function's `name`), a JSON schema
response format keeps `name`/`schema`/`strict`, and OpenAI's embeddings `dimensions` is
`output_dimension`. There is no `stream_options`: usage comes on the last chunk of every
stream, and is moved here to a chunk of its own, as OpenAI sends it. Finish reason
`model_length` is `length`; `error` fails the request.

Not supported upstream: `top_k` (ignored: a sampling hint), `logprobs` (refused: the answer
could not carry what was asked). No legacy completions (FIM is not one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, ClassVar

from pydantic import Field

from modelyard.errors import BadRequest, UpstreamError
from modelyard.providers import openai_wire, shapes
from modelyard.providers.base import Json
from modelyard.providers.external import ProviderConfig
from modelyard.providers.openai_compatible import OpenAICompatible
from modelyard.schemas.query import ChatRequest, CompletionRequest, EmbeddingRequest, Message, Task

MISTRAL_API_BASE = "https://api.mistral.ai/v1"
_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}
_FINISH = {"model_length": "length"}
# OpenAI request field → Mistral field, for the fields that pass as they are.
_SAMPLING = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("max_tokens", "max_tokens"),
    ("seed", "random_seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
)


class MistralConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"mistral_api_key": True}

    mistral_api_key: str | None = None
    mistral_api_key_plaintext: str | None = None
    # Ours: the API base including `/v1` (a proxy, a regional host, a test fake).
    mistral_api_base: str | None = Field(default=None, pattern=r"^https?://")


class MistralProvider(OpenAICompatible):
    kind = "mistral"
    config_key = "mistral_config"
    config_model = MistralConfig
    config: MistralConfig
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.EMBEDDINGS})
    stream_options: ClassVar[bool] = False

    def url(self, path: str) -> str:
        return f"{(self.config.mistral_api_base or MISTRAL_API_BASE).rstrip('/')}/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential('mistral_api_key').value()}"}

    def payload(self, request: ChatRequest | CompletionRequest | EmbeddingRequest) -> Json:
        if isinstance(request, ChatRequest):
            return chat_payload(request, self.model.name)
        body = super().payload(request)
        if "dimensions" in body:
            body["output_dimension"] = body.pop("dimensions")
        return body

    async def chat(self, request: ChatRequest) -> Json:
        answer = await super().chat(request)
        for choice in answer.get("choices") or ():
            choice["finish_reason"] = self._finish(choice.get("finish_reason"))
            message = choice.get("message") or {}
            message.pop("prefix", None)  # Mistral's own input flag, echoed back
            if isinstance(message.get("content"), list):  # reasoning models answer in chunks
                message["content"] = _chunk_text(message["content"])
        return answer

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        calls = ToolCallIndexes()
        chunks = openai_wire.usage_apart(super().stream_chat(request))
        async with aclosing(chunks):
            async for chunk in chunks:
                for choice in chunk.get("choices") or ():
                    choice["finish_reason"] = self._finish(choice.get("finish_reason"))
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), list):
                        delta["content"] = _chunk_text(delta["content"])
                    calls.renumber(choice.get("index", 0), delta)
                yield chunk

    def _finish(self, reason: Any) -> Any:
        if reason == "error":
            raise UpstreamError(f"{self.upstream} failed while generating the answer.")
        return _FINISH.get(reason, reason)


def chat_payload(request: ChatRequest, model: str) -> Json:
    """The chat completions body for `request`, with only the fields Mistral documents."""
    if request.logprobs:
        raise BadRequest("Provider 'mistral' cannot return logprobs; leave logprobs unset.")
    body: Json = {"model": model, "messages": messages(request.messages)}
    for ours, theirs in _SAMPLING:
        if getattr(request, ours) is not None:
            body[theirs] = getattr(request, ours)
    if request.stop is not None:
        body["stop"] = request.stop
    if request.n > 1:
        body["n"] = request.n
    if request.stream:
        body["stream"] = True
    body.update(_tools(request))
    if request.response_format is not None:
        body["response_format"] = _response_format(request)
    body.update(shapes.passthrough(request))
    return body


def messages(history: list[Message]) -> list[Json]:
    """OpenAI messages with only the fields Mistral's message types take."""
    names = {c.id: c.function.name for m in history for c in m.tool_calls or ()}
    out: list[Json] = []
    for i, message in enumerate(history):
        role = "system" if message.role == "developer" else message.role
        item: Json = {"role": role}
        if message.content is not None:
            item["content"] = _content(message)
        if role == "assistant" and message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in message.tool_calls
            ]
        if role == "tool":
            if not message.tool_call_id:
                raise BadRequest(f"messages[{i}].tool_call_id is required for a tool message.")
            item["tool_call_id"] = message.tool_call_id
            name = message.name or names.get(message.tool_call_id)
            if name:
                item["name"] = name
            item.setdefault("content", "")
        elif role in ("system", "user"):
            item.setdefault("content", "")
        out.append(item)
    return out


def _content(message: Message) -> str | list[Json]:
    if isinstance(message.content, list):
        return [{"type": "text", "text": part.text} for part in message.content]
    return message.content or ""


def _tools(request: ChatRequest) -> Json:
    declared = shapes.function_tools(request)
    body: Json = {}
    if declared:
        body["tools"] = [_tool(t, request, i) for i, t in enumerate(declared)]
    choice = shapes.tool_choice(request)
    if choice is not None and choice.mode == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        body["tool_choice"] = _TOOL_CHOICE[choice.mode]
    return body


def _tool(tool: shapes.FunctionTool, request: ChatRequest, i: int) -> Json:
    function: Json = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    strict = ((request.tools or [])[i].get("function") or {}).get("strict")
    if isinstance(strict, bool):
        function["strict"] = strict
    return {"type": "function", "function": function}


def _response_format(request: ChatRequest) -> Json:
    fmt = request.response_format
    assert fmt is not None
    if fmt.type != "json_schema" or fmt.json_schema is None:
        return {"type": fmt.type}
    spec = fmt.json_schema
    schema: Json = {"name": spec.get("name") or "response", "schema": spec["schema"]}
    if isinstance(spec.get("strict"), bool):
        schema["strict"] = spec["strict"]
    return {"type": "json_schema", "json_schema": schema}


def _chunk_text(chunks: list[Any]) -> str:
    """The text of Mistral content chunks (thinking and other kinds are left out)."""
    return "".join(
        c.get("text") or "" for c in chunks if isinstance(c, dict) and c.get("type") == "text"
    )


class ToolCallIndexes:
    """OpenAI stream indexes for tool calls: each new call id gets the next index of its choice.

    Mistral sends each call whole in one delta, and its `index` is not documented to count
    calls (it defaults to 0), which would merge parallel calls in OpenAI clients.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], int] = {}
        self._count: dict[int, int] = {}

    def renumber(self, choice: int, delta: Json) -> None:
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict) or not call.get("id"):
                continue  # a continuation keeps the index it came with
            key = (choice, call["id"])
            if key not in self._seen:
                self._seen[key] = self._count.get(choice, 0)
                self._count[choice] = self._seen[key] + 1
            call["index"] = self._seen[key]
            call.setdefault("type", "function")

"""`ai21labs`: Jamba through AI21 Studio's chat completions API, which is OpenAI-like.

Jamba takes fewer fields than OpenAI, so the body is built from the ones its reference lists:
messages with string content, `tools`, `documents` (through `extra_params`),
`response_format` (`json_object`; a JSON schema is asked for as `json_object`), `max_tokens`
(at most 4096: larger values are lowered to it), `temperature`, `top_p`, `stop`, `n`,
`stream`. Answers get the fields OpenAI clients expect (`object`, `created`, `model`).

Streams carry only text deltas, with usage on the last chunk (moved to a chunk of its own, as
OpenAI sends it); a streamed request that offers tools is therefore answered upstream in one
piece and replayed as chunks, so tool calls stream too.

`tool_choice` has no counterpart: `none` leaves the tools out; `required` or a named function
is refused, since the model cannot be made to call. Ignored (sampling hints Jamba lacks):
`seed`, `top_k`, `presence_penalty`, `frequency_penalty`. Refused: `logprobs`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import ClassVar

from pydantic import Field

from modelyard.errors import BadRequest
from modelyard.providers import fanout, openai_wire, shapes
from modelyard.providers.base import Json
from modelyard.providers.external import ProviderConfig
from modelyard.providers.openai_compatible import OpenAICompatible
from modelyard.schemas.query import ChatRequest, CompletionRequest, EmbeddingRequest, Message, Task

AI21_API_BASE = "https://api.ai21.com/studio/v1"
# The reference's ceiling for Jamba's `max_tokens`.
MAX_TOKENS = 4096


class AI21LabsConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"ai21labs_api_key": True}

    ai21labs_api_key: str | None = None
    ai21labs_api_key_plaintext: str | None = None
    # Ours: the API base including `/studio/v1` (a proxy, a test fake).
    ai21labs_api_base: str | None = Field(default=None, pattern=r"^https?://")


class AI21LabsProvider(OpenAICompatible):
    kind = "ai21labs"
    config_key = "ai21labs_config"
    config_model = AI21LabsConfig
    config: AI21LabsConfig
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT})
    stream_options: ClassVar[bool] = False

    def url(self, path: str) -> str:
        return f"{(self.config.ai21labs_api_base or AI21_API_BASE).rstrip('/')}/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential('ai21labs_api_key').value()}"}

    def payload(self, request: ChatRequest | CompletionRequest | EmbeddingRequest) -> Json:
        assert isinstance(request, ChatRequest)  # the only task served
        return chat_payload(request, self.model.name)

    async def chat(self, request: ChatRequest) -> Json:
        answer = await super().chat(request)
        answer.pop("meta", None)  # AI21's request timing
        answer.setdefault("object", "chat.completion")
        answer.setdefault("created", int(time.time()))
        answer.setdefault("model", self.model.name)
        for choice in answer.get("choices") or ():
            for call in (choice.get("message") or {}).get("tool_calls") or ():
                function = call.get("function") or {}
                if not isinstance(function.get("arguments"), str):
                    function["arguments"] = shapes.dump_arguments(function.get("arguments"))
        return answer

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        if not _tools(request):
            return self._stream_text(request)
        if request.n > 1:
            single = request.model_copy(update={"n": 1})
            return fanout.merged_stream([self._replay(single) for _ in range(request.n)])
        return self._replay(request)

    async def _stream_text(self, request: ChatRequest) -> AsyncIterator[Json]:
        created = int(time.time())
        chunks = openai_wire.usage_apart(super().stream_chat(request))
        async with aclosing(chunks):
            async for chunk in chunks:
                chunk.setdefault("object", "chat.completion.chunk")
                chunk.setdefault("created", created)
                chunk.setdefault("model", self.model.name)
                yield chunk

    async def _replay(self, request: ChatRequest) -> AsyncIterator[Json]:
        """A whole answer as the chunks a stream of it would have been."""
        answer = await self.chat(request.model_copy(update={"stream": False}))
        writer = shapes.ChunkWriter(model=answer["model"], id=answer.get("id") or shapes.new_id())
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        yield writer.delta()
        if message.get("content"):
            yield writer.text(message["content"])
        for i, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            yield writer.tool_call_start(i, call.get("id") or "", function.get("name") or "")
            yield writer.tool_call_arguments(i, function.get("arguments") or "{}")
        yield writer.finish(choice.get("finish_reason") or "stop")
        usage = answer.get("usage") or {}
        yield writer.usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def chat_payload(request: ChatRequest, model: str) -> Json:
    """The chat completions body for `request`, with only the fields Jamba documents."""
    if request.logprobs:
        raise BadRequest("Provider 'ai21labs' cannot return logprobs; leave logprobs unset.")
    body: Json = {"model": model, "messages": messages(request.messages)}
    if request.max_tokens is not None:
        body["max_tokens"] = min(request.max_tokens, MAX_TOKENS)
    for name in ("temperature", "top_p", "stop"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.n > 1:
        body["n"] = request.n
    if request.stream:
        body["stream"] = True
    body.update(_tools(request))
    if shapes.wants_json(request):
        body["response_format"] = {"type": "json_object"}
    body.update(shapes.passthrough(request))
    return body


def messages(history: list[Message]) -> list[Json]:
    """OpenAI messages with string content and only the fields Jamba's messages take."""
    out: list[Json] = []
    for i, message in enumerate(history):
        role = "system" if message.role == "developer" else message.role
        item: Json = {"role": role, "content": message.text()}
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
        out.append(item)
    return out


def _tools(request: ChatRequest) -> Json:
    declared = shapes.function_tools(request)
    choice = shapes.tool_choice(request)
    if choice is not None and choice.mode in ("required", "function"):
        raise BadRequest(
            "Provider 'ai21labs' cannot force a tool call (Jamba has no tool_choice); "
            "use tool_choice 'auto' or 'none'."
        )
    if not declared or (choice is not None and choice.mode == "none"):
        return {}
    return {"tools": [_tool(t) for t in declared]}


def _tool(tool: shapes.FunctionTool) -> Json:
    function: Json = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}

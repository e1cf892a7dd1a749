"""`anthropic`: Claude through Anthropic's Messages API (`POST /v1/messages`, version 2023-06-01).

OpenAI-shaped requests become Messages requests: system prompts go to the top-level `system`,
tool calls become `tool_use` blocks and tool results `tool_result` blocks in one user turn, and
same-role turns are merged so user and assistant alternate. Answers and stream events come back
as OpenAI chat completions and chunks.

JSON mode: the Messages API has no `response_format`. Newer models take a native
`output_config.format`, but not every model does, so JSON is asked for the way that works on
every tool-capable Claude model: a tool whose `input_schema` is the wanted schema, which the
model is made to call; its input is returned as the message content. A client that wants the
native feature can send `output_config` in `extra_params`.

Not supported upstream, so ignored: `seed`, `presence_penalty`, `frequency_penalty`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from modelyard.errors import BadRequest, UpstreamError
from modelyard.providers import fanout, http, shapes
from modelyard.providers.base import Json
from modelyard.providers.external import ExternalProvider, ProviderConfig
from modelyard.schemas.query import ChatRequest, Message, Task

ANTHROPIC_API_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# `max_tokens` is required by the API. 4096 is the largest output every Claude model since
# Claude 3 accepts (Claude 3 Haiku and Opus cap output at 4096), so the default is never
# refused, whichever model the entity names; clients that want longer answers say so.
DEFAULT_MAX_TOKENS = 4096
# The tool through which JSON answers are asked for (see the module docstring).
JSON_TOOL = "json_answer"

_FINISH: dict[str, shapes.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}
# The HTTP status each documented error type goes with, for errors sent inside a stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"anthropic_api_key": True}

    anthropic_api_key: str | None = None
    anthropic_api_key_plaintext: str | None = None
    # Ours: the API's origin, without `/v1` (a proxy, a regional host, a test fake).
    anthropic_api_base: str | None = Field(default=None, pattern=r"^https?://")


class AnthropicProvider(ExternalProvider):
    kind = "anthropic"
    config_key = "anthropic_config"
    config_model = AnthropicConfig
    config: AnthropicConfig
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT})

    @property
    def url(self) -> str:
        base = (self.config.anthropic_api_base or ANTHROPIC_API_BASE).rstrip("/")
        return f"{base.removesuffix('/v1')}/v1/messages"

    def headers(self) -> dict[str, str]:
        return {
            "x-api-key": self.credential("anthropic_api_key").value(),
            "anthropic-version": ANTHROPIC_VERSION,
        }

    async def chat(self, request: ChatRequest) -> Json:
        if request.n > 1:  # the API makes one message per call
            single = request.model_copy(update={"n": 1})
            return await fanout.merged_answer([self.chat(single) for _ in range(request.n)])
        call = self.call(self.url, payload(request, self.model.name), self.headers())
        return answer(await self.post_json(call), self.model.name)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        if request.n > 1:
            single = request.model_copy(update={"n": 1})
            return fanout.merged_stream([self._stream(single) for _ in range(request.n)])
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Json]:
        body = {**payload(request, self.model.name), "stream": True}
        call = self.call(self.url, body, self.headers())
        translator = StreamTranslator(shapes.ChunkWriter(model=self.model.name))
        async with aclosing(http.sse_events(self.post_stream(call))) as events:
            async for event in events:
                if event.event == "ping":  # keep-alives; the data may even be empty
                    continue
                data = event.json(self.upstream)
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "error":
                    raise self._stream_failure(data.get("error"))
                for chunk in translator.on(data):
                    yield chunk
                if translator.done:
                    async for _ in events:  # read to the end so the connection is reused
                        pass
                    return
        # Cut short without an error event: as retryable as a dropped connection.
        raise UpstreamError(
            f"{self.upstream} ended the stream before message_stop.", retryable=True
        )

    def _stream_failure(self, error: Any) -> UpstreamError:
        """An `error` event as the error its type stands for (an overload stays retryable)."""
        kind = error.get("type") if isinstance(error, dict) else None
        like = http.status_error(self.upstream, _ERROR_STATUS.get(str(kind), 500), b"")
        message = http.stream_error(self.upstream, error).message
        failure = UpstreamError(
            f"{message} ({kind})" if kind else message,
            status=like.status,
            error_code=like.error_code,
            retryable=like.retryable,
        )
        return self.scrubbed(failure)


# -- requests -------------------------------------------------------------------------------


def payload(request: ChatRequest, model: str) -> Json:
    """The Messages request body for `request`."""
    if request.logprobs:
        raise BadRequest("Provider 'anthropic' cannot return logprobs; leave logprobs unset.")
    body: Json = {
        "model": model,
        "messages": turns(request.messages),
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    system = shapes.system_prompt(request.messages)
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    stop = shapes.stop_sequences(request)
    if stop:
        body["stop_sequences"] = stop
    extras = shapes.passthrough(request)
    parallel = extras.pop("parallel_tool_calls", None)
    if isinstance(extras.get("user"), str):  # OpenAI's end-user id is Anthropic's metadata
        body["metadata"] = {"user_id": extras.pop("user")}
    body.update(tools(request, disable_parallel=parallel is False))
    body.update(extras)
    return body


def turns(messages: Iterable[Message]) -> list[Json]:
    """User and assistant turns, alternating: consecutive same-role messages become one turn."""
    result: list[Json] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue  # sent as the top-level `system`
        role, blocks = _blocks(message, i)
        if not blocks:
            continue  # the API refuses empty turns
        if result and result[-1]["role"] == role:
            result[-1]["content"].extend(blocks)
        else:
            result.append({"role": role, "content": blocks})
    for turn in result:
        # Tool results must open the user turn that follows the tool calls.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return result


def _blocks(message: Message, i: int) -> tuple[str, list[Json]]:
    text = [{"type": "text", "text": t} for t in message.texts() if t]
    if message.role == "tool":
        if not message.tool_call_id:
            raise BadRequest(f"messages[{i}].tool_call_id is required for a tool message.")
        result: Json = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if text:
            result["content"] = message.text()
        return "user", [result]
    if message.role == "assistant":
        calls = [
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": shapes.parse_arguments(
                    call.function.arguments, f"messages[{i}].tool_calls[{j}]"
                ),
            }
            for j, call in enumerate(message.tool_calls or ())
        ]
        return "assistant", text + calls
    return "user", text


def tools(request: ChatRequest, *, disable_parallel: bool = False) -> Json:
    """`tools` and `tool_choice`, with the JSON tool added when JSON was asked for."""
    declared = [_tool(t) for t in shapes.function_tools(request)]
    choice = shapes.tool_choice(request)
    wanted: Json | None = None
    if choice is not None:
        wanted = (
            {"type": "tool", "name": choice.name}
            if choice.mode == "function"
            else {"type": _TOOL_CHOICE[choice.mode]}
        )
    if shapes.wants_json(request):
        declared, wanted = _with_json_tool(request, declared, wanted)
    if not declared:
        return {}
    if disable_parallel and (wanted or {}).get("type") != "none":
        wanted = {**(wanted or {"type": "auto"}), "disable_parallel_tool_use": True}
    return {"tools": declared, "tool_choice": wanted} if wanted else {"tools": declared}


def _tool(tool: shapes.FunctionTool) -> Json:
    out: Json = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        out["description"] = tool.description
    return out


def _with_json_tool(
    request: ChatRequest, declared: list[Json], wanted: Json | None
) -> tuple[list[Json], Json]:
    """The client's tools plus the JSON tool, and a choice that makes the model answer."""
    if any(t["name"] == JSON_TOOL for t in declared):
        raise BadRequest(f"The tool name '{JSON_TOOL}' is reserved for JSON answers.")
    schema = shapes.json_schema(request) or {"type": "object"}
    if schema.get("type") != "object":
        raise BadRequest(
            "Provider 'anthropic' answers in JSON through a tool, whose input is an object: "
            "response_format.json_schema.schema must have type 'object'."
        )
    fmt = request.response_format
    description = (fmt.json_schema or {}).get("description") if fmt else None
    json_tool = {
        "name": JSON_TOOL,
        "description": description or "Give the answer as this JSON object.",
        "input_schema": schema,
    }
    if wanted and wanted["type"] in ("tool", "any"):
        return [*declared, json_tool], wanted  # the client forced its own tools this turn
    if declared and (wanted or {}).get("type") != "none":
        return [*declared, json_tool], {"type": "any"}  # a real tool, or the JSON answer
    return [*declared, json_tool], {"type": "tool", "name": JSON_TOOL}


# -- answers --------------------------------------------------------------------------------


def answer(body: Json, model: str) -> Json:
    """A Messages response as an OpenAI chat completion."""
    text: list[str] = []
    calls: list[shapes.ToolCallOut] = []
    for block in body.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text") or "")
        elif block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
            text.append(shapes.dump_arguments(block.get("input")))
        elif block.get("type") == "tool_use":
            arguments = shapes.dump_arguments(block.get("input"))
            calls.append(shapes.ToolCallOut(block["id"], block["name"], arguments))
    return shapes.chat_completion(
        model=body.get("model") or model,
        content="".join(text),
        finish_reason=finish_reason(body.get("stop_reason"), bool(calls)),
        usage_=shapes.usage(prompt_tokens(body.get("usage") or {}), _output(body)),
        tool_calls=calls,
    )


def finish_reason(stop_reason: str | None, called_tools: bool) -> shapes.FinishReason:
    reason = _FINISH.get(stop_reason or "end_turn", "stop")
    # A call of the JSON tool alone is an answer, not a tool call.
    return "stop" if reason == "tool_calls" and not called_tools else reason


def prompt_tokens(usage: Json) -> int:
    """All input tokens: `input_tokens` leaves out what was written to or read from the cache."""
    return sum(
        usage.get(key) or 0
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def _output(body: Json) -> int:
    return int((body.get("usage") or {}).get("output_tokens") or 0)


@dataclass
class StreamTranslator:
    """Turns Messages stream events into OpenAI chunks, one event at a time."""

    writer: shapes.ChunkWriter
    done: bool = False
    # Content block index → "text", "json" (the JSON tool) or the OpenAI tool call index.
    _blocks: dict[int, str | int] = field(default_factory=dict)
    _calls: int = 0
    _usage_seen: Json = field(default_factory=dict)
    _stop: str | None = None

    def on(self, event: Json) -> list[Json]:
        handler = getattr(self, f"_on_{event.get('type')}", None)
        return handler(event) if handler else []  # unknown events are skipped, as documented

    def _on_message_start(self, event: Json) -> list[Json]:
        message = event.get("message") or {}
        self.writer.model = message.get("model") or self.writer.model
        self._usage(message.get("usage"))
        return []

    def _on_content_block_start(self, event: Json) -> list[Json]:
        block, index = event.get("content_block") or {}, event.get("index", 0)
        if block.get("type") == "text":
            self._blocks[index] = "text"
            return [self.writer.text(block["text"])] if block.get("text") else []
        if block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
            self._blocks[index] = "json"
        elif block.get("type") == "tool_use":
            self._blocks[index] = self._calls
            self._calls += 1
            return [self.writer.tool_call_start(self._calls - 1, block["id"], block["name"])]
        return []  # thinking and server-tool blocks have no OpenAI counterpart

    def _on_content_block_delta(self, event: Json) -> list[Json]:
        delta, target = event.get("delta") or {}, self._blocks.get(event.get("index", 0))
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self.writer.text(delta["text"])]
        fragment = delta.get("partial_json") if delta.get("type") == "input_json_delta" else None
        if not fragment:
            return []
        if target == "json":
            return [self.writer.text(fragment)]
        if isinstance(target, int):
            return [self.writer.tool_call_arguments(target, fragment)]
        return []

    def _on_message_delta(self, event: Json) -> list[Json]:
        self._stop = (event.get("delta") or {}).get("stop_reason") or self._stop
        self._usage(event.get("usage"))
        return []

    def _on_message_stop(self, event: Json) -> list[Json]:
        self.done = True
        return [
            self.writer.finish(finish_reason(self._stop, self._calls > 0)),
            self.writer.usage(
                prompt_tokens(self._usage_seen), int(self._usage_seen.get("output_tokens") or 0)
            ),
        ]

    def _usage(self, usage: Any) -> None:
        # Counts are cumulative, and a message_delta may leave the input counts out (null).
        if isinstance(usage, dict):
            self._usage_seen.update({k: v for k, v in usage.items() if v is not None})

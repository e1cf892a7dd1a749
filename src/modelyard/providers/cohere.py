"""`cohere`: Command models through Cohere's Chat v2 API, and Embed v2 for embeddings.

OpenAI-shaped requests become `POST /v2/chat` bodies: `top_p`/`top_k` are `p`/`k`, `stop` is
`stop_sequences`, tool results are `tool` messages of text blocks, and the text an assistant
wrote next to its tool calls is its `tool_plan`. Answers and the typed stream events
(`message-start` ... `message-end`) come back as OpenAI chat completions and chunks; the model's
`tool_plan` is shown as the message content, so it goes back as `tool_plan` on the next turn.

`tool_choice` is `REQUIRED` or `NONE` upstream: a named function is asked for by offering only
that function and requiring a call. `n` > 1 is made of single-choice calls. Not supported
upstream, so refused: `logprobs` (Cohere's differ in shape and are not translated).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from modelyard.errors import BadRequest, UpstreamError
from modelyard.providers import fanout, http, shapes
from modelyard.providers.base import Json
from modelyard.providers.external import ExternalProvider, ProviderConfig
from modelyard.schemas.query import ChatRequest, EmbeddingRequest, Message, Task

COHERE_API_BASE = "https://api.cohere.com"
# Embed v2 takes at most 96 texts a call; longer inputs are sent in batches.
EMBED_BATCH = 96
# Required by v3+ embedding models; "search_document" suits the stored side of a search,
# the most common use. Clients choose another with `extra_params: {"input_type": ...}`.
DEFAULT_INPUT_TYPE = "search_document"
# The API's bounds for `p`; OpenAI allows 0 < top_p <= 1, and 1 (no cut) is its usual value.
P_MIN, P_MAX = 0.01, 0.99

_FINISH: dict[str, shapes.FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TIMEOUT": "length",  # cut short by the upstream's time limit: an incomplete answer
    "TOOL_CALL": "tool_calls",
    "ERROR_TOXIC": "content_filter",
}


# OpenAI request field → Chat v2 field, for the fields that pass as they are.
_SAMPLING = (
    ("temperature", "temperature"),
    ("top_k", "k"),
    ("max_tokens", "max_tokens"),
    ("seed", "seed"),
    ("frequency_penalty", "frequency_penalty"),
    ("presence_penalty", "presence_penalty"),
)


class CohereConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"cohere_api_key": True}

    cohere_api_key: str | None = None
    cohere_api_key_plaintext: str | None = None
    # The API's origin; a trailing `/v1` or `/v2` is tolerated (paths are added here).
    cohere_api_base: str | None = Field(default=None, pattern=r"^https?://")


class CohereProvider(ExternalProvider):
    kind = "cohere"
    config_key = "cohere_config"
    config_model = CohereConfig
    config: CohereConfig
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.EMBEDDINGS})

    def url(self, path: str) -> str:
        base = (self.config.cohere_api_base or COHERE_API_BASE).rstrip("/")
        return f"{base.removesuffix('/v1').removesuffix('/v2')}/v2/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential('cohere_api_key').value()}"}

    async def chat(self, request: ChatRequest) -> Json:
        if request.n > 1:  # one answer per call upstream
            single = request.model_copy(update={"n": 1})
            return await fanout.merged_answer([self.chat(single) for _ in range(request.n)])
        body = {**payload(request, self.model.name), "stream": False}
        answer = await self.post_json(self.call(self.url("chat"), body, self.headers()))
        return self._answer(answer)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        if request.n > 1:
            single = request.model_copy(update={"n": 1})
            return fanout.merged_stream([self._stream(single) for _ in range(request.n)])
        return self._stream(request)

    async def embeddings(self, request: EmbeddingRequest) -> Json:
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if not texts:
            raise BadRequest("input must name at least one text to embed.")
        extras = embed_extras(request)
        calls = [
            self.post_json(
                self.call(self.url("embed"), self._embed_body(batch, extras), self.headers())
            )
            for batch in _batches(texts, EMBED_BATCH)
        ]
        answers = await asyncio.gather(*calls)
        vectors = [v for a in answers for v in (a.get("embeddings") or {}).get("float") or []]
        if len(vectors) != len(texts):
            raise UpstreamError(
                f"{self.upstream} returned {len(vectors)} embeddings for {len(texts)} texts."
            )
        tokens = sum(_billed_input(a) for a in answers)
        return embedding_list(vectors, self.model.name, tokens, request.encoding_format)

    def _embed_body(self, texts: list[str], extras: Json) -> Json:
        return {
            "model": self.model.name,
            "texts": texts,
            "input_type": DEFAULT_INPUT_TYPE,
            "embedding_types": ["float"],
            **extras,
        }

    def _answer(self, body: Json) -> Json:
        message = body.get("message") or {}
        text = "".join(
            part.get("text") or ""
            for part in message.get("content") or ()
            if isinstance(part, dict) and part.get("type") == "text"
        )
        calls = [
            shapes.ToolCallOut(
                call.get("id") or shapes.new_id("call"),
                (call.get("function") or {}).get("name") or "",
                (call.get("function") or {}).get("arguments") or "{}",
            )
            for call in message.get("tool_calls") or ()
        ]
        return shapes.chat_completion(
            model=self.model.name,
            content=text if text or not calls else message.get("tool_plan"),
            finish_reason=self._finish(body.get("finish_reason")),
            usage_=shapes.usage(*token_counts(body.get("usage"))),
            tool_calls=calls,
            id=body.get("id"),
        )

    def _finish(self, reason: Any, error: Any = None) -> shapes.FinishReason:
        if reason == "ERROR" or error:  # an internal failure upstream, like a 5xx
            message = f"{self.upstream} failed while generating: {error or reason}"
            raise UpstreamError(message, retryable=True)
        return _FINISH.get(str(reason), "stop")

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Json]:
        body = {**payload(request, self.model.name), "stream": True}
        call = self.call(self.url("chat"), body, self.headers())
        translator = StreamTranslator(shapes.ChunkWriter(model=self.model.name), self._finish)
        async with aclosing(http.sse_events(self.post_stream(call))) as events:
            async for event in events:
                if event.data == b"[DONE]":
                    break
                data = event.json(self.upstream)
                for chunk in translator.on(data if isinstance(data, dict) else {}):
                    yield chunk
                if translator.done:
                    async for _ in events:  # read to the end so the connection is reused
                        pass
                    return
        raise UpstreamError(f"{self.upstream} ended the stream before message-end.")


# -- requests -------------------------------------------------------------------------------


def payload(request: ChatRequest, model: str) -> Json:
    """The Chat v2 body for `request` (without `stream`)."""
    if request.logprobs:
        raise BadRequest("Provider 'cohere' cannot return OpenAI logprobs; leave logprobs unset.")
    body: Json = {"model": model, "messages": messages(request.messages)}
    body.update(tools(request))
    for ours, theirs in _SAMPLING:
        if getattr(request, ours) is not None:
            body[theirs] = getattr(request, ours)
    if request.top_p is not None:
        body["p"] = min(max(request.top_p, P_MIN), P_MAX)
    stop = shapes.stop_sequences(request)
    if stop:
        body["stop_sequences"] = stop
    if shapes.wants_json(request):
        fmt: Json = {"type": "json_object"}
        schema = shapes.json_schema(request)
        if schema:
            fmt["json_schema"] = schema
        body["response_format"] = fmt
    body.update(shapes.passthrough(request))
    return body


def messages(history: list[Message]) -> list[Json]:
    """OpenAI messages as Chat v2 messages (one for one: the API takes every role)."""
    out: list[Json] = []
    for i, message in enumerate(history):
        if message.role in ("system", "developer"):
            out.append({"role": "system", "content": message.text()})
        elif message.role == "user":
            out.append({"role": "user", "content": _content(message)})
        elif message.role == "assistant":
            out.append(_assistant(message))
        else:
            if not message.tool_call_id:
                raise BadRequest(f"messages[{i}].tool_call_id is required for a tool message.")
            text = [{"type": "text", "text": message.text()}]
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": text})
    return out


def _content(message: Message) -> str | list[Json]:
    if isinstance(message.content, list):
        return [{"type": "text", "text": part.text} for part in message.content]
    return message.content or ""


def _assistant(message: Message) -> Json:
    if not message.tool_calls:
        return {"role": "assistant", "content": message.text()}
    out: Json = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ],
    }
    if message.text():  # what the model said before calling: its plan
        out["tool_plan"] = message.text()
    return out


def tools(request: ChatRequest) -> Json:
    """`tools` and `tool_choice`; a named function is the only one offered, and required."""
    declared = shapes.function_tools(request)
    choice = shapes.tool_choice(request)
    if not declared:
        return {}
    wanted: str | None = None
    if choice is not None and choice.mode == "function":
        declared = [t for t in declared if t.name == choice.name]
        if not declared:
            raise BadRequest(f"tool_choice names '{choice.name}', which is not in tools.")
        wanted = "REQUIRED"
    elif choice is not None and choice.mode != "auto":
        wanted = choice.mode.upper()  # REQUIRED or NONE
    body: Json = {"tools": [_tool(t) for t in declared]}
    if wanted:
        body["tool_choice"] = wanted
    return body


def _tool(tool: shapes.FunctionTool) -> Json:
    function: Json = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def embed_extras(request: EmbeddingRequest) -> Json:
    """Unknown keys and `extra_params` of an embeddings request; `dimensions` renamed."""
    extras = dict(request.model_extra or {})
    nested = extras.pop("extra_params", None)
    if isinstance(nested, dict):
        extras.update(nested)
    if "dimensions" in extras:
        extras["output_dimension"] = extras.pop("dimensions")
    return extras


# -- answers --------------------------------------------------------------------------------


def token_counts(usage: Any) -> tuple[int, int]:
    """(input, output) tokens: the model's own counts, else the billed ones."""
    usage = usage if isinstance(usage, dict) else {}
    counts = usage.get("tokens") or usage.get("billed_units") or {}
    return int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0)


def _billed_input(answer: Json) -> int:
    meta = answer.get("meta") or {}
    counts = meta.get("tokens") or meta.get("billed_units") or {}
    return int(counts.get("input_tokens") or 0)


def embedding_list(vectors: list[list[float]], model: str, tokens: int, encoding: str) -> Json:
    """An OpenAI embeddings list; `base64` is little-endian float32, as OpenAI encodes it."""
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, encoding)}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "model": model, "data": data, "usage": usage}


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding != "base64":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class StreamTranslator:
    """Turns Chat v2 stream events into OpenAI chunks, one event at a time."""

    writer: shapes.ChunkWriter
    # (finish_reason, error) → the OpenAI finish reason; raises for an upstream error.
    finish: Callable[[Any, Any], shapes.FinishReason]
    done: bool = False
    _calls: dict[Any, int] = field(default_factory=dict)  # event index → tool call index

    def on(self, event: Json) -> list[Json]:
        kind = str(event.get("type") or "")
        handler = getattr(self, "_on_" + kind.replace("-", "_"), None)
        # Unknown events (citations, debug, ...) have no OpenAI counterpart: skipped.
        return handler(event, _message_delta(event)) if handler else []

    def _on_content_delta(self, event: Json, delta: Json) -> list[Json]:
        text = (delta.get("content") or {}).get("text")
        return [self.writer.text(text)] if text else []

    def _on_tool_plan_delta(self, event: Json, delta: Json) -> list[Json]:
        plan = delta.get("tool_plan")
        return [self.writer.text(plan)] if plan else []

    def _on_tool_call_start(self, event: Json, delta: Json) -> list[Json]:
        call = delta.get("tool_calls") or {}
        function = call.get("function") or {}
        index = self._calls[event.get("index", len(self._calls))] = len(self._calls)
        chunks = [
            self.writer.tool_call_start(
                index, call.get("id") or shapes.new_id("call"), function.get("name") or ""
            )
        ]
        if function.get("arguments"):
            chunks.append(self.writer.tool_call_arguments(index, function["arguments"]))
        return chunks

    def _on_tool_call_delta(self, event: Json, delta: Json) -> list[Json]:
        fragment = ((delta.get("tool_calls") or {}).get("function") or {}).get("arguments")
        index = self._calls.get(event.get("index"), len(self._calls) - 1)
        return [self.writer.tool_call_arguments(index, fragment)] if fragment else []

    def _on_message_end(self, event: Json, delta: Json) -> list[Json]:
        self.done = True
        end = event.get("delta") or {}
        reason = self.finish(end.get("finish_reason"), end.get("error"))
        return [self.writer.finish(reason), self.writer.usage(*token_counts(end.get("usage")))]


def _message_delta(event: Json) -> Json:
    delta = event.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    return message if isinstance(message, dict) else {}

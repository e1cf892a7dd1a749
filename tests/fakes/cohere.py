"""Cohere's Chat v2 and Embed v2 APIs, as their reference documents them.

Checked against (the pages and their OpenAPI spec, `cohere-openapi.yaml` of
cohere-ai/cohere-developer-experience):
- https://docs.cohere.com/reference/chat and https://docs.cohere.com/reference/chat-stream
  (`POST /v2/chat`, `Authorization: Bearer`, the request fields and their bounds, the four
  message roles, `tools`, `tool_choice` REQUIRED/NONE, `response_format`, the response with
  `finish_reason` and `usage`, the typed stream events)
- https://docs.cohere.com/v2/docs/streaming (event order for text and for tool calls)
- https://docs.cohere.com/reference/embed (`POST /v2/embed`: `model`, `input_type`, at most 96
  `texts`, `embedding_types`; `embeddings` by type, `meta.billed_units`)
- the error responses of those pages: `{"id", "message"}` with the HTTP status

Streams are `data:` lines of JSON events whose `type` names them, ended by `data: [DONE]`
(the terminator the reference declares). The model is `script.reply`; when it calls tools it
first writes a `tool_plan`, as Cohere's models do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, json_response, sse

CHAT_FIELDS = {
    "stream", "model", "messages", "tools", "strict_tools", "documents", "citation_options",
    "response_format", "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed",
    "frequency_penalty", "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking",
    "priority",
}  # fmt: skip
MESSAGE_FIELDS = {
    "user": {"role", "content"},
    "system": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "tool_plan", "citations"},
    "tool": {"role", "tool_call_id", "content"},
}
EMBED_FIELDS = {
    "texts", "images", "model", "input_type", "inputs", "max_tokens", "output_dimension",
    "embedding_types", "truncate", "priority",
}  # fmt: skip
INPUT_TYPES = {"search_document", "search_query", "classification", "clustering", "image"}
EMBEDDING_TYPES = {"float", "int8", "uint8", "binary", "ubinary", "base64"}
FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}


class FakeCohere(FakeUpstream):
    """`api_key` is the key requests must carry."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self._stream_errors: list[tuple[str, bool]] = []

    def fail_stream_next(self, error: str, *, after_text: bool = False) -> None:
        """End the next stream with `message-end` of finish reason ERROR and this error,
        right after `message-start` or after the first word of the answer."""
        self._stream_errors.append((error, after_text))

    def reset(self) -> None:
        super().reset()
        self._stream_errors.clear()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v2/chat", self.chat), web.post("/v2/embed", self.embed)]

    def error_response(self, status: int, message: str) -> web.Response:
        return json_response({"id": str(uuid.uuid4()), "message": message}, status)

    async def _body(self, request: web.Request) -> Json:
        body = await self.json_body(request)
        self.expect(isinstance(body.get("model"), str), "model is required")
        return body

    # -- chat -----------------------------------------------------------------------------------

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """A wrong key is the API's 401, not a malformed request."""
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return self.error_response(401, "invalid api token")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if denied := self._unauthorized(request):
            return denied
        body = await self._body(request)
        self.expect_fields(body, CHAT_FIELDS, "request")
        self._check_messages(body.get("messages"))
        self._check_tools(body)
        self._check_sampling(body)
        reply = script.reply(_prompt(body))
        if body.get("stream"):
            error = self._stream_errors.pop(0) if self._stream_errors else None
            return await sse(request, _events(reply, error))
        return json_response(_answer(reply))

    def _check_messages(self, messages: Any) -> None:
        self.expect(isinstance(messages, list) and messages, "messages is required")
        called: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            self.expect(role in MESSAGE_FIELDS, f"messages[{i}].role is invalid")
            self.expect_fields(m, MESSAGE_FIELDS[role], f"messages[{i}]")
            if role != "assistant":
                self.expect("content" in m, f"messages[{i}].content is required")
            if "content" in m:
                self._check_content(m["content"], role, f"messages[{i}].content")
            for j, call in enumerate(m.get("tool_calls") or []):
                where = f"messages[{i}].tool_calls[{j}]"
                self.expect_fields(call, {"id", "type", "function"}, where)
                self.expect(call.get("type") == "function", f"{where}.type must be 'function'")
                fn = call.get("function") or {}
                self.expect_fields(fn, {"name", "arguments"}, f"{where}.function")
                self.expect(isinstance(fn.get("arguments"), str), f"{where} arguments: string")
                called.add(call.get("id"))
            if role == "tool":
                self.expect(
                    m.get("tool_call_id") in called,
                    f"messages[{i}].tool_call_id names no earlier tool call",
                )

    def _check_content(self, content: Any, role: str, where: str) -> None:
        if isinstance(content, str):
            return
        self.expect(isinstance(content, list), f"{where} must be a string or a list of blocks")
        kinds = {"text", "document"} if role == "tool" else {"text", "image_url", "thinking"}
        for block in content:
            self.expect(
                isinstance(block, dict) and block.get("type") in kinds,
                f"{where} has a block of an unknown type",
            )
            if block.get("type") == "text":
                self.expect_fields(block, {"type", "text"}, where)
                self.expect(isinstance(block.get("text"), str), f"{where} text must be a string")

    def _check_tools(self, body: Json) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            self.expect_fields(tool, {"type", "function"}, f"tools[{i}]")
            self.expect(tool.get("type") == "function", f"tools[{i}].type must be 'function'")
            fn = tool.get("function") or {}
            self.expect_fields(fn, {"name", "description", "parameters"}, f"tools[{i}].function")
            self.expect(isinstance(fn.get("name"), str), f"tools[{i}].function.name is required")
            self.expect(
                isinstance(fn.get("parameters"), dict), f"tools[{i}].function.parameters required"
            )
        choice = body.get("tool_choice")
        self.expect(choice in (None, "REQUIRED", "NONE"), "tool_choice must be REQUIRED or NONE")
        self.expect(choice != "REQUIRED" or body.get("tools"), "REQUIRED needs tools")
        fmt = body.get("response_format")
        if fmt is not None:
            self.expect(fmt.get("type") in ("text", "json_object"), "unknown response_format")
            self.expect_fields(fmt, {"type", "json_schema"}, "response_format")
            self.expect(
                not body.get("tools") and not body.get("documents"),
                "response_format is not supported with tools or documents",
            )

    def _check_sampling(self, body: Json) -> None:
        bounds = {"temperature": (0, 1), "p": (0.01, 0.99), "k": (0, 500), "seed": (0, 2**64)}
        for name, (low, high) in bounds.items():
            if name in body:
                value = body[name]
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                self.expect(ok and low <= value <= high, f"{name} must be in [{low}, {high}]")
        for name in ("k", "seed", "max_tokens"):
            self.expect(isinstance(body.get(name, 0), int), f"{name} must be an integer")
        stops = body.get("stop_sequences", [])
        self.expect(isinstance(stops, list) and len(stops) <= 5, "at most 5 stop_sequences")
        self.expect(isinstance(body.get("stream", False), bool), "stream must be a boolean")

    # -- embed ----------------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.StreamResponse:
        if denied := self._unauthorized(request):
            return denied
        body = await self._body(request)
        self.expect_fields(body, EMBED_FIELDS, "request")
        self.expect(body.get("input_type") in INPUT_TYPES, "input_type is required")
        texts = body.get("texts")
        self.expect(isinstance(texts, list) and 1 <= len(texts) <= 96, "texts: 1 to 96 strings")
        types = body.get("embedding_types", ["float"])
        self.expect(set(types) <= EMBEDDING_TYPES, "embedding_types has an unknown type")
        self.expect("float" in types, "the fake serves float embeddings only")
        tokens = sum(len(t.split()) for t in texts)
        return json_response(
            {
                "id": str(uuid.uuid4()),
                "response_type": "embeddings_by_type",
                "embeddings": {"float": [[float(len(t)), 0.5, -0.5] for t in texts]},
                "texts": texts,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
            }
        )


def _prompt(body: Json) -> script.Prompt:
    messages = body["messages"]
    results = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        results.insert(0, _text(m.get("content")))
    users = [m for m in messages if m.get("role") == "user"]
    systems = [_text(m.get("content")) for m in messages if m.get("role") == "system"]
    return script.Prompt(
        last_user_text=_text(users[-1].get("content")) if users else "",
        tool_results=results,
        tools=[
            script.Tool(t["function"]["name"], t["function"].get("parameters") or {})
            for t in body.get("tools") or []
        ],
        tool_choice_none=body.get("tool_choice") == "NONE",
        wants_json=(body.get("response_format") or {}).get("type") == "json_object",
        max_tokens=body.get("max_tokens"),
        stop=body.get("stop_sequences") or [],
        system="\n".join(systems) or None,
    )


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if b.get("type") == "text")
    return content or ""


def _plan(reply: script.Reply) -> str:
    return "I will call " + " and ".join(c.name for c in reply.calls) + "."


def _usage(reply: script.Reply) -> Json:
    counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
    return {"billed_units": dict(counts), "tokens": dict(counts)}


def _call(call: script.Call) -> Json:
    arguments = orjson.dumps(call.arguments).decode()
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _answer(reply: script.Reply) -> Json:
    message: Json = {"role": "assistant"}
    if reply.calls:
        message["tool_plan"] = _plan(reply)
        message["tool_calls"] = [_call(c) for c in reply.calls]
    else:
        message["content"] = [{"type": "text", "text": reply.text}]
    return {
        "id": str(uuid.uuid4()),
        "message": message,
        "finish_reason": FINISH[reply.finish],
        "usage": _usage(reply),
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _events(
    reply: script.Reply, error: tuple[str, bool] | None
) -> Iterator[tuple[str | None, Any]]:
    def event(kind: str, **fields: Any) -> tuple[None, Json]:
        return None, {"type": kind, **fields}

    def delta(message: Json) -> Json:
        return {"message": message}

    yield event("message-start", id=str(uuid.uuid4()), delta=delta({"role": "assistant"}))
    if error is not None:
        message, after_text = error
        if after_text:
            first = _pieces(reply.text)[0]
            yield event("content-start", index=0, delta=delta({"content": {"type": "text"}}))
            yield event("content-delta", index=0, delta=delta({"content": {"text": first}}))
        yield event("message-end", delta={"finish_reason": "ERROR", "error": message})
        yield None, "[DONE]"
        return
    if reply.calls:
        for piece in _pieces(_plan(reply)):
            yield event("tool-plan-delta", delta=delta({"tool_plan": piece}))
        for i, call in enumerate(reply.calls):
            full = _call(call)
            start = {**full, "function": {"name": call.name, "arguments": ""}}
            yield event("tool-call-start", index=i, delta=delta({"tool_calls": start}))
            args = full["function"]["arguments"]
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                piece = {"function": {"arguments": part}}
                yield event("tool-call-delta", index=i, delta=delta({"tool_calls": piece}))
            yield event("tool-call-end", index=i)
    else:
        empty = {"content": {"type": "text", "text": ""}}
        yield event("content-start", index=0, delta=delta(empty))
        for word in _pieces(reply.text):
            piece = {"content": {"text": word}}
            yield event("content-delta", index=0, delta=delta(piece))
        yield event("content-end", index=0)
    end = {"finish_reason": FINISH[reply.finish], "usage": _usage(reply)}
    yield event("message-end", delta=end)
    yield None, "[DONE]"

"""Mistral's chat completions and embeddings API, as its reference documents it.

Checked against:
- https://docs.mistral.ai/api (its OpenAPI spec, `public/openapi.yaml` of
  mistralai/platform-docs-public: `POST /v1/chat/completions` with `ChatCompletionRequest`,
  which allows no other fields; the message, tool, tool choice and response format types;
  `ChatCompletionResponse`; `CompletionChunk` events; `POST /v1/embeddings` with
  `EmbeddingRequest` and `EmbeddingResponse`)
- the chat completion guide's streaming example (`data:` chunks ended by `data: [DONE]`,
  `usage` on the last chunk, `null` on the others; no `stream_options`)
- the function calling guide (`tool_choice` `any`, tool call ids, tool messages with `name`
  and `tool_call_id`)
- the error glossary (`{"object": "error", "message", "type", "param", "code"}` with the HTTP
  status; `Authorization: Bearer <key>`)

Streamed tool calls come whole in one delta, each with the schema's default `index` 0. The
model is `script.reply`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, json_response, sse
from tests.fakes.openai import chat_prompt, chat_usage

CHAT_FIELDS = {
    "model", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
    "messages", "response_format", "tools", "tool_choice", "presence_penalty",
    "frequency_penalty", "n", "prediction", "parallel_tool_calls", "reasoning_effort",
    "prompt_mode", "guardrails", "prompt_cache_key", "service_tier", "safe_prompt",
}  # fmt: skip
MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "prefix"},
    "tool": {"role", "content", "tool_call_id", "name"},
}
CHUNK_TYPES = {
    "text", "image_url", "document_url", "reference", "file", "thinking", "input_audio",
}  # fmt: skip
TOOL_CHOICES = {"auto", "none", "any", "required"}
EMBEDDING_FIELDS = {
    "model", "metadata", "input", "output_dimension", "output_dtype", "encoding_format",
}  # fmt: skip
ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}


class FakeMistral(FakeUpstream):
    """`api_key` is the key requests must carry."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/embeddings", self.embeddings),
        ]

    def error_response(self, status: int, message: str) -> web.Response:
        kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        body = {"object": "error", "message": message, "type": kind, "param": None, "code": None}
        return json_response(body, status)

    async def _body(self, request: web.Request, fields: set[str]) -> Json:
        body = await self.json_body(request)
        self.expect_fields(body, fields, "request")
        self.expect(isinstance(body.get("model"), str), "model is required")
        return body

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return self.error_response(401, "Unauthorized")

    # -- chat -----------------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if denied := self._unauthorized(request):
            return denied
        body = await self._body(request, CHAT_FIELDS)
        self._check_messages(body.get("messages"))
        self._check_tools(body)
        self._check_sampling(body)
        prompt = chat_prompt(body)
        choice = body.get("tool_choice")
        if isinstance(choice, dict):  # a named function is the only one the model may call
            prompt.tools = [t for t in prompt.tools if t.name == choice["function"]["name"]]
        reply = script.reply(prompt)
        if body.get("stream"):
            return await sse(request, _chunks(reply, body["model"]))
        message: Json = {"role": "assistant", "content": reply.text, "prefix": False}
        if reply.calls:
            message["tool_calls"] = [_call(c) for c in reply.calls]
        return json_response(
            {
                "id": uuid.uuid4().hex,
                "object": "chat.completion",
                "model": body["model"],
                "created": int(time.time()),
                "usage": chat_usage(reply),
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish}],
            }
        )

    def _check_messages(self, messages: Any) -> None:
        self.expect(isinstance(messages, list) and messages, "messages is required")
        called: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            self.expect(role in MESSAGE_FIELDS, f"messages[{i}].role is invalid")
            self.expect_fields(m, MESSAGE_FIELDS[role], f"messages[{i}]")
            if role != "assistant":
                self.expect("content" in m, f"messages[{i}].content is required")
            self._check_content(m.get("content"), f"messages[{i}].content")
            for j, call in enumerate(m.get("tool_calls") or []):
                where = f"messages[{i}].tool_calls[{j}]"
                self.expect_fields(call, {"id", "type", "function", "index"}, where)
                fn = call.get("function")
                self.expect_fields(fn, {"name", "arguments"}, f"{where}.function")
                self.expect(isinstance(fn.get("name"), str), f"{where}.function.name is required")
                called.add(call.get("id"))
            if role == "tool":
                self.expect(
                    m.get("tool_call_id") in called,
                    f"messages[{i}].tool_call_id names no earlier tool call",
                )

    def _check_content(self, content: Any, where: str) -> None:
        if content is None or isinstance(content, str):
            return
        self.expect(isinstance(content, list), f"{where} must be a string or a list of chunks")
        for chunk in content:
            self.expect(isinstance(chunk, dict), f"{where} chunks must be objects")
            self.expect(chunk.get("type", "text") in CHUNK_TYPES, f"{where}: unknown chunk type")
            if chunk.get("type", "text") == "text":
                self.expect_fields(chunk, {"type", "text"}, where)
                self.expect(isinstance(chunk.get("text"), str), f"{where}: text is required")

    def _check_tools(self, body: Json) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            self.expect_fields(tool, {"type", "function"}, f"tools[{i}]")
            fn = tool.get("function")
            fields = {"name", "description", "strict", "parameters"}
            self.expect_fields(fn, fields, f"tools[{i}].function")
            self.expect(isinstance(fn.get("name"), str), f"tools[{i}].function.name is required")
            self.expect(isinstance(fn.get("parameters"), dict), f"tools[{i}] needs parameters")
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, dict):
            self.expect_fields(choice, {"type", "function"}, "tool_choice")
            self.expect_fields(choice.get("function"), {"name"}, "tool_choice.function")
        else:
            self.expect(choice in TOOL_CHOICES, f"tool_choice must be one of {TOOL_CHOICES}")
        fmt = body.get("response_format")
        if fmt is not None:
            self.expect_fields(fmt, {"type", "json_schema"}, "response_format")
            kinds = ("text", "json_object", "json_schema")
            self.expect(fmt.get("type", "text") in kinds, "unknown response_format type")
            if fmt.get("type") == "json_schema":
                schema = fmt.get("json_schema")
                self.expect_fields(schema, {"name", "schema", "strict"}, "json_schema")
                self.expect({"name", "schema"} <= set(schema), "json_schema needs name, schema")

    def _check_sampling(self, body: Json) -> None:
        bounds = {
            "temperature": (0, 1.5), "top_p": (0, 1), "presence_penalty": (-2, 2),
            "frequency_penalty": (-2, 2), "max_tokens": (0, None), "random_seed": (0, None),
            "n": (1, None),
        }  # fmt: skip
        for name, (low, high) in bounds.items():
            if body.get(name) is None:
                continue
            value = body[name]
            self.expect(isinstance(value, int | float), f"{name} must be a number")
            self.expect(low <= value and (high is None or value <= high), f"{name} is out of range")
        for name in ("max_tokens", "random_seed", "n"):
            self.expect(isinstance(body.get(name, 0), int), f"{name} must be an integer")
        stop = body.get("stop")
        self.expect(stop is None or isinstance(stop, str | list), "stop: a string or a list")

    # -- embeddings -----------------------------------------------------------------------------

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        if denied := self._unauthorized(request):
            return denied
        body = await self._body(request, EMBEDDING_FIELDS)
        inputs = body.get("input")
        self.expect(isinstance(inputs, str | list), "input is required")
        texts = [inputs] if isinstance(inputs, str) else inputs
        self.expect(body.get("encoding_format", "float") == "float", "the fake serves floats")
        tokens = sum(len(t.split()) for t in texts)
        return json_response(
            {
                "id": uuid.uuid4().hex,
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "embedding": [float(len(t)), 0.5, -0.5], "index": i}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
            }
        )


def _call_id(call: script.Call) -> str:
    """A 9-character id like the ones Mistral makes."""
    return hashlib.sha1(call.id.encode()).hexdigest()[:9]


def _call(call: script.Call) -> Json:
    return {
        "id": _call_id(call),
        "type": "function",
        "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
    }


def _chunks(reply: script.Reply, model: str) -> Iterator[tuple[str | None, Any]]:
    base = {"id": uuid.uuid4().hex, "object": "chat.completion.chunk", "created": 1}

    def chunk(delta: Json, finish: str | None = None, usage: Json | None = None) -> tuple:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return None, {**base, "model": model, "choices": [choice], "usage": usage}

    yield chunk({"role": "assistant", "content": ""})
    for word in reply.words() if reply.text else []:
        yield chunk({"content": word})
    if reply.calls:
        yield chunk({"tool_calls": [{**_call(c), "index": 0} for c in reply.calls]})
    yield chunk({"content": ""}, reply.finish, chat_usage(reply))
    yield None, "[DONE]"

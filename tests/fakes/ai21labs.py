"""AI21 Studio's Jamba chat completions API, as its reference documents it.

Checked against:
- https://docs.ai21.com/reference/jamba-1-6-api-ref (`POST /studio/v1/chat/completions`,
  `Authorization: Bearer <key>`; the request fields `model`, `messages`, `tools`,
  `documents`, `response_format` (`text` or `json_object`), `max_tokens` (at most 4096),
  `temperature` (0 to 2), `top_p` (0 to 1), `stop`, `n` (1 to 16, not with temperature 0),
  `stream`; system, user, assistant (with `tool_calls`) and tool messages of string content)
- https://docs.ai21.com/reference/jamba-api-response (the response: `id`, `choices` with
  `message` and `finish_reason`, `usage`; streams of `data:` chunks whose first delta is the
  role and the others `content` tokens, `usage` null except on the last chunk, ended by
  `data: [DONE]`)

Errors are `{"detail": ...}` with the HTTP status (the reference shows no error body; this is
the shape AI21's API answers with). Streamed deltas carry only the role and text, as
documented, so a streamed tool call cannot be expressed. The model is `script.reply`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, json_response, sse
from tests.fakes.openai import chat_prompt, chat_usage

CHAT_FIELDS = {
    "model", "messages", "tools", "documents", "response_format", "max_tokens", "temperature",
    "top_p", "stop", "n", "stream",
}  # fmt: skip
MESSAGE_FIELDS = {
    "system": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}


class FakeAI21(FakeUpstream):
    """`api_key` is the key requests must carry."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/studio/v1/chat/completions", self.chat)]

    def error_response(self, status: int, message: str) -> web.Response:
        return json_response({"detail": message}, status)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error_response(401, "Forbidden: Bad or missing API token.")
        body = await self.json_body(request)
        self.expect_fields(body, CHAT_FIELDS, "request")
        self.expect(isinstance(body.get("model"), str), "model is required")
        self._check_messages(body.get("messages"))
        self._check_tools(body)
        self._check_sampling(body)
        reply = script.reply(chat_prompt(body))
        if body.get("stream"):
            return await sse(request, _chunks(reply))
        message: Json = {"role": "assistant", "content": reply.text or None}
        if reply.calls:
            message["tool_calls"] = [_call(c) for c in reply.calls]
        return json_response(
            {
                "id": f"chat-{uuid.uuid4().hex}",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": reply.finish,
                    }
                ],
                "usage": chat_usage(reply),
                "meta": {"requestDurationMillis": 12},
            }
        )

    def _check_messages(self, messages: Any) -> None:
        self.expect(isinstance(messages, list) and messages, "messages is required")
        called: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            self.expect(role in MESSAGE_FIELDS, f"messages[{i}].role is invalid")
            self.expect_fields(m, MESSAGE_FIELDS[role], f"messages[{i}]")
            self.expect(isinstance(m.get("content"), str), f"messages[{i}].content: a string")
            for j, call in enumerate(m.get("tool_calls") or []):
                where = f"messages[{i}].tool_calls[{j}]"
                self.expect_fields(call, {"id", "type", "function"}, where)
                self.expect_fields(call.get("function"), {"name", "arguments"}, f"{where}.function")
                called.add(call.get("id"))
            if role == "tool":
                self.expect(
                    m.get("tool_call_id") in called,
                    f"messages[{i}].tool_call_id names no earlier tool call",
                )

    def _check_tools(self, body: Json) -> None:
        for i, tool in enumerate(body.get("tools") or []):
            self.expect_fields(tool, {"type", "function"}, f"tools[{i}]")
            self.expect(tool.get("type") == "function", f"tools[{i}].type must be 'function'")
            fn = tool.get("function")
            self.expect_fields(fn, {"name", "description", "parameters"}, f"tools[{i}].function")
            self.expect(isinstance(fn.get("name"), str), f"tools[{i}].function.name is required")
        for i, document in enumerate(body.get("documents") or []):
            self.expect_fields(document, {"content", "id", "metadata"}, f"documents[{i}]")
            self.expect(isinstance(document.get("content"), str), f"documents[{i}].content")
        fmt = body.get("response_format")
        if fmt is not None:
            self.expect_fields(fmt, {"type"}, "response_format")
            self.expect(fmt.get("type") in ("text", "json_object"), "unknown response_format")

    def _check_sampling(self, body: Json) -> None:
        bounds = {"temperature": (0, 2), "top_p": (0, 1), "max_tokens": (0, 4096), "n": (1, 16)}
        for name, (low, high) in bounds.items():
            if name in body:
                value = body[name]
                self.expect(isinstance(value, int | float), f"{name} must be a number")
                self.expect(low <= value <= high, f"{name} must be in [{low}, {high}]")
        self.expect(
            body.get("n", 1) == 1 or body.get("temperature") != 0, "n > 1 needs temperature > 0"
        )
        stop = body.get("stop")
        self.expect(stop is None or isinstance(stop, str | list), "stop: a string or a list")


def _call(call: script.Call) -> Json:
    arguments = orjson.dumps(call.arguments).decode()
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _chunks(reply: script.Reply) -> Iterator[tuple[str | None, Any]]:
    id_ = f"chat-{uuid.uuid4().hex}"

    def chunk(delta: Json, finish: str | None = None, usage: Json | None = None) -> tuple:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return None, {"id": id_, "choices": [choice], "usage": usage}

    yield chunk({"role": "assistant"})
    words = reply.words() if reply.text else []
    for word in words[:-1]:
        yield chunk({"content": word})
    yield chunk({"content": words[-1] if words else ""}, reply.finish, chat_usage(reply))
    yield None, "[DONE]"

"""OpenAI's API (and Azure OpenAI's deployment paths), as its API reference documents it.

Chat completions: POST /v1/chat/completions; completions: /v1/completions; embeddings:
/v1/embeddings; auth `Authorization: Bearer <key>` (Azure: `api-key: <key>` and
`?api-version=`). Errors: `{"error": {"message", "type", "param", "code"}}`. Streams: `data:`
chunk events ended by `data: [DONE]`; usage in a last chunk with empty `choices` when
`stream_options.include_usage` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, Refusal, json_response, sse

CHAT_FIELDS = {
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions",
    "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities",
    "n", "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort",
    "response_format", "seed", "service_tier", "stop", "store", "stream", "stream_options",
    "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "web_search_options",
    "prompt_cache_key", "safety_identifier", "verbosity",
}  # fmt: skip
MESSAGE_FIELDS = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio"}
COMPLETION_FIELDS = {
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
    "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix",
    "temperature", "top_p", "user",
}  # fmt: skip
EMBEDDING_FIELDS = {"input", "model", "dimensions", "encoding_format", "user"}


class FakeOpenAI(FakeUpstream):
    """`api_key` is the key requests must carry; `azure` switches to Azure's paths and header."""

    def __init__(self, api_key: str, *, azure: bool = False, api_version: str = "2024-10-21"):
        super().__init__()
        self.api_key = api_key
        self.azure = azure
        self.api_version = api_version
        # Set to answer chat with a text of the test's choosing (a guardrail judge's verdict):
        # called with the last user message's text, instead of the script's reply.
        self.respond: Callable[[str], str] | None = None

    def routes(self) -> list[web.RouteDef]:
        base = "/openai/deployments/{deployment}" if self.azure else "/v1"
        return [
            web.post(f"{base}/chat/completions", self.chat),
            web.post(f"{base}/completions", self.completions),
            web.post(f"{base}/embeddings", self.embeddings),
        ]

    def error_response(self, status: int, message: str) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": None}}, status
        )

    async def _check_auth(self, request: web.Request) -> Json:
        if self.azure:
            self.expect(request.headers.get("api-key") == self.api_key, "api-key header is wrong")
            self.expect(
                request.query.get("api-version") == self.api_version, "api-version is missing"
            )
        else:
            auth = request.headers.get("Authorization", "")
            self.expect(auth.startswith("Bearer "), "Authorization must be 'Bearer <key>'")
            if auth != f"Bearer {self.api_key}":
                # Like OpenAI's own answer, but echoing the whole key: the gateway must scrub it.
                raise Refusal(401, f"Incorrect API key provided: {auth[7:]}.", "invalid_api_key")
        body = await self.json_body(request)
        if not self.azure:
            self.expect(isinstance(body.get("model"), str), "model is required")
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._check_auth(request)
        self.expect_fields(body, CHAT_FIELDS, "request")
        messages = body.get("messages")
        self.expect(isinstance(messages, list) and messages, "messages is required")
        for i, m in enumerate(messages):
            self.expect_fields(m, MESSAGE_FIELDS, f"messages[{i}]")
            self.expect(
                m.get("role") in ("system", "developer", "user", "assistant", "tool"),
                f"messages[{i}].role is invalid",
            )
        for i, tool in enumerate(body.get("tools") or []):
            function = tool.get("function") if isinstance(tool, dict) else None
            self.expect(
                tool.get("type") == "function" and isinstance(function, dict)
                and isinstance(function.get("name"), str),
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}",
            )  # fmt: skip
        prompt = chat_prompt(body)
        reply = script.reply(prompt) if self.respond is None else _responded(self.respond, prompt)
        model = body.get("model", "azure-deployment")
        if body.get("stream"):
            usage = (body.get("stream_options") or {}).get("include_usage", False)
            return await sse(request, _chunks(reply, model, usage))
        message: Json = {"role": "assistant", "content": reply.text or None, "refusal": None}
        if reply.calls:
            message["tool_calls"] = [_tool_call(c) for c in reply.calls]
        return json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": reply.finish,
                    }
                ],
                "usage": chat_usage(reply),
            }
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._check_auth(request)
        self.expect_fields(body, COMPLETION_FIELDS, "request")
        self.expect(isinstance(body.get("prompt"), str | list), "prompt is required")
        prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        reply = script.reply(script.Prompt(prompt, max_tokens=body.get("max_tokens")))
        return json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "text": reply.text,
                        "logprobs": None,
                        "finish_reason": reply.finish,
                    }
                ],
                "usage": chat_usage(reply),
            }
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._check_auth(request)
        self.expect_fields(body, EMBEDDING_FIELDS, "request")
        inputs = body.get("input")
        self.expect(isinstance(inputs, str | list), "input is required")
        texts = [inputs] if isinstance(inputs, str) else inputs
        self.expect(body.get("encoding_format", "float") == "float", "only float is faked")
        return json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5, -0.5]}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )


def chat_prompt(body: Json) -> script.Prompt:
    """The script's prompt for a chat completions request body (Mistral's and AI21's too)."""
    messages = body["messages"]
    last = messages[-1]
    results = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        results.insert(0, _text(m.get("content")))
    users = [m for m in messages if m.get("role") == "user"]
    fmt = (body.get("response_format") or {}).get("type")
    stop = body.get("stop") or []
    return script.Prompt(
        last_user_text=_text(users[-1].get("content")) if users else "",
        tool_results=results if last.get("role") == "tool" else [],
        tools=[
            script.Tool(t["function"]["name"], t["function"].get("parameters") or {})
            for t in body.get("tools") or []
        ],
        tool_choice_none=body.get("tool_choice") == "none",
        wants_json=fmt in ("json_object", "json_schema"),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        stop=[stop] if isinstance(stop, str) else stop,
    )


def _responded(respond: Callable[[str], str], prompt: script.Prompt) -> script.Reply:
    text = respond(prompt.last_user_text)
    return script.Reply(text, [], "stop", len(prompt.last_user_text.split()), len(text.split()))


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content)
    return content or ""


def _tool_call(call: script.Call) -> Json:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
    }


def chat_usage(reply: script.Reply) -> Json:
    """The `usage` object of a chat completions answer (Mistral's and AI21's too)."""
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _chunks(reply: script.Reply, model: str, usage: bool) -> Iterator[tuple[str | None, Any]]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model}

    def chunk(delta: Json, finish: str | None = None) -> tuple[None, Json]:
        return None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    for word in reply.words() if reply.text else []:
        yield chunk({"content": word})
    for i, call in enumerate(reply.calls):
        full = _tool_call(call)
        args = full["function"]["arguments"]
        yield chunk(
            {"tool_calls": [{**full, "index": i, "function": {"name": call.name, "arguments": ""}}]}
        )
        yield chunk(
            {"tool_calls": [{"index": i, "function": {"arguments": args[: len(args) // 2]}}]}
        )
        yield chunk(
            {"tool_calls": [{"index": i, "function": {"arguments": args[len(args) // 2 :]}}]}
        )
    yield chunk({}, reply.finish)
    if usage:
        yield None, {**base, "choices": [], "usage": chat_usage(reply)}
    yield None, "[DONE]"

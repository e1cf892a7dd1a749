"""Anthropic's Messages API, as its reference documents it.

Checked against:
- https://docs.anthropic.com/en/api/messages (Create a Message: request fields, content blocks,
  `tools`, `tool_choice`, the Message response, `stop_reason`, `usage`)
- https://docs.anthropic.com/en/docs/build-with-claude/streaming (event names and order, `ping`,
  `error` events, `text_delta` / `input_json_delta`)
- https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use (tool names,
  `tool_result` blocks first in the user turn that follows the `tool_use` blocks)
- https://docs.anthropic.com/en/api/errors (error body and the status of each error type)
- https://docs.anthropic.com/en/api/versioning and /en/api/getting-started (`x-api-key`,
  `anthropic-version: 2023-06-01`, `content-type: application/json`)
- the reference's machine-readable form, the request and event types of
  https://github.com/anthropics/anthropic-sdk-python (`src/anthropic/types`, generated from the
  API's OpenAPI spec): the documented field names accepted below

The model is `script.reply`; a forced `tool_choice` keeps only the named tool's call, and
`disable_parallel_tool_use` only the first call, as the reference says the model behaves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, json_response, sse

VERSION = "2023-06-01"
REQUEST_FIELDS = {
    "model", "messages", "max_tokens", "cache_control", "container", "inference_geo", "metadata",
    "output_config", "service_tier", "stop_sequences", "stream", "system", "temperature",
    "thinking", "tool_choice", "tools", "top_k", "top_p",
}  # fmt: skip
BLOCK_FIELDS = {
    "text": {"type", "text", "cache_control", "citations"},
    "tool_use": {"type", "id", "name", "input", "cache_control", "caller"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
}
TOOL_FIELDS = {
    "name", "description", "input_schema", "cache_control", "type", "strict", "input_examples",
    "defer_loading", "allowed_callers", "eager_input_streaming",
}  # fmt: skip
CHOICE_FIELDS = {
    "auto": {"type", "disable_parallel_tool_use"},
    "any": {"type", "disable_parallel_tool_use"},
    "tool": {"type", "name", "disable_parallel_tool_use"},
    "none": {"type"},
}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class FakeAnthropic(FakeUpstream):
    """`api_key` is the key requests must carry in `x-api-key`."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self._stream_errors: list[str] = []
        self._refusals = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.messages)]

    def error_response(self, status: int, message: str) -> web.Response:
        error = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
        return json_response(
            {"type": "error", "error": error, "request_id": "req_fake"}, status=status
        )

    def fail_stream_next(self, error_type: str) -> None:
        """The next stream sends `message_start`, then an `error` event of this type."""
        self._stream_errors.append(error_type)

    def refuse_next(self) -> None:
        """The next answer stops with `stop_reason: refusal` after its first word."""
        self._refusals += 1

    def reset(self) -> None:
        super().reset()
        self._stream_errors.clear()
        self._refusals = 0

    async def messages(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.api_key:
            # A wrong key is the caller's problem, not a malformed request: the API's own 401.
            return self.error_response(401, "invalid x-api-key")
        self.expect(request.headers.get("anthropic-version") == VERSION, "anthropic-version")
        self.expect(
            request.headers.get("Content-Type", "").startswith("application/json"),
            "content-type must be application/json",
        )
        body = orjson.loads(await request.read())  # not requests[-1]: calls may overlap
        self._check(body)
        reply = self._reply(body)
        refusal = self._refusals > 0
        if refusal:
            self._refusals -= 1
            reply = dataclasses.replace(reply, text=reply.text.split(" ")[0], calls=[])
        stop_reason, stop_sequence = _stop(body, reply, refusal)
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": _content(reply),
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _usage(reply),
        }
        if body.get("stream"):
            failure = self._stream_errors.pop(0) if self._stream_errors else None
            return await sse(request, _events(message, failure))
        return json_response(message)

    # -- checks ---------------------------------------------------------------------------------

    def _check(self, body: Any) -> None:
        self.expect_fields(body, REQUEST_FIELDS, "request")
        self.expect(isinstance(body.get("model"), str), "model is required")
        max_tokens = body.get("max_tokens")
        self.expect(isinstance(max_tokens, int) and max_tokens >= 1, "max_tokens is required")
        for name, low, high in (("temperature", 0, 1), ("top_p", 0, 1)):
            value = body.get(name)
            self.expect(value is None or low <= value <= high, f"{name} must be in [0, 1]")
        top_k = body.get("top_k")
        self.expect(top_k is None or (isinstance(top_k, int) and top_k >= 0), "top_k is an int")
        stops = body.get("stop_sequences", [])
        self.expect(isinstance(stops, list) and all(isinstance(s, str) for s in stops), "stops")
        self.expect(isinstance(body.get("stream", False), bool), "stream must be a boolean")
        if "metadata" in body:
            self.expect_fields(body["metadata"], {"user_id"}, "metadata")
        self._check_system(body.get("system"))
        names = self._check_tools(body)
        self._check_messages(body.get("messages"), names)

    def _check_system(self, system: Any) -> None:
        if system is None or isinstance(system, str):
            return
        self.expect(isinstance(system, list), "system must be a string or text blocks")
        for i, block in enumerate(system):
            self.expect_fields(block, BLOCK_FIELDS["text"], f"system[{i}]")
            self.expect(block.get("type") == "text", f"system[{i}] must be a text block")

    def _check_tools(self, body: Json) -> set[str]:
        tools = body.get("tools", [])
        self.expect(isinstance(tools, list), "tools must be a list")
        names = set()
        for i, tool in enumerate(tools):
            self.expect_fields(tool, TOOL_FIELDS, f"tools[{i}]")
            self.expect(TOOL_NAME.match(str(tool.get("name"))), f"tools[{i}].name is invalid")
            schema = tool.get("input_schema")
            self.expect(
                isinstance(schema, dict) and schema.get("type") == "object",
                f"tools[{i}].input_schema must be a JSON schema of type 'object'",
            )
            names.add(tool["name"])
        choice = body.get("tool_choice")
        if choice is not None:
            self.expect(tools, "tool_choice may only be given with tools")
            kind = choice.get("type") if isinstance(choice, dict) else None
            self.expect(kind in CHOICE_FIELDS, "tool_choice.type must be auto, any, tool or none")
            self.expect_fields(choice, CHOICE_FIELDS[kind], "tool_choice")
            if kind == "tool":
                self.expect(choice.get("name") in names, "tool_choice.name is not a tool")
        return names

    def _check_messages(self, messages: Any, tool_names: set[str]) -> None:
        self.expect(isinstance(messages, list) and messages, "messages is required")
        previous: Json | None = None
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            self.expect_fields(message, {"role", "content"}, where)
            self.expect(message.get("role") in ("user", "assistant"), f"{where}.role is invalid")
            # The API now merges same-role turns itself, but tool results must be in the turn
            # right after their calls, so a translator that sends alternating turns is safe.
            self.expect(
                previous is None or previous["role"] != message["role"],
                f"{where}: roles must alternate between 'user' and 'assistant'",
            )
            blocks = _blocks(message.get("content"))
            self.expect(blocks, f"{where}: all messages must have non-empty content")
            for j, block in enumerate(blocks):
                self._check_block(block, message["role"], f"{where}.content[{j}]")
            self._check_pairing(previous, blocks, where)
            previous = message
        last_uses = _ids(_blocks(previous["content"]), "tool_use", "id") if previous else []
        self.expect(not last_uses, "tool_use blocks need tool_result blocks after them")

    def _check_block(self, block: Any, role: str, where: str) -> None:
        kind = block.get("type") if isinstance(block, dict) else None
        allowed = {"user": ("text", "tool_result"), "assistant": ("text", "tool_use")}[role]
        self.expect(kind in allowed, f"{where}: a {role} turn cannot hold {kind} blocks")
        self.expect_fields(block, BLOCK_FIELDS[kind], where)
        if kind == "text":
            self.expect(isinstance(block.get("text"), str) and block["text"], f"{where}: empty")
        elif kind == "tool_use":
            self.expect(isinstance(block.get("id"), str), f"{where}.id is required")
            self.expect(TOOL_NAME.match(str(block.get("name"))), f"{where}.name is invalid")
            self.expect(isinstance(block.get("input"), dict), f"{where}.input must be an object")
        else:
            content = block.get("content", "")
            self.expect(
                isinstance(content, str | list), f"{where}.content: a string or content blocks"
            )

    def _check_pairing(self, previous: Json | None, blocks: list[Json], where: str) -> None:
        """Each tool_use is answered by a tool_result at the start of the next turn."""
        results = _ids(blocks, "tool_result", "tool_use_id")
        uses = _ids(_blocks(previous["content"]), "tool_use", "id") if previous else []
        self.expect(
            sorted(results) == sorted(uses),
            f"{where}: tool_result ids {results} do not answer the tool_use ids {uses}",
        )
        leading = [b.get("type") for b in blocks[: len(results)]]
        self.expect(all(t == "tool_result" for t in leading), f"{where}: tool_result goes first")

    # -- the model ------------------------------------------------------------------------------

    def _reply(self, body: Json) -> script.Reply:
        reply = script.reply(_prompt(body))
        choice = body.get("tool_choice") or {}
        calls = reply.calls
        if choice.get("type") == "tool":
            calls = [c for c in calls if c.name == choice["name"]]
        if choice.get("disable_parallel_tool_use"):
            calls = calls[:1]
        if calls != reply.calls:
            reply = dataclasses.replace(reply, calls=calls, completion_tokens=10 * len(calls))
        return reply


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


def _ids(blocks: list[Json], kind: str, key: str) -> list[str]:
    return [b.get(key) for b in blocks if isinstance(b, dict) and b.get("type") == kind]


def _text(blocks: list[Json]) -> str:
    return "".join(b.get("text", "") for b in blocks if b.get("type") == "text")


def _result_text(block: Json) -> str:
    content = block.get("content", "")
    return content if isinstance(content, str) else _text(content)


def _prompt(body: Json) -> script.Prompt:
    messages = body["messages"]
    last = _blocks(messages[-1]["content"])
    users = [_text(_blocks(m["content"])) for m in messages if m["role"] == "user"]
    users = [u for u in users if u]
    choice = body.get("tool_choice") or {}
    fmt = (body.get("output_config") or {}).get("format") or {}
    system = body.get("system")
    return script.Prompt(
        last_user_text=users[-1] if users else "",
        tool_results=[_result_text(b) for b in last if b.get("type") == "tool_result"],
        tools=[script.Tool(t["name"], t["input_schema"]) for t in body.get("tools", [])],
        tool_choice_none=choice.get("type") == "none",
        wants_json=fmt.get("type") == "json_schema",  # the native structured output
        max_tokens=body["max_tokens"],
        stop=body.get("stop_sequences", []),
        system=system if isinstance(system, str) else _text(system or []) or None,
    )


def _stop(body: Json, reply: script.Reply, refusal: bool) -> tuple[str, str | None]:
    if refusal:
        return "refusal", None
    stops = body.get("stop_sequences", [])
    if reply.finish == "stop" and stops:
        # Which stop sequence cut the answer: the one found in the uncut answer.
        uncut = script.reply(dataclasses.replace(_prompt(body), stop=[])).text
        hit = next((s for s in stops if s in uncut), None)
        if hit is not None:
            return "stop_sequence", hit
    return STOP_REASONS[reply.finish], None


def _content(reply: script.Reply) -> list[Json]:
    blocks: list[Json] = [{"type": "text", "text": reply.text}] if reply.text else []
    blocks += [
        {"type": "tool_use", "id": f"toolu_{c.id}", "name": c.name, "input": c.arguments}
        for c in reply.calls
    ]
    return blocks


def _usage(reply: script.Reply) -> Json:
    return {
        "input_tokens": reply.prompt_tokens,
        "output_tokens": reply.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _events(message: Json, failure: str | None) -> Iterator[tuple[str | None, Any]]:
    """The documented event flow for `message`, or its start and then an `error` event."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    if failure is not None:
        error = {"type": failure, "message": f"injected {failure}"}
        yield "error", {"type": "error", "error": error}
        return
    for index, block in enumerate(message["content"]):
        yield from _block_events(index, block)
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def _block_events(index: int, block: Json) -> Iterator[tuple[str, Json]]:
    def delta(body: Json) -> tuple[str, Json]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": body}

    if block["type"] == "text":
        yield "content_block_start", _block_start(index, {"type": "text", "text": ""})
        words = script.Reply(block["text"], [], "stop", 0, 0).words()
        for word in words:
            yield delta({"type": "text_delta", "text": word})
    else:
        yield "content_block_start", _block_start(index, {**block, "input": {}})
        arguments = orjson.dumps(block["input"]).decode()
        half = len(arguments) // 2
        for piece in ("", arguments[:half], arguments[half:]):  # the API may start with ""
            yield delta({"type": "input_json_delta", "partial_json": piece})
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def _block_start(index: int, block: Json) -> Json:
    return {"type": "content_block_start", "index": index, "content_block": block}

"""Amazon Bedrock Runtime (Converse, ConverseStream, InvokeModel), as its API reference has it.

Reference pages checked:
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html and
  API_runtime_ConverseStream.html (paths, body fields, events, errors and their statuses), and
  API_runtime_OutputFormat.html (structured outputs); the same reference in machine-readable
  form is botocore's `bedrock-runtime` service model, against which every body is checked here
  (field names, required fields, one-member unions, enums, ranges).
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html,
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html and
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed-v3.html (bodies).
- https://docs.aws.amazon.com/general/latest/gr/sigv4-create-canonical-request.html (SigV4):
  the signature is recomputed with botocore from the request as received and compared.
- https://docs.aws.amazon.com/lexv2/latest/dg/event-stream-encoding.html (the binary
  `application/vnd.amazon.eventstream` framing, encoded here by hand from that layout).

Errors are `{"message": ...}` with the type in `x-amzn-ErrorType`; signature failures are 403s.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import botocore.loaders
import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tests.fakes import script
from tests.fakes.harness import FakeUpstream, Json, json_response

SHAPES: dict[str, Any] = botocore.loaders.Loader().load_service_model(
    "bedrock-runtime", "service-2"
)["shapes"]
ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TITAN_V2_FIELDS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
COHERE_FIELDS = {"texts", "images", "input_type", "truncate", "embedding_types"}


def conform(value: Any, shape_name: str, where: str) -> list[str]:
    """How `value` strays from the service model's shape `shape_name` (empty: it does not)."""
    shape = SHAPES[shape_name]
    if shape.get("document"):
        return []  # any JSON
    kind = shape["type"]
    if kind == "structure":
        return _structure(value, shape, where)
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where} must be a list"]
        problems = _bounds(len(value), shape, f"{where} length")
        for i, item in enumerate(value):
            problems += conform(item, shape["member"]["shape"], f"{where}[{i}]")
        return problems
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where} must be an object"]
        return [p for k, v in value.items() for p in conform(v, shape["value"]["shape"], k)]
    return _scalar(value, shape, kind, where)


def _structure(value: Any, shape: Json, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where} must be an object"]
    members = {k: m for k, m in shape["members"].items() if "location" not in m}
    problems = []
    unknown = set(value) - set(members)
    if unknown:
        problems.append(f"{where} has fields the API does not document: {sorted(unknown)}")
    missing = [k for k in shape.get("required", ()) if k in members and k not in value]
    if missing:
        problems.append(f"{where} is missing required {missing}")
    if shape.get("union") and len(value) != 1:
        problems.append(f"{where} is a union: set exactly one of {sorted(members)}")
    for key in set(value) & set(members):
        problems += conform(value[key], members[key]["shape"], f"{where}.{key}")
    return problems


def _scalar(value: Any, shape: Json, kind: str, where: str) -> list[str]:
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where} must be a string"]
        if "enum" in shape and value not in shape["enum"]:
            return [f"{where} must be one of {shape['enum']}"]
        return _bounds(len(value), shape, f"{where} length")
    if kind in ("integer", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return _bounds(value, shape, where) if ok else [f"{where} must be an integer"]
    if kind in ("float", "double"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return _bounds(value, shape, where) if ok else [f"{where} must be a number"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where} must be a boolean"]
    return []


def _bounds(number: float, shape: Json, where: str) -> list[str]:
    if "min" in shape and number < shape["min"]:
        return [f"{where} must be at least {shape['min']}"]
    if "max" in shape and number > shape["max"]:
        return [f"{where} must be at most {shape['max']}"]
    return []


# -- the event-stream framing -----------------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers length), its CRC32, headers,
    payload, and the CRC32 of everything before it. Header values are strings (type 7)."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes([len(raw_name)]) + raw_name + b"\x07"
        encoded += struct.pack(">H", len(raw_value)) + raw_value
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(name: str, body: Json) -> bytes:
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, orjson.dumps(body))


def exception(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, orjson.dumps({"message": message}))


# -- the fake -------------------------------------------------------------------------------


class FakeBedrock(FakeUpstream):
    """Checks every request's SigV4 signature against `access_key`/`secret_key` in `region`."""

    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.model_ids: list[str] = []  # decoded model ids, in request order
        self.raw_paths: list[str] = []  # paths as they came over the wire
        self._stream_failures: list[tuple[str, str]] = []

    def fail_stream_next(self, exception_type: str, message: str) -> None:
        """The next ConverseStream answers 200, then this exception event after messageStart."""
        self._stream_failures.append((exception_type, message))

    def reset(self) -> None:
        super().reset()
        self.model_ids.clear()
        self.raw_paths.clear()
        self._stream_failures.clear()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/model/{model_id}/converse", self.converse),
            web.post("/model/{model_id}/converse-stream", self.converse_stream),
            web.post("/model/{model_id}/invoke", self.invoke),
        ]

    def error_response(
        self, status: int, message: str, error_type: str | None = None
    ) -> web.Response:
        kind = error_type or ERROR_TYPES.get(status, "InternalServerException")
        return json_response(
            {"message": message},
            status,
            headers={
                "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                "x-amzn-RequestId": "00000000-0000-4000-8000-000000000000",
            },
        )

    # -- checks ---------------------------------------------------------------------------

    def _admit(self, request: web.Request) -> tuple[Json, web.Response | None]:
        """The JSON body, or the 403 AWS answers a badly signed request with."""
        recorded = self.requests[-1]
        refusal = self._signature_problem(request, recorded.body)
        if refusal is not None:
            message, kind = refusal
            self.violations.append(f"{request.method} {request.path}: {message}")
            return {}, self.error_response(403, message, kind)
        raw = request.raw_path.split("/")[2]
        self.expect(
            quote(unquote(raw), safe="-._~") == raw,
            f"the modelId in the path must be URL-encoded ('{raw}' is not)",
        )
        self.model_ids.append(unquote(raw))
        self.raw_paths.append(request.raw_path)
        self.expect(
            request.headers.get("Content-Type", "").startswith("application/json"),
            "Content-Type must be application/json",
        )
        body = recorded.json()
        self.expect(isinstance(body, dict), "the body must be a JSON object")
        return body, None

    def _signature_problem(self, request: web.Request, body: bytes) -> tuple[str, str] | None:
        """(message, error type) when the SigV4 signature is missing, stale or wrong."""
        authorization = request.headers.get("Authorization")
        if not authorization:
            return "Missing Authentication Token", "MissingAuthenticationTokenException"
        match = _AUTHORIZATION.match(authorization)
        if match is None:
            return "Authorization header is not a SigV4 header.", "IncompleteSignatureException"
        stamp = request.headers.get("X-Amz-Date", "")
        try:
            signed_at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.UTC
            )
        except ValueError:
            return "X-Amz-Date must be yyyyMMddTHHmmssZ.", "IncompleteSignatureException"
        if abs(datetime.datetime.now(datetime.UTC) - signed_at) > datetime.timedelta(minutes=15):
            return "Signature expired.", "InvalidSignatureException"
        if match["key"] != self.access_key:
            return (
                "The security token included in the request is invalid.",
                "UnrecognizedClientException",
            )
        scope = (match["date"], match["region"], match["service"])
        if scope != (stamp[:8], self.region, "bedrock"):
            return (
                f"Credential should be scoped to {stamp[:8]}/{self.region}/bedrock.",
                "InvalidSignatureException",
            )
        return self._signed_headers_problem(request, body, match["signed"].split(";"))

    def _signed_headers_problem(
        self, request: web.Request, body: bytes, signed: list[str]
    ) -> tuple[str, str] | None:
        unsigned = [
            name
            for name in request.headers
            if name.lower().startswith("x-amz-") and name.lower() not in signed
        ]
        if "host" not in signed or unsigned:
            return "host and every x-amz-* header must be signed.", "InvalidSignatureException"
        given = request.headers.get("X-Amz-Content-SHA256")
        if given is not None and given != hashlib.sha256(body).hexdigest():
            return (
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                "InvalidSignatureException",
            )
        if request.headers["Authorization"] != self._expected_authorization(request, body, signed):
            return _MISMATCH, "InvalidSignatureException"
        return None

    def _expected_authorization(self, request: web.Request, body: bytes, signed: list[str]) -> str:
        """The Authorization botocore makes for this request as received, at its X-Amz-Date."""
        headers = {name: request.headers[name] for name in signed if name in request.headers}
        rebuilt = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            data=body,
            headers=headers,
        )
        rebuilt.context["timestamp"] = request.headers["X-Amz-Date"]
        signer = SigV4Auth(Credentials(self.access_key, self.secret_key), "bedrock", self.region)
        canonical = signer.canonical_request(rebuilt)
        signature = signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt)
        names = signer.signed_headers(signer.headers_to_sign(rebuilt))
        return (
            f"AWS4-HMAC-SHA256 Credential={signer.scope(rebuilt)}, SignedHeaders={names}, "
            f"Signature={signature}"
        )

    def _check_converse(self, body: Json, shape: str) -> None:
        problems = conform(body, shape, "request")
        self.expect(not problems, "; ".join(problems))
        messages = body.get("messages")
        self.expect(isinstance(messages, list) and messages, "messages is required")
        self.expect(messages[0]["role"] == "user", "A conversation must start with a user message.")
        for i, message in enumerate(messages):
            self.expect(message["role"] in ("user", "assistant"), f"messages[{i}].role is invalid")
            if i:
                self.expect(
                    message["role"] != messages[i - 1]["role"],
                    "A conversation must alternate between user and assistant roles.",
                )
            for j, block in enumerate(message["content"]):
                self.expect(
                    "text" not in block or block["text"].strip(),
                    f"The text field in the ContentBlock object at messages.{i}.content.{j} "
                    "is blank.",
                )
        self._check_tools(body, messages)
        schema = ((body.get("outputConfig") or {}).get("textFormat") or {}).get("structure")
        if schema:
            self.expect(
                isinstance(orjson.loads(schema["jsonSchema"]["schema"]), dict),
                "outputConfig.textFormat.structure.jsonSchema.schema must be a JSON schema",
            )

    def _check_tools(self, body: Json, messages: list[Json]) -> None:
        config = body.get("toolConfig")
        used = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
        self.expect(
            config or not used,
            "The toolConfig field must be defined when using toolUse and toolResult content "
            "blocks.",
        )
        names = [t["toolSpec"]["name"] for t in (config or {}).get("tools", []) if "toolSpec" in t]
        for name in names:
            self.expect(_TOOL_NAME.match(name), f"tool name '{name}' is invalid")
        forced = ((config or {}).get("toolChoice") or {}).get("tool")
        self.expect(not forced or forced["name"] in names, "toolChoice names an unknown tool")
        for i, message in enumerate(messages):
            results = [
                b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b
            ]
            if not results:
                continue
            asked = [
                b["toolUse"]["toolUseId"] for b in messages[i - 1]["content"] if "toolUse" in b
            ]
            self.expect(
                i > 0 and sorted(results) == sorted(asked),
                f"messages.{i}: toolResult blocks must answer exactly the toolUse ids {asked}",
            )

    # -- handlers -------------------------------------------------------------------------

    async def converse(self, request: web.Request) -> web.StreamResponse:
        body, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        self._check_converse(body, "ConverseRequest")
        reply = script.reply(_prompt(body))
        content: list[Json] = [{"text": reply.text}] if reply.text else []
        content += [{"toolUse": _tool_use(call)} for call in reply.calls]
        return json_response(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": _STOP[reply.finish],
                "usage": _usage(reply),
                "metrics": {"latencyMs": 12},
            }
        )

    async def converse_stream(self, request: web.Request) -> web.StreamResponse:
        body, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        self._check_converse(body, "ConverseStreamRequest")
        reply = script.reply(_prompt(body))
        failure = self._stream_failures.pop(0) if self._stream_failures else None
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        for message in _events(reply, failure):
            # Split each message over two writes, as a network may: decoders must buffer.
            await resp.write(message[:7])
            await resp.write(message[7:])
        await resp.write_eof()
        return resp

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        body, refusal = self._admit(request)
        if refusal is not None:
            return refusal
        self.expect(
            request.headers.get("Accept", "*/*") in ("application/json", "*/*"),
            "Accept must allow application/json (the embedding models answer JSON)",
        )
        model = self.model_ids[-1]
        if model.startswith("amazon.titan-embed-text"):
            allowed = TITAN_V2_FIELDS if "-v2" in model else {"inputText"}
            self.expect_fields(body, allowed, "request")
            self.expect(isinstance(body.get("inputText"), str), "inputText is required")
            vector = _vector(body["inputText"])
            answer: Json = {
                "embedding": vector,
                "inputTextTokenCount": len(body["inputText"].split()),
            }
            if "-v2" in model:
                answer["embeddingsByType"] = {"float": vector}
            return json_response(answer)
        if model.startswith("cohere.embed"):
            self.expect_fields(body, COHERE_FIELDS, "request")
            texts = body.get("texts")
            self.expect(isinstance(texts, list) and len(texts) <= 96, "texts: at most 96 texts")
            self.expect(
                body.get("input_type")
                in ("search_document", "search_query", "classification", "clustering"),
                "input_type is required",
            )
            return json_response(
                {
                    "id": "emb-fake",
                    "embeddings": [_vector(t) for t in texts],
                    "response_type": "embeddings_floats",
                    "texts": texts,
                }
            )
        return self.error_response(404, f"The model {model} does not exist (in this fake).")


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _prompt(body: Json) -> script.Prompt:
    """What the Converse request asks the shared fake model."""
    messages = body["messages"]
    last = messages[-1]
    results = [
        "".join(part.get("text", "") for part in block["toolResult"]["content"])
        for block in last["content"]
        if "toolResult" in block and last["role"] == "user"
    ]
    user_texts = [
        "".join(b["text"] for b in m["content"] if "text" in b)
        for m in messages
        if m["role"] == "user" and any("text" in b for b in m["content"])
    ]
    tools = (body.get("toolConfig") or {}).get("tools") or []
    system = " ".join(block.get("text", "") for block in body.get("system") or [])
    inference = body.get("inferenceConfig") or {}
    return script.Prompt(
        last_user_text=user_texts[-1] if user_texts else "",
        tool_results=results,
        tools=[
            script.Tool(t["toolSpec"]["name"], t["toolSpec"]["inputSchema"]["json"])
            for t in tools
            if "toolSpec" in t
        ],
        # Like a real model, the fake answers in JSON when the system prompt asks for it.
        wants_json="outputConfig" in body or "JSON" in system,
        max_tokens=inference.get("maxTokens"),
        stop=inference.get("stopSequences") or [],
        system=system or None,
    )


def _tool_use(call: script.Call) -> Json:
    return {"toolUseId": f"tooluse_{call.id}", "name": call.name, "input": call.arguments}


def _usage(reply: script.Reply) -> Json:
    return {
        "inputTokens": reply.prompt_tokens,
        "outputTokens": reply.completion_tokens,
        "totalTokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _vector(text: str) -> list[float]:
    return [float(len(text)), 0.5, -0.5]


def _events(reply: script.Reply, failure: tuple[str, str] | None) -> Iterator[bytes]:
    """The ConverseStream messages for `reply`, in the documented order."""
    yield event("messageStart", {"role": "assistant"})
    if failure is not None:
        yield exception(*failure)
        return
    block = 0
    if reply.text:
        for word in reply.words():
            yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}})
        yield event("contentBlockStop", {"contentBlockIndex": 0})
        block = 1
    for i, call in enumerate(reply.calls, start=block):
        use = _tool_use(call)
        start = {"toolUse": {"toolUseId": use["toolUseId"], "name": call.name}}
        yield event("contentBlockStart", {"contentBlockIndex": i, "start": start})
        arguments = orjson.dumps(call.arguments).decode()
        for part in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
            delta = {"toolUse": {"input": part}}
            yield event("contentBlockDelta", {"contentBlockIndex": i, "delta": delta})
        yield event("contentBlockStop", {"contentBlockIndex": i})
    yield event("messageStop", {"stopReason": _STOP[reply.finish]})
    yield event("metadata", {"usage": _usage(reply), "metrics": {"latencyMs": 12}})

"""`amazon-bedrock`: chat through Bedrock's Converse API, embeddings through InvokeModel.

Converse is one request shape for every Bedrock chat model, so `bedrock_provider` matters only
for embeddings (Titan's or Cohere's body). Every request is SigV4-signed (see `aws.py`).

Translation choices:
- System and developer messages become `system` blocks; tool calls become `toolUse` blocks,
  tool results `toolResult` blocks in one user turn; same-role turns are merged.
- `max_tokens` is sent only when given: Converse does not require it (the model's default).
- `top_k` and the client's unknown keys and `extra_params` go to
  `additionalModelRequestFields`, except Converse's own top-level fields (`guardrailConfig`,
  `performanceConfig`, ...), which go where Converse wants them. `user` becomes
  `requestMetadata.user`. `top_k` keeps its name, which Claude and Llama use; a model that
  names it otherwise (Nova) takes it through `extra_params` in its own shape.
- `tool_choice` "none": Converse has no such choice, so the tools are left out; but a history
  with tool calls needs `toolConfig` (Bedrock refuses toolUse blocks without it), so then the
  tools are sent and the model is left to decide.
- `response_format` json_schema → `outputConfig.textFormat` (structured outputs). Converse has
  no bare JSON mode, so json_object asks for JSON in the system prompt.
- Not in Converse, so ignored: `seed`, `presence_penalty`, `frequency_penalty`,
  `parallel_tool_calls`. Asking for `logprobs` is a 400.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from modelyard.errors import BadRequest, UpstreamError
from modelyard.providers import aws, fanout, http, shapes
from modelyard.providers.base import Json
from modelyard.providers.external import ExternalProvider, ProviderConfig
from modelyard.schemas.endpoints import ExternalModel
from modelyard.schemas.query import ChatRequest, EmbeddingRequest, Message, Task

REGION_PATTERN = r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$"  # us-east-1, us-gov-west-1, eusc-de-east-1
EMBEDDING_PROVIDERS = ("amazon", "cohere")
JSON_INSTRUCTION = "Answer with a single JSON object and nothing else."
# Converse's own top-level request fields, which a client may send as extra keys.
CONVERSE_FIELDS = frozenset(
    {
        "guardrailConfig",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
COHERE_BATCH = 96  # Cohere Embed on Bedrock takes at most 96 texts a call
TITAN_PARALLEL = 8  # Titan embeds one text a call; this many calls run at once

_FINISH: dict[str, shapes.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


class BedrockConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {
        "aws_access_key_id": True,
        "aws_secret_access_key": True,
    }

    aws_region: str = Field(pattern=REGION_PATTERN)
    aws_access_key_id: str | None = None
    aws_access_key_id_plaintext: str | None = None
    aws_secret_access_key: str | None = None
    aws_secret_access_key_plaintext: str | None = None
    bedrock_provider: Literal["anthropic", "cohere", "ai21labs", "amazon"]
    # Ours: the Bedrock Runtime origin (a VPC endpoint, a proxy, a test fake).
    bedrock_endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    # Databricks' alternative to keys; accepted only to say why it cannot work here.
    instance_profile_arn: str | None = None

    @field_validator("bedrock_provider", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        # Databricks takes the provider in any case ("Anthropic", "AI21Labs").
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _no_instance_profile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("instance_profile_arn") is not None:
            raise ValueError(
                "instance_profile_arn is not supported: this server does not run on an AWS "
                "instance profile; give aws_access_key_id and aws_secret_access_key instead"
            )
        return data

    @property
    def endpoint(self) -> str:
        if self.bedrock_endpoint_url:
            return self.bedrock_endpoint_url.rstrip("/")
        domain = "amazonaws.com.cn" if self.aws_region.startswith("cn-") else "amazonaws.com"
        return f"https://bedrock-runtime.{self.aws_region}.{domain}"


class BedrockProvider(ExternalProvider):
    kind = "amazon-bedrock"
    config_key = "amazon_bedrock_config"
    config_model = BedrockConfig
    config: BedrockConfig
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.EMBEDDINGS})

    @classmethod
    def check(cls, model: ExternalModel, config: ProviderConfig) -> None:
        assert isinstance(config, BedrockConfig)
        if model.task == Task.EMBEDDINGS and config.bedrock_provider not in EMBEDDING_PROVIDERS:
            raise BadRequest(
                f"bedrock_provider '{config.bedrock_provider}' has no embedding models on "
                "Bedrock; use 'amazon' (Titan) or 'cohere' (Cohere Embed)."
            )

    def signed_call(self, operation: str, body: Json) -> http.Call:
        """A POST of `body` to `/model/{modelId}/{operation}`, signed for this entity's keys."""
        url = f"{self.config.endpoint}/model/{aws.path_label(self.model.name)}/{operation}"
        data = orjson.dumps(body)
        headers = {"Content-Type": "application/json"}
        if operation == "invoke":  # InvokeModel's answer type is chosen by Accept
            headers["Accept"] = "application/json"
        headers = aws.signed_headers(
            url,
            data,
            headers,
            key_id=self.credential("aws_access_key_id").value(),
            secret=self.credential("aws_secret_access_key").value(),
            region=self.config.aws_region,
        )
        return replace(self.call(url, data, headers), encoded_url=True)

    # -- chat ---------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> Json:
        if request.n > 1:  # Converse makes one message per call
            single = request.model_copy(update={"n": 1})
            return await fanout.merged_answer([self.chat(single) for _ in range(request.n)])
        body = await self.post_json(self.signed_call("converse", payload(request)))
        return answer(body, self.model.name)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        if request.n > 1:
            single = request.model_copy(update={"n": 1})
            return fanout.merged_stream([self._stream(single) for _ in range(request.n)])
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Json]:
        call = self.signed_call("converse-stream", payload(request))
        translator = StreamTranslator(shapes.ChunkWriter(model=self.model.name))
        messages = aws.stream_messages(self.post_stream(call), self.upstream)
        async with aclosing(messages):
            async for message in messages:
                if message.kind != "event":
                    raise self.scrubbed(aws.stream_failure(self.upstream, message))
                for chunk in translator.on(message.name, message.payload):
                    yield chunk
        if not translator.finished:
            raise UpstreamError(f"{self.upstream} ended the stream before messageStop.")

    # -- embeddings ---------------------------------------------------------------------------

    async def embeddings(self, request: EmbeddingRequest) -> Json:
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if not texts:
            raise BadRequest("input must hold at least one text.")
        extras = dict(request.model_extra or {})
        extras.update(extras.pop("extra_params", None) or {})
        embed = self._titan if self.config.bedrock_provider == "amazon" else self._cohere
        vectors, tokens = await embed(texts, extras)
        return embedding_list(vectors, tokens, self.model.name, request.encoding_format)

    async def _titan(self, texts: list[str], extras: Json) -> tuple[list[list[float]], int]:
        """Titan Text Embeddings: one text per InvokeModel call, a few calls at a time."""
        gate = asyncio.Semaphore(TITAN_PARALLEL)

        async def one(text: str) -> Json:
            async with gate:
                return await self.post_json(
                    self.signed_call("invoke", {"inputText": text, **extras})
                )

        answers = await asyncio.gather(*(one(text) for text in texts))
        vectors = [self._vector(a.get("embedding")) for a in answers]
        return vectors, sum(int(a.get("inputTextTokenCount") or 0) for a in answers)

    async def _cohere(self, texts: list[str], extras: Json) -> tuple[list[list[float]], int]:
        """Cohere Embed: up to 96 texts a call. Its answer carries no token count."""
        body = {"input_type": "search_document", **extras}
        calls = [
            self.post_json(
                self.signed_call("invoke", {**body, "texts": texts[i : i + COHERE_BATCH]})
            )
            for i in range(0, len(texts), COHERE_BATCH)
        ]
        vectors: list[list[float]] = []
        for answer_ in await asyncio.gather(*calls):
            found = answer_.get("embeddings")
            if isinstance(found, dict):  # asked with embedding_types: vectors by type
                found = found.get("float")
            if not isinstance(found, list):
                raise UpstreamError(f"{self.upstream} answered without float embeddings.")
            vectors.extend(self._vector(v) for v in found)
        return vectors, 0

    def _vector(self, value: Any) -> list[float]:
        if not isinstance(value, list):
            raise UpstreamError(f"{self.upstream} answered without an embedding.")
        return value


# -- requests -------------------------------------------------------------------------------


def payload(request: ChatRequest) -> Json:
    """The Converse (and ConverseStream) request body for `request`."""
    if request.logprobs:
        raise BadRequest("Provider 'amazon-bedrock' cannot return logprobs; leave logprobs unset.")
    messages = turns(request.messages)
    body: Json = {"messages": messages}
    system = [{"text": m.text()} for m in request.messages if _is_system(m) and m.text().strip()]
    if request.response_format is not None and request.response_format.type == "json_object":
        system.append({"text": JSON_INSTRUCTION})
    if system:
        body["system"] = system
    inference = {
        key: value
        for key, value in (
            ("maxTokens", request.max_tokens),
            ("temperature", request.temperature),
            ("topP", request.top_p),
            ("stopSequences", shapes.stop_sequences(request)),
        )
        if value is not None
    }
    if inference:
        body["inferenceConfig"] = inference
    tools = tool_config(request, messages)
    if tools:
        body["toolConfig"] = tools
    body.update(output_config(request))
    body.update(_extras(request))
    return body


def _extras(request: ChatRequest) -> Json:
    """Top-level Converse fields from the client's extras; everything else for the model."""
    extras = shapes.passthrough(request)
    extras.pop("parallel_tool_calls", None)  # no Converse counterpart
    top: Json = {}
    if isinstance(extras.get("user"), str):  # OpenAI's end-user id, kept in invocation logs
        top["requestMetadata"] = {"user": extras.pop("user")}
    model: Json = {"top_k": request.top_k} if request.top_k is not None else {}
    nested = extras.pop("additionalModelRequestFields", None)
    if isinstance(nested, dict):
        model.update(nested)
    for key, value in extras.items():
        (top if key in CONVERSE_FIELDS else model)[key] = value
    if model:
        top["additionalModelRequestFields"] = model
    return top


def _is_system(message: Message) -> bool:
    return message.role in ("system", "developer")


def turns(messages: Iterable[Message]) -> list[Json]:
    """User and assistant turns, alternating: consecutive same-role messages become one turn."""
    result: list[Json] = []
    for i, message in enumerate(messages):
        if _is_system(message):
            continue  # sent as `system`
        role, blocks = _blocks(message, i)
        if not blocks:
            continue  # Bedrock refuses empty turns
        if result and result[-1]["role"] == role:
            result[-1]["content"].extend(blocks)
        else:
            result.append({"role": role, "content": blocks})
    for turn in result:
        # Tool results open the user turn that answers the tool calls (Claude insists).
        turn["content"].sort(key=lambda block: "toolResult" not in block)
    return result


def _blocks(message: Message, i: int) -> tuple[str, list[Json]]:
    texts = [{"text": t} for t in message.texts() if t.strip()]  # blank text is refused
    if message.role == "tool":
        if not message.tool_call_id:
            raise BadRequest(f"messages[{i}].tool_call_id is required for a tool message.")
        result = {"toolUseId": message.tool_call_id, "content": texts}
        return "user", [{"toolResult": result}]
    if message.role == "assistant":
        uses = [
            {
                "toolUse": {
                    "toolUseId": call.id,
                    "name": call.function.name,
                    "input": shapes.parse_arguments(
                        call.function.arguments, f"messages[{i}].tool_calls[{j}]"
                    ),
                }
            }
            for j, call in enumerate(message.tool_calls or ())
        ]
        return "assistant", texts + uses
    return "user", texts


def tool_config(request: ChatRequest, messages: list[Json]) -> Json | None:
    """`toolConfig` for the request's tools and `tool_choice`, or None to send no tools."""
    declared = [{"toolSpec": _spec(tool)} for tool in shapes.function_tools(request)]
    choice = shapes.tool_choice(request)
    if not declared:
        if choice is not None and choice.mode in ("required", "function"):
            raise BadRequest(f"tool_choice '{choice.name or choice.mode}' needs `tools`.")
        return None
    if choice is None:
        return {"tools": declared}
    if choice.mode == "none":
        used = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
        return {"tools": declared} if used else None
    wanted = {
        "auto": {"auto": {}},
        "required": {"any": {}},
        "function": {"tool": {"name": choice.name}},
    }[choice.mode]
    return {"tools": declared, "toolChoice": wanted}


def _spec(tool: shapes.FunctionTool) -> Json:
    spec: Json = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
    if tool.description:
        spec["description"] = tool.description
    return spec


def output_config(request: ChatRequest) -> Json:
    """`outputConfig` for a json_schema response format (Bedrock's structured outputs)."""
    schema = shapes.json_schema(request)
    if schema is None:
        return {}
    given = (request.response_format.json_schema or {}) if request.response_format else {}
    definition: Json = {"schema": orjson.dumps(schema).decode()}  # a JSON string, not an object
    definition.update({k: given[k] for k in ("name", "description") if given.get(k)})
    return {
        "outputConfig": {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}
        }
    }


# -- answers --------------------------------------------------------------------------------


def answer(body: Json, model: str) -> Json:
    """A Converse response as an OpenAI chat completion."""
    message = (body.get("output") or {}).get("message") or {}
    text: list[str] = []
    calls: list[shapes.ToolCallOut] = []
    for block in message.get("content") or ():
        if "text" in block:
            text.append(block["text"] or "")
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = shapes.dump_arguments(use.get("input"))
            calls.append(shapes.ToolCallOut(use["toolUseId"], use["name"], arguments))
    usage = body.get("usage") or {}
    return shapes.chat_completion(
        model=model,
        content="".join(text),
        finish_reason=finish_reason(body.get("stopReason")),
        usage_=shapes.usage(
            int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)
        ),
        tool_calls=calls,
    )


def finish_reason(stop_reason: str | None) -> shapes.FinishReason:
    return _FINISH.get(stop_reason or "end_turn", "stop")


@dataclass
class StreamTranslator:
    """Turns ConverseStream events into OpenAI chunks, one event at a time."""

    writer: shapes.ChunkWriter
    finished: bool = False
    _calls: dict[int, int] = field(default_factory=dict)  # content block → tool call index
    _argued: set[int] = field(default_factory=set)  # tool calls that got argument fragments

    def on(self, event: str, payload: Any) -> list[Json]:
        handlers: dict[str, Callable[[Json], list[Json]]] = {
            "contentBlockStart": self._start,
            "contentBlockDelta": self._delta,
            "contentBlockStop": self._stop,
            "messageStop": self._message_stop,
            "metadata": self._metadata,
        }
        handler = handlers.get(event)
        # messageStart says only the role, which the first chunk carries anyway.
        return handler(payload) if handler and isinstance(payload, dict) else []

    def _start(self, event: Json) -> list[Json]:
        use = (event.get("start") or {}).get("toolUse")
        if not use:
            return []
        index = self._calls[event.get("contentBlockIndex", 0)] = len(self._calls)
        return [self.writer.tool_call_start(index, use["toolUseId"], use["name"])]

    def _delta(self, event: Json) -> list[Json]:
        delta = event.get("delta") or {}
        if delta.get("text"):
            return [self.writer.text(delta["text"])]
        fragment = (delta.get("toolUse") or {}).get("input")
        index = self._calls.get(event.get("contentBlockIndex", 0))
        if not fragment or index is None:
            return []  # reasoning and citations have no OpenAI counterpart
        self._argued.add(index)
        return [self.writer.tool_call_arguments(index, fragment)]

    def _stop(self, event: Json) -> list[Json]:
        index = self._calls.get(event.get("contentBlockIndex", 0))
        if index is None or index in self._argued:
            return []
        self._argued.add(index)  # a call without input: OpenAI's arguments are still JSON
        return [self.writer.tool_call_arguments(index, "{}")]

    def _message_stop(self, event: Json) -> list[Json]:
        self.finished = True
        return [self.writer.finish(finish_reason(event.get("stopReason")))]

    def _metadata(self, event: Json) -> list[Json]:
        usage = event.get("usage") or {}
        return [
            self.writer.usage(
                int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)
            )
        ]


def embedding_list(
    vectors: list[list[float]], tokens: int, model: str, encoding: str = "float"
) -> Json:
    """An OpenAI embeddings answer; base64 is the float32 little-endian bytes, as OpenAI's."""
    encode: Callable[[list[float]], Any] = (
        (lambda v: base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode())
        if encoding == "base64"
        else (lambda v: v)
    )
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

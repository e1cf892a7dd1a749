"""OpenAI chat requests as Gemini `generateContent` requests, and Gemini's answers back.

Shared by `gemini` (Google AI Studio) and `google-cloud-vertex-ai`, whose request and response
bodies are the same. Choices made here:
- System and developer messages become `systemInstruction`; assistant turns are role `model`;
  tool results are `functionResponse` parts in a `user` turn (consecutive results in one turn).
  Gemini matches results to calls by function name, so the name is looked up from the
  assistant's `tool_calls` in the history by `tool_call_id`.
- Schemas go to the JSON Schema fields (`parametersJsonSchema`, `responseJsonSchema`) as the
  client sent them, not to the OpenAPI-subset `Schema` fields: nothing is rewritten or
  dropped, and a keyword Gemini does not take is its to refuse (its 400 reaches the client).
- Gemini gives tool calls no ids (newer models may; theirs is kept): we make them. Thinking
  models sign a function call (`thoughtSignature`) and Gemini 3 refuses a history whose calls
  lost it. OpenAI has no field for it, so each provider remembers the signatures of the calls
  it handed out, by tool-call id; a call it does not know (another server, a restart) is sent
  with the placeholder Google documents for calls it did not sign.
- `n` is `candidateCount`. `logprobs` is not translated; `user` and `parallel_tool_calls` have
  no Gemini counterpart and are dropped.
"""

from __future__ import annotations

import base64
import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.errors import BadRequest, UpstreamError
from modelyard.providers import http, shapes
from modelyard.schemas.query import ChatRequest, EmbeddingRequest, Message

Json = dict[str, Any]

# Google's documented stand-in for a thought signature the history no longer has.
SKIP_SIGNATURE = "skip_thought_signature_validator"
# `generationConfig` fields: extra params named like these go inside it, the rest top-level.
GENERATION_CONFIG_FIELDS = frozenset(
    {
        "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
        "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP",
        "topK", "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
        "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "imageConfig",
        "mediaResolution", "routingConfig", "modelConfig", "audioTimestamp",
    }
)  # fmt: skip
_FINISH: dict[str, shapes.FinishReason] = {
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}
# OpenAI keys clients send that Gemini has nothing for (it would refuse the request with them).
OPENAI_ONLY = ("user", "parallel_tool_calls")
_TOOL_MODE = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}


class Signatures:
    """Thought signatures of the tool calls a provider handed out, newest `limit` kept."""

    def __init__(self, limit: int = 4096) -> None:
        self._by_call: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def remember(self, call_id: str, signature: str) -> None:
        self._by_call[call_id] = signature
        self._by_call.move_to_end(call_id)
        while len(self._by_call) > self._limit:
            self._by_call.popitem(last=False)

    def recall(self, call_id: str) -> str | None:
        return self._by_call.get(call_id)


# -- requests -------------------------------------------------------------------------------


def request_body(request: ChatRequest, signatures: Signatures) -> Json:
    """The `generateContent` body for `request` (streamed or not: the body is the same)."""
    body: Json = {"contents": contents(request.messages, signatures)}
    system = shapes.system_prompt(request.messages)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config = generation_config(request)
    if config:
        body["generationConfig"] = config
    body.update(tool_fields(request))
    extras = shapes.passthrough(request)
    for key in OPENAI_ONLY:
        extras.pop(key, None)
    merge_extras(body, extras)
    return body


def contents(messages: list[Message], signatures: Signatures) -> list[Json]:
    """The conversation as Gemini turns; adjacent turns of one role become one turn."""
    names: dict[str, str] = {}
    turns: list[Json] = []
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        for call in message.tool_calls or ():
            names[call.id] = call.function.name
        turn = _turn(i, message, names, signatures)
        if turns and turns[-1]["role"] == turn["role"]:
            turns[-1]["parts"].extend(turn["parts"])
        else:
            turns.append(turn)
    if not turns:
        raise BadRequest("messages needs at least one user message besides the system prompt.")
    return turns


def _turn(i: int, message: Message, names: dict[str, str], signatures: Signatures) -> Json:
    if message.role == "tool":
        return {"role": "user", "parts": [_tool_result(i, message, names)]}
    parts = [{"text": text} for text in message.texts() if text]
    for n, call in enumerate(message.tool_calls or ()):
        where = f"messages[{i}].tool_calls[{n}]"
        part: Json = {
            "functionCall": {
                "name": call.function.name,
                "args": shapes.parse_arguments(call.function.arguments, where),
            }
        }
        signature = signatures.recall(call.id) or (SKIP_SIGNATURE if n == 0 else None)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    role = "model" if message.role == "assistant" else "user"
    return {"role": role, "parts": parts or [{"text": ""}]}


def _tool_result(i: int, message: Message, names: dict[str, str]) -> Json:
    name = names.get(message.tool_call_id or "") or message.name
    if not name:
        raise BadRequest(
            f"messages[{i}] is a tool result whose tool_call_id matches no tool call of an "
            "earlier assistant message; Gemini needs the function's name, so keep the "
            "assistant message with its tool_calls in the history (or set the message's name)."
        )
    return {"functionResponse": {"name": name, "response": _tool_output(message.text())}}


def _tool_output(text: str) -> Json:
    """A tool's output as the object Gemini wants: a JSON object as is, else under `output`."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"output": text}


def generation_config(request: ChatRequest) -> Json:
    """Sampling, limits, stop sequences, candidates and JSON output."""
    config: Json = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "topK": request.top_k,
        # No default: Gemini does not require a limit and each model has its own maximum.
        "maxOutputTokens": request.max_tokens,
        "stopSequences": shapes.stop_sequences(request),
        "candidateCount": request.n if request.n > 1 else None,
        "seed": request.seed,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
    }
    if shapes.wants_json(request):
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = shapes.json_schema(request)
    return {key: value for key, value in config.items() if value is not None}


def tool_fields(request: ChatRequest) -> Json:
    """`tools` and `toolConfig` for the request's functions and `tool_choice`."""
    tools = shapes.function_tools(request)
    if not tools:
        return {}
    declarations = []
    for tool in tools:
        declaration: Json = {"name": tool.name, "parametersJsonSchema": tool.parameters}
        if tool.description:
            declaration["description"] = tool.description
        declarations.append(declaration)
    fields: Json = {"tools": [{"functionDeclarations": declarations}]}
    choice = shapes.tool_choice(request)
    if choice is not None:
        calling: Json = {"mode": _TOOL_MODE[choice.mode]}
        if choice.name:
            calling["allowedFunctionNames"] = [choice.name]
        fields["toolConfig"] = {"functionCallingConfig": calling}
    return fields


def merge_extras(body: Json, extras: Json) -> None:
    """Extra params into the body: `generationConfig` fields (by name or nested) merged."""
    config = dict(body.get("generationConfig") or {})
    for key, value in extras.items():
        if key in GENERATION_CONFIG_FIELDS:
            config[key] = value
        elif key == "generationConfig" and isinstance(value, dict):
            config.update(value)
        else:
            body[key] = value
    if config:
        body["generationConfig"] = config


# -- answers --------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One candidate's text and calls, read from one response or a stream event."""

    text: str = ""
    calls: list[shapes.ToolCallOut] = field(default_factory=list)


def read_parts(parts: Iterable[Json], signatures: Signatures) -> Candidate:
    """Text and function calls of `parts`; thoughts are left out, signatures remembered."""
    read = Candidate()
    for part in parts:
        if part.get("thought"):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            call_id = str(call.get("id") or shapes.new_id("call"))
            if part.get("thoughtSignature"):
                signatures.remember(call_id, part["thoughtSignature"])
            arguments = shapes.dump_arguments(call.get("args"))
            read.calls.append(shapes.ToolCallOut(call_id, str(call.get("name")), arguments))
        elif isinstance(part.get("text"), str):
            read.text += part["text"]
    return read


def finish_reason(reason: str | None, made_calls: bool) -> shapes.FinishReason:
    """Gemini's `finishReason` as OpenAI's; a candidate with function calls is `tool_calls`."""
    mapped = _FINISH.get(reason or "", "stop")
    return "tool_calls" if made_calls and mapped == "stop" else mapped


def usage_counts(metadata: Json | None) -> tuple[int, int]:
    """(prompt, completion) tokens; thinking tokens count as completion, as OpenAI counts."""
    m = metadata or {}
    prompt = m.get("promptTokenCount", 0) + m.get("toolUsePromptTokenCount", 0)
    return prompt, m.get("candidatesTokenCount", 0) + m.get("thoughtsTokenCount", 0)


def chat_completion(answer: Json, model: str, signatures: Signatures) -> Json:
    """A `GenerateContentResponse` as an OpenAI chat completion, one choice per candidate."""
    candidates = answer.get("candidates") or []
    usage = shapes.usage(*usage_counts(answer.get("usageMetadata")))
    if not candidates:  # the prompt itself was blocked (`promptFeedback.blockReason`)
        return shapes.chat_completion(
            model=model, content="", finish_reason="content_filter", usage_=usage
        )
    body: Json | None = None
    for candidate in candidates:
        read = read_parts((candidate.get("content") or {}).get("parts") or [], signatures)
        reason = finish_reason(candidate.get("finishReason"), bool(read.calls))
        one = shapes.chat_completion(
            model=model,
            content=read.text,
            finish_reason=reason,
            usage_=usage,
            tool_calls=read.calls,
            id=body["id"] if body else None,
        )
        one["choices"][0]["index"] = candidate.get("index", 0)
        if body is None:
            body = one
        else:
            body["choices"].append(one["choices"][0])
    assert body is not None
    return body


class StreamTranslator:
    """`streamGenerateContent` events as OpenAI chunks; each candidate is one choice."""

    def __init__(self, model: str, signatures: Signatures) -> None:
        self._first = shapes.ChunkWriter(model=model)
        self._writers: dict[int, shapes.ChunkWriter] = {0: self._first}
        self._calls: dict[int, int] = {}
        self._finished: set[int] = set()
        self._signatures = signatures
        self._usage: Json | None = None

    def on(self, event: Json) -> Iterator[Json]:
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = event["usageMetadata"]  # cumulative: the last one counts
        candidates = event.get("candidates") or []
        if not candidates and (event.get("promptFeedback") or {}).get("blockReason"):
            yield self._finish(0, "content_filter")
        for candidate in candidates:
            index = candidate.get("index", 0)
            parts = (candidate.get("content") or {}).get("parts") or []
            yield from self._parts(index, read_parts(parts, self._signatures))
            if candidate.get("finishReason"):
                made_calls = self._calls.get(index, 0) > 0
                yield self._finish(index, finish_reason(candidate["finishReason"], made_calls))

    def close(self) -> Iterator[Json]:
        """The finish of a candidate the stream left open, then the usage chunk."""
        for index in sorted(set(self._writers) - self._finished):
            yield self._finish(index, "stop")
        yield self._first.usage(*usage_counts(self._usage))

    def _parts(self, index: int, read: Candidate) -> Iterator[Json]:
        writer = self._writer(index)
        if read.text:
            yield _indexed(writer.text(read.text), index)
        for call in read.calls:  # a function call arrives whole, in one event
            n = self._calls.get(index, 0)
            self._calls[index] = n + 1
            yield _indexed(writer.tool_call_start(n, call.id, call.name), index)
            yield _indexed(writer.tool_call_arguments(n, call.arguments), index)

    def _finish(self, index: int, reason: shapes.FinishReason) -> Json:
        self._finished.add(index)
        return _indexed(self._writer(index).finish(reason), index)

    def _writer(self, index: int) -> shapes.ChunkWriter:
        if index not in self._writers:
            first = self._first
            self._writers[index] = shapes.ChunkWriter(first.model, first.id, first.created)
        return self._writers[index]


def _indexed(chunk: Json, index: int) -> Json:
    for choice in chunk["choices"]:
        choice["index"] = index
    return chunk


def stream_failure(upstream: str, error: Any) -> UpstreamError:
    """An `error` object inside a stream, keeping its status (a 429 stays retryable)."""
    code = error.get("code") if isinstance(error, dict) else None
    like = http.status_error(upstream, code if isinstance(code, int) else 500, b"")
    return UpstreamError(
        http.stream_error(upstream, error).message,
        status=like.status,
        error_code=like.error_code,
        retryable=like.retryable,
    )


# -- embeddings -----------------------------------------------------------------------------


def embedding_inputs(request: EmbeddingRequest) -> list[str]:
    return [request.input] if isinstance(request.input, str) else list(request.input)


def embedding_list(
    vectors: list[list[float]], model: str, prompt_tokens: int, encoding_format: str
) -> Json:
    """OpenAI's embeddings answer; `base64` is little-endian float32, as OpenAI sends it."""
    data = []
    for i, vector in enumerate(vectors):
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }

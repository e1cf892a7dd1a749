"""Query requests: chat, completions and embeddings, parsed once at the edge."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

# Strict numbers: "0.5" where a number belongs is a client bug worth a 400, not a silent cast.
Float = Annotated[float, Field(strict=True)]


class Task(StrEnum):
    """What a served entity can answer; the endpoint's `task` is one of these."""

    CHAT = "llm/v1/chat"
    COMPLETIONS = "llm/v1/completions"
    EMBEDDINGS = "llm/v1/embeddings"


class _Request(BaseModel):
    # Unknown keys are kept for providers that understand them (the openai client's extra_body).
    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text"]
    text: StrictStr


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: StrictStr
    arguments: StrictStr


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: StrictStr | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        """The content as one string (text parts joined), as chat templates need."""
        return "".join(self.texts())

    def texts(self) -> list[str]:
        """The content's text parts (a string content is one part), for block-based providers."""
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [self.content]
        return [part.text for part in self.content]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: StrictBool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and not (self.json_schema or {}).get("schema"):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class _Sampling(_Request):
    """Parameters shared by chat and completions."""

    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    top_k: StrictInt | None = Field(default=None, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt = Field(default=1, ge=1, le=5)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    seed: StrictInt | None = None
    presence_penalty: Float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Float | None = Field(default=None, ge=-2, le=2)
    extra_params: dict[str, Any] | None = None
    client_request_id: StrictStr | None = None
    usage_context: dict[str, Any] | None = None
    # The openai client names the endpoint here; it is routing, never sent upstream.
    model: StrictStr | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _one_max_tokens(self) -> ChatRequest:
        # max_completion_tokens is the openai client's newer name for the same limit.
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    logprobs: StrictInt | None = Field(default=None, ge=0, le=5)
    echo: StrictBool | None = None


class EmbeddingRequest(_Request):
    input: StrictStr | list[StrictStr]
    encoding_format: Literal["float", "base64"] = "float"
    client_request_id: StrictStr | None = None
    usage_context: dict[str, Any] | None = None
    model: StrictStr | None = None


QueryRequest = ChatRequest | CompletionRequest | EmbeddingRequest

# Fields that are ours (routing, logging), never forwarded to a provider.
GATEWAY_ONLY_FIELDS = frozenset({"model", "client_request_id", "usage_context", "extra_params"})

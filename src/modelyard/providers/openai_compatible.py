"""Upstreams that speak OpenAI's own wire format; subclasses say where and how to authenticate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from modelyard.providers import openai_wire
from modelyard.providers.base import Json
from modelyard.providers.external import ExternalProvider
from modelyard.schemas.query import (
    GATEWAY_ONLY_FIELDS,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Task,
)


class OpenAICompatible(ExternalProvider):
    """Requests go out as the client sent them, with the upstream's model name and auth."""

    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.COMPLETIONS, Task.EMBEDDINGS})
    # Whether the upstream takes `stream_options` (it gives usage in streams when asked).
    stream_options: ClassVar[bool] = True

    def url(self, path: str) -> str:
        """The URL for `path`: `chat/completions`, `completions` or `embeddings`."""
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def payload(self, request: ChatRequest | CompletionRequest | EmbeddingRequest) -> Json:
        """The request body: the client's fields, `extra_params` merged, our model name."""
        payload = request.model_dump(exclude_none=True, exclude=GATEWAY_ONLY_FIELDS)
        payload.pop("max_completion_tokens", None)
        if getattr(request, "extra_params", None):
            payload.update(request.extra_params)  # type: ignore[union-attr]
        payload["model"] = self.model.name
        return payload

    async def chat(self, request: ChatRequest) -> Json:
        return await self.post_json(
            self.call(self.url("chat/completions"), self.payload(request), self.headers())
        )

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        return self._stream("chat/completions", self.payload(request))

    async def completions(self, request: CompletionRequest) -> Json:
        return await self.post_json(
            self.call(self.url("completions"), self.payload(request), self.headers())
        )

    def stream_completions(self, request: CompletionRequest) -> AsyncIterator[Json]:
        return self._stream("completions", self.payload(request))

    async def embeddings(self, request: EmbeddingRequest) -> Json:
        return await self.post_json(
            self.call(self.url("embeddings"), self.payload(request), self.headers())
        )

    def _stream(self, path: str, payload: Json) -> AsyncIterator[Json]:
        if self.stream_options:
            # Always ask for usage so the gateway can account for it; it drops it if not asked.
            payload["stream_options"] = {"include_usage": True}
        else:
            payload.pop("stream_options", None)
        call = self.call(self.url(path), payload, self.headers())
        return openai_wire.stream_chunks(self.post_stream(call), self.upstream)

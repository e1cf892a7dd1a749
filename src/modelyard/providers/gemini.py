"""`gemini`: Gemini through Google AI Studio's Generative Language API (`v1beta`).

Chat is `models/{model}:generateContent` (streamed: `:streamGenerateContent?alt=sse`),
embeddings `models/{model}:batchEmbedContents`. The key goes in the `x-goog-api-key` header,
never in the URL, where proxies and logs would keep it. `GenerateContentProvider` is the part
Vertex AI shares: it differs only in URLs, auth and embeddings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import ClassVar

from pydantic import Field

from modelyard.providers import gemini_wire
from modelyard.providers.base import Json
from modelyard.providers.external import (
    ExternalContext,
    ExternalProvider,
    ProviderConfig,
)
from modelyard.schemas.endpoints import ExternalModel
from modelyard.schemas.query import ChatRequest, EmbeddingRequest, Task

GEMINI_API_BASE = "https://generativelanguage.googleapis.com"


class GenerateContentProvider(ExternalProvider):
    """Chat through `generateContent`; subclasses say where and how to authenticate."""

    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.EMBEDDINGS})

    def __init__(
        self, model: ExternalModel, config: ProviderConfig, context: ExternalContext
    ) -> None:
        super().__init__(model, config, context)
        self.signatures = gemini_wire.Signatures()

    def url(self, method: str) -> str:
        """The model's URL for `method` (`generateContent`, `streamGenerateContent`, ...)."""
        raise NotImplementedError

    async def headers(self) -> dict[str, str]:
        raise NotImplementedError

    async def chat(self, request: ChatRequest) -> Json:
        body = gemini_wire.request_body(request, self.signatures)
        call = self.call(self.url("generateContent"), body, await self.headers())
        answer = await self.post_json(call)
        return gemini_wire.chat_completion(answer, self.model.name, self.signatures)

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        body = gemini_wire.request_body(request, self.signatures)
        url = self.url("streamGenerateContent") + "?alt=sse"
        call = self.call(url, body, await self.headers())
        translator = gemini_wire.StreamTranslator(self.model.name, self.signatures)
        async with aclosing(self.sse(call)) as events:
            async for _, event in events:
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    raise self.scrubbed(gemini_wire.stream_failure(self.upstream, event["error"]))
                for chunk in translator.on(event):
                    yield chunk
        for chunk in translator.close():
            yield chunk


class GeminiConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"gemini_api_key": True}

    gemini_api_key: str | None = None
    gemini_api_key_plaintext: str | None = None
    # Ours: the API's origin, without `/v1beta` (a proxy, a test fake).
    gemini_api_base: str | None = Field(default=None, pattern=r"^https?://")


class GeminiProvider(GenerateContentProvider):
    kind = "gemini"
    config_key = "gemini_config"
    config_model = GeminiConfig
    config: GeminiConfig

    def url(self, method: str) -> str:
        base = (self.config.gemini_api_base or GEMINI_API_BASE).rstrip("/")
        return f"{base.removesuffix('/v1beta')}/v1beta/{self._model_path}:{method}"

    @property
    def _model_path(self) -> str:
        """`models/{model}`, whether or not the entity's name already has the prefix."""
        return "models/" + self.model.name.removeprefix("models/")

    async def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.credential("gemini_api_key").value()}

    async def embeddings(self, request: EmbeddingRequest) -> Json:
        texts = gemini_wire.embedding_inputs(request)
        extras = dict(request.model_extra or {})
        dimensions = extras.pop("dimensions", None)
        requests = []
        for text in texts:
            one: Json = {"model": self._model_path, "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                one["outputDimensionality"] = dimensions
            requests.append({**one, **extras})  # e.g. taskType, title
        call = self.call(
            self.url("batchEmbedContents"), {"requests": requests}, await self.headers()
        )
        answer = await self.post_json(call)
        vectors = [e.get("values") or [] for e in answer.get("embeddings") or []]
        # batchEmbedContents reports no token counts.
        return gemini_wire.embedding_list(vectors, self.model.name, 0, request.encoding_format)

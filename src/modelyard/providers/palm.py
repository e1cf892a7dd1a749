"""`palm`: accepted in configs for compatibility, answered with why it cannot serve."""

from __future__ import annotations

from typing import ClassVar

from modelyard.errors import BadRequest
from modelyard.providers.external import ExternalProvider, ProviderConfig
from modelyard.schemas.query import ChatRequest, CompletionRequest, EmbeddingRequest, Task

RETIRED = (
    "The PaLM API was retired by Google, so provider 'palm' can no longer answer. Serve the "
    "model through provider 'gemini' (a Google AI Studio key) or 'google-cloud-vertex-ai'."
)


class PalmConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"palm_api_key": False}
    palm_api_key: str | None = None
    palm_api_key_plaintext: str | None = None


class PalmProvider(ExternalProvider):
    kind = "palm"
    config_key = "palm_config"
    config_model = PalmConfig
    tasks: ClassVar[frozenset[Task]] = frozenset(Task)

    async def chat(self, request: ChatRequest) -> dict:
        raise BadRequest(RETIRED)

    def stream_chat(self, request: ChatRequest):  # type: ignore[no-untyped-def]
        raise BadRequest(RETIRED)

    async def completions(self, request: CompletionRequest) -> dict:
        raise BadRequest(RETIRED)

    def stream_completions(self, request: CompletionRequest):  # type: ignore[no-untyped-def]
        raise BadRequest(RETIRED)

    async def embeddings(self, request: EmbeddingRequest) -> dict:
        raise BadRequest(RETIRED)

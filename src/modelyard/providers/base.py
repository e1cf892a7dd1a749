"""The one interface every provider implements; the gateway knows nothing else about them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

from modelyard.errors import BadRequest
from modelyard.schemas.query import ChatRequest, CompletionRequest, EmbeddingRequest, Task

Json = dict[str, Any]


@dataclass(frozen=True)
class Readiness:
    """A served entity's deployment state as the API shows it."""

    deployment: str  # DEPLOYMENT_CREATING | DEPLOYMENT_READY | DEPLOYMENT_FAILED
    message: str = ""
    # False only before the entity was first ready: drives the endpoint's config_update.
    settled: bool = True

    @property
    def ready(self) -> bool:
        return self.deployment == "DEPLOYMENT_READY"


READY = Readiness("DEPLOYMENT_READY")


class Provider:
    """Answers queries for one served entity. Subclasses override what they support.

    Responses are OpenAI-shaped dicts; streams yield OpenAI-shaped chunk dicts. Failures are
    raised as `modelyard.errors` types (UpstreamError and kin), never as library exceptions.
    """

    tasks: ClassVar[frozenset[Task]] = frozenset()

    def readiness(self) -> Readiness:
        return READY

    def entity_fields(self) -> Json:
        """Extra fields for the served entity as the API shows it (e.g. `foundation_model`)."""
        return {}

    async def chat(self, request: ChatRequest) -> Json:
        raise self._unsupported(Task.CHAT)

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        raise self._unsupported(Task.CHAT)

    async def completions(self, request: CompletionRequest) -> Json:
        raise self._unsupported(Task.COMPLETIONS)

    def stream_completions(self, request: CompletionRequest) -> AsyncIterator[Json]:
        raise self._unsupported(Task.COMPLETIONS)

    async def embeddings(self, request: EmbeddingRequest) -> Json:
        raise self._unsupported(Task.EMBEDDINGS)

    async def close(self) -> None:
        """Release connections; called when the entity is removed or the server stops."""

    def _unsupported(self, task: Task) -> BadRequest:
        return BadRequest(f"This served entity does not support {task} requests.")

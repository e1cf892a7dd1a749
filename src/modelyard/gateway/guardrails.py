"""Guardrails on what goes in and what comes out of an endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.providers.base import Json
from modelyard.schemas.query import QueryRequest


class Guardrails:
    """Until guardrails exist, everything passes unchanged."""

    async def screen_input(self, endpoint: LiveEndpoint, request: QueryRequest) -> QueryRequest:
        """The request to send on (masked if need be), or BadRequest naming the guardrail."""
        return request

    async def screen_output(self, endpoint: LiveEndpoint, body: Json) -> Json:
        """The answer to return (masked if need be), or BadRequest naming the guardrail."""
        return body

    def screen_stream(
        self, endpoint: LiveEndpoint, chunks: AsyncIterator[Json]
    ) -> AsyncIterator[Json]:
        """The stream to return, screened as it goes."""
        return chunks

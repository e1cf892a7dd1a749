"""Rate limits: calls and tokens per minute, reserved before a call and settled after it."""

from __future__ import annotations

from modelyard.gateway.auth import Principal
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.schemas.query import QueryRequest


class Reservation:
    """What one request holds against its limits; `settle` gives back what it did not use."""

    async def settle(self, used_tokens: int) -> None:
        """Called once when the request is over (0 tokens if it failed before any answer)."""


class RateLimiter:
    """Until limits exist, every request is let through."""

    async def reserve(
        self, principal: Principal, endpoint: LiveEndpoint, request: QueryRequest
    ) -> Reservation:
        """A reservation for one request, or RateLimited (429 with Retry-After)."""
        return Reservation()

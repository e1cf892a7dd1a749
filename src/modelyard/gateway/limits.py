"""Rate limits: calls and tokens per minute, reserved before a call and settled after it.

Counters live in memory (one server) or in Redis (replicas). When Redis cannot be reached,
requests to endpoints with limits are refused with a 503 (`closed`, the default) or let through
unchecked (`open`); the outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from modelyard.errors import RateLimited, Unavailable
from modelyard.gateway.auth import Principal
from modelyard.gateway.counters import (
    Charge,
    CounterError,
    Counters,
    MemoryCounters,
    RedisCounters,
)
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.gateway.limit_rules import (
    DEFAULT_MAX_TOKENS,
    Rule,
    applicable,
    charges,
    estimate_tokens,
)
from modelyard.schemas.endpoints import AiGatewayRateLimit
from modelyard.schemas.query import QueryRequest
from modelyard.settings import Settings
from modelyard.store import EndpointRecord

log = logging.getLogger("modelyard.limits")

OnError = Literal["open", "closed"]


@dataclass
class LimiterStats:
    """Counts for /metrics; plain ints, only ever incremented on the event loop."""

    refusals: int = 0  # 429s
    refusals_by_endpoint: Counter[str] = field(default_factory=Counter)
    redis_errors: int = 0  # failed reserve or settle calls
    unchecked: int = 0  # requests let through while Redis was down (fail open)
    redis_down: bool = False


class Reservation:
    """What one request holds against its limits; `settle` gives back what it did not use."""

    def __init__(
        self, limiter: RateLimiter | None = None, entry: str = "", held: list[Charge] | None = None
    ) -> None:
        self._limiter = limiter
        self._entry = entry
        self._tokens = [c for c in held or [] if c.tokens]

    async def settle(self, used_tokens: int) -> None:
        """Called once when the request is over (0 tokens if it failed before any answer)."""
        limiter, self._limiter = self._limiter, None
        if limiter is None or not self._tokens:
            return
        try:
            await limiter.counters.settle(self._entry, self._tokens, used_tokens)
        except CounterError as exc:
            limiter.outage(exc)
        else:
            limiter.healthy()


class RateLimiter:
    """Checks every applicable limit of an endpoint before a request goes upstream."""

    def __init__(
        self,
        counters: Counters | None = None,
        *,
        on_error: OnError = "closed",
        where: str = "memory",
    ) -> None:
        self.counters: Counters = counters or MemoryCounters()
        self.on_error = on_error
        self.where = where  # for messages: "Redis at host:port/db"
        self.stats = LimiterStats()
        self._limits: dict[str, tuple[EndpointRecord, list[AiGatewayRateLimit]]] = {}

    async def reserve(
        self, principal: Principal, endpoint: LiveEndpoint, request: QueryRequest
    ) -> Reservation:
        """A reservation for one request, or RateLimited (429 with Retry-After)."""
        rules = applicable(endpoint.record.id, principal, self._endpoint_limits(endpoint.record))
        if not rules:
            return Reservation()
        entry = uuid.uuid4().hex
        held = charges(rules, estimate_tokens(request))
        try:
            refusal = await self.counters.reserve(entry, held)
        except CounterError as exc:
            self.outage(exc)
            if self.on_error == "open":
                self.stats.unchecked += 1
                return Reservation()
            raise Unavailable(
                f"Rate limits of endpoint '{endpoint.name}' cannot be checked: {self.where} is "
                "unreachable, and this server refuses such requests until it is back "
                "(--rate-limit-on-redis-error closed). Retry later."
            ) from exc
        self.healthy()
        if refusal is None:
            return Reservation(self, entry, held)
        self.stats.refusals += 1
        self.stats.refusals_by_endpoint[endpoint.name] += 1
        retry_after = max(1, math.ceil(refusal.wait_us / 1_000_000))
        rule, charge = rules[refusal.index], held[refusal.index]
        raise RateLimited(
            _refusal_message(endpoint.name, rule, charge, retry_after), retry_after=retry_after
        )

    def outage(self, exc: CounterError) -> None:
        """Count a failed counter call; log only the first of an outage."""
        self.stats.redis_errors += 1
        if not self.stats.redis_down:
            self.stats.redis_down = True
            effect = (
                "requests to rate-limited endpoints are let through unchecked"
                if self.on_error == "open"
                else "requests to rate-limited endpoints are refused with 503"
            )
            log.error(
                "rate limits: %s is unreachable (%s); %s until it is back", self.where, exc, effect
            )

    def healthy(self) -> None:
        if self.stats.redis_down:
            self.stats.redis_down = False
            log.warning("rate limits: %s is reachable again; limits are enforced", self.where)

    async def close(self) -> None:
        await self.counters.close()

    def _endpoint_limits(self, record: EndpointRecord) -> list[AiGatewayRateLimit]:
        # Parsed once per endpoint version, not per request.
        cached = self._limits.get(record.id)
        if cached is not None and cached[0] is record:
            return cached[1]
        limits = []
        for raw in (record.ai_gateway or {}).get("rate_limits") or []:
            try:
                limits.append(AiGatewayRateLimit.model_validate(raw))
            except ValidationError:
                log.warning("endpoint %s: ignoring an invalid stored rate limit", record.name)
        self._limits[record.id] = (record, limits)
        return limits


def _refusal_message(endpoint: str, rule: Rule, charge: Charge, retry_after: int) -> str:
    if rule.tokens:
        what = (
            f"{rule.label} of {rule.limit} tokens per minute is used up (this request reserves "
            f"{charge.amount}: its prompt, estimated, plus max_tokens or "
            f"{DEFAULT_MAX_TOKENS} when unset; set a lower max_tokens to reserve less)"
        )
    else:
        what = f"{rule.label} of {rule.limit} calls per minute is used up"
    return f"Rate limit exceeded on endpoint '{endpoint}': {what}. Retry in {retry_after} seconds."


async def build_limiter(settings: Settings) -> RateLimiter:
    """Memory counters, or Redis ones when `redis_url` is set (checked once at start)."""
    if not settings.redis_url:
        return RateLimiter()
    on_error: OnError = "open" if settings.rate_limit_on_redis_error == "open" else "closed"
    counters = RedisCounters(settings.redis_url)
    limiter = RateLimiter(
        counters, on_error=on_error, where=f"Redis at {_safe(settings.redis_url)}"
    )
    try:
        await counters.ping()
    except CounterError as exc:
        limiter.outage(exc)  # start anyway: it may come up, and unlimited endpoints still work
    else:
        log.info("rate limits: counters in %s", limiter.where)
    return limiter


def _safe(url: str) -> str:
    """host:port/db of a Redis URL: never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"

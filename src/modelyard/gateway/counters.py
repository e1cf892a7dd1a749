"""Sliding-window counters for rate limits: in this process's memory, or shared in Redis.

Each counter is a log of the last minute's charges (one entry per request, with its amount:
1 for a call, the reserved tokens for a token limit). A charge fits when the log's total plus
the charge is within the limit, so no 60 seconds ever hold more than the limit: unlike fixed
windows, nothing doubles at a window's edge, which is what lets replicas agree exactly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

WINDOW_US = 60_000_000  # renewal_period "minute", the only one there is


@dataclass(frozen=True)
class Charge:
    """One limit's share of a request: `amount` against `limit` on the counter `counter`."""

    counter: str  # "<endpoint id>:<calls|tokens>:<endpoint|user:<name>|group:<name>>"
    limit: int
    amount: int
    tokens: bool = False  # token charges are settled to the tokens used; calls stay at 1


@dataclass(frozen=True)
class Refusal:
    """The charge that did not fit, and how long until it would."""

    index: int
    wait_us: int


class CounterError(Exception):
    """The shared counters could not be reached; the limiter decides to fail open or closed."""


class Counters(Protocol):
    async def reserve(self, entry: str, charges: Sequence[Charge]) -> Refusal | None:
        """All charges under `entry`, or none and the refusal with the longest wait."""
        ...

    async def settle(self, entry: str, charges: Sequence[Charge], used: int) -> None:
        """Set `entry`'s amount on token counters to `used`; an expired entry gets the excess."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Log:
    entries: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)  # id → (t, n)
    total: int = 0

    def evict(self, now: int) -> None:
        while self.entries:
            entry, (t, amount) = next(iter(self.entries.items()))
            if t > now - WINDOW_US:
                return
            del self.entries[entry]
            self.total -= amount

    def wait(self, now: int, amount: int, limit: int) -> int:
        """Microseconds until enough of the log has expired for `amount` to fit."""
        need, freed = self.total + amount - limit, 0
        for t, n in self.entries.values():
            freed += n
            if freed >= need:
                return t + WINDOW_US - now
        return WINDOW_US


class MemoryCounters:
    """Counters of one process; no lock needed, as nothing here awaits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logs: dict[str, _Log] = {}
        self._since_sweep = 0

    def _now(self) -> int:
        return int(self._clock() * 1_000_000)

    async def reserve(self, entry: str, charges: Sequence[Charge]) -> Refusal | None:
        now = self._now()
        self._sweep(now)
        logs = [self._logs.setdefault(c.counter, _Log()) for c in charges]
        worst: Refusal | None = None
        for i, (log, charge) in enumerate(zip(logs, charges, strict=True)):
            log.evict(now)
            if log.total + charge.amount > charge.limit:
                wait = log.wait(now, charge.amount, charge.limit)
                if worst is None or wait > worst.wait_us:
                    worst = Refusal(i, wait)
        if worst is not None:
            return worst
        for log, charge in zip(logs, charges, strict=True):
            log.entries[entry] = (now, charge.amount)
            log.total += charge.amount
        return None

    async def settle(self, entry: str, charges: Sequence[Charge], used: int) -> None:
        now = self._now()
        for charge in charges:
            log = self._logs.setdefault(charge.counter, _Log())
            log.evict(now)
            if entry in log.entries:
                t, old = log.entries[entry]
                log.entries[entry] = (t, used)
                log.total += used - old
            elif used > charge.amount:
                log.entries[entry + ":late"] = (now, used - charge.amount)
                log.total += used - charge.amount

    def _sweep(self, now: int) -> None:
        # Counters of users gone quiet would otherwise stay forever.
        self._since_sweep += 1
        if self._since_sweep < 1000:
            return
        self._since_sweep = 0
        for name in list(self._logs):
            self._logs[name].evict(now)
            if not self._logs[name].entries:
                del self._logs[name]

    async def close(self) -> None:
        self._logs.clear()


# KEYS: per charge a log (sorted set: entry → time) and its amounts (hash: entry → amount, plus
# the running "_total"). ARGV: window, entry, then per charge its limit and amount.
# Redis's own clock is the one clock all replicas share.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local entry = ARGV[2]
local function evict(log, amounts)
  local cutoff = now - window
  while true do
    local gone = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff, 'LIMIT', 0, 500)
    if #gone == 0 then return end
    local sum = 0
    for _, n in ipairs(redis.call('HMGET', amounts, unpack(gone))) do
      sum = sum + (tonumber(n) or 0)
    end
    redis.call('HDEL', amounts, unpack(gone))
    redis.call('ZREM', log, unpack(gone))
    redis.call('HINCRBY', amounts, '_total', -sum)
  end
end
local function add(log, amounts, id, at, amount)
  redis.call('ZADD', log, at, id)
  redis.call('HSET', amounts, id, amount)
  redis.call('HINCRBY', amounts, '_total', amount)
  local ttl = math.floor(window / 1000) + 1000
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', amounts, ttl)
end
"""

_RESERVE = (
    _PRELUDE
    + """
local n = #KEYS / 2
local worst, worst_wait = 0, -1
for i = 1, n do
  local log, amounts = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, amount = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  evict(log, amounts)
  local total = tonumber(redis.call('HGET', amounts, '_total')) or 0
  if total + amount > limit then
    local need, freed, wait, start = total + amount - limit, 0, window, 0
    while wait == window do
      local page = redis.call('ZRANGE', log, start, start + 199, 'WITHSCORES')
      if #page == 0 then break end
      local ids = {}
      for j = 1, #page, 2 do ids[#ids + 1] = page[j] end
      local ns = redis.call('HMGET', amounts, unpack(ids))
      for j = 1, #ids do
        freed = freed + (tonumber(ns[j]) or 0)
        if freed >= need then
          wait = tonumber(page[2 * j]) + window - now
          break
        end
      end
      start = start + 200
    end
    if wait > worst_wait then worst, worst_wait = i, wait end
  end
end
if worst > 0 then return {worst, worst_wait} end
for i = 1, n do
  add(KEYS[2 * i - 1], KEYS[2 * i], entry, now, tonumber(ARGV[2 + 2 * i]))
end
return {0, 0}
"""
)

# ARGV: window, entry, used, then per charge the amount reserved.
_SETTLE = (
    _PRELUDE
    + """
local used = tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local log, amounts = KEYS[2 * i - 1], KEYS[2 * i]
  local reserved = tonumber(ARGV[3 + i])
  local at = tonumber(redis.call('ZSCORE', log, entry))
  if at and at > now - window then
    local old = tonumber(redis.call('HGET', amounts, entry)) or 0
    redis.call('HSET', amounts, entry, used)
    redis.call('HINCRBY', amounts, '_total', used - old)
  elseif used > reserved then
    evict(log, amounts)
    add(log, amounts, entry .. ':late', now, used - reserved)
  end
end
return 0
"""
)


class RedisCounters:
    """Counters shared by every replica using the same Redis; each step is one atomic script."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        # One quick retry covers a pooled connection that died with a Redis restart; more
        # would only make every request wait while Redis is down.
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    async def reserve(self, entry: str, charges: Sequence[Charge]) -> Refusal | None:
        args: list[int | str] = [WINDOW_US, entry]
        for charge in charges:
            args += [charge.limit, charge.amount]
        try:
            index, wait = await self._reserve(keys=_keys(charges), args=args)
        except (RedisError, OSError) as exc:
            raise CounterError(describe(exc)) from exc
        return Refusal(int(index) - 1, int(wait)) if index else None

    async def settle(self, entry: str, charges: Sequence[Charge], used: int) -> None:
        if not charges:
            return
        args = [WINDOW_US, entry, used, *(c.amount for c in charges)]
        try:
            await self._settle(keys=_keys(charges), args=args)
        except (RedisError, OSError) as exc:
            raise CounterError(describe(exc)) from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise CounterError(describe(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _keys(charges: Sequence[Charge]) -> list[str]:
    # The endpoint id in braces is the hash tag: all of a request's keys share one cluster slot.
    keys = []
    for charge in charges:
        endpoint_id, _, rest = charge.counter.partition(":")
        base = f"modelyard:rl:{{{endpoint_id}}}:{rest}"
        keys += [base, base + ":amounts"]
    return keys


def describe(exc: BaseException) -> str:
    """The error's kind and message (redis-py's never include the URL's password)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

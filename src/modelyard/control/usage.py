"""Reading the usage table: per-request rows and per endpoint-and-user totals (`modelyard usage`).

The table, for SQL (`usage_records`, one row per request on endpoints with
`usage_tracking_config.enabled`):

    request_id         the server's request id (the `x-request-id` response header)
    client_request_id  `client_request_id` from the request body, or NULL
    usage_context      `usage_context` from the request body (JSON), or NULL
    endpoint_name, endpoint_id, served_entity (the served entity that answered)
    requester          the user or service principal whose token was used
    request_time_ms    when the request arrived, epoch milliseconds (UTC)
    status_code, error_code (NULL on success; REQUEST_LIMIT_EXCEEDED for a rate-limit refusal)
    prompt_tokens, completion_tokens, latency_ms (a stream: until its end)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, inspect, select

from modelyard.store.models import UsageRow


class UsageUnavailable(Exception):
    """The database has no usage table (no server has run on it yet)."""


@dataclass(frozen=True)
class UsageFilter:
    endpoint: str | None = None
    user: str | None = None
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive


@dataclass(frozen=True)
class UsageTotal:
    """One endpoint and user's totals over the filtered rows."""

    endpoint: str
    user: str
    requests: int
    errors: int  # status >= 400
    prompt_tokens: int
    completion_tokens: int
    p50_latency_ms: float
    mean_latency_ms: float


class UsageQueries:
    """Queries over `usage_records`, straight from the database (no server needed)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def rows(self, where: UsageFilter) -> list[dict[str, Any]]:
        """Every matching row, oldest first."""
        table = UsageRow.__table__
        query = select(table).order_by(table.c.request_time_ms, table.c.id)
        with self._connect() as conn:
            return [dict(r._mapping) for r in conn.execute(_filtered(query, where))]

    def totals(self, where: UsageFilter) -> list[UsageTotal]:
        """Totals per endpoint and user, ordered by endpoint then user."""
        c = UsageRow.__table__.c
        query = select(
            c.endpoint_name, c.requester, c.status_code, c.prompt_tokens,
            c.completion_tokens, c.latency_ms,
        )  # fmt: skip
        groups: dict[tuple[str, str], list[Any]] = {}
        with self._connect() as conn:
            for row in conn.execute(_filtered(query, where)):
                groups.setdefault((row[0], row[1]), []).append(row)
        return [_total(key, rows) for key, rows in sorted(groups.items())]

    def _connect(self) -> Any:
        if not inspect(self._engine).has_table(UsageRow.__tablename__):
            raise UsageUnavailable("This database has no usage table yet.")
        return self._engine.connect()


def _filtered(query: Any, where: UsageFilter) -> Any:
    c = UsageRow.__table__.c
    if where.endpoint is not None:
        query = query.where(c.endpoint_name == where.endpoint)
    if where.user is not None:
        query = query.where(c.requester == where.user)
    if where.since_ms is not None:
        query = query.where(c.request_time_ms >= where.since_ms)
    if where.until_ms is not None:
        query = query.where(c.request_time_ms < where.until_ms)
    return query


def _total(key: tuple[str, str], rows: list[Any]) -> UsageTotal:
    latencies = [r.latency_ms for r in rows]
    return UsageTotal(
        endpoint=key[0],
        user=key[1],
        requests=len(rows),
        errors=sum(1 for r in rows if r.status_code >= 400),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        p50_latency_ms=statistics.median(latencies),
        mean_latency_ms=statistics.fmean(latencies),
    )

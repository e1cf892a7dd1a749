"""`modelyard usage`: who used which endpoint, how much, read straight from the store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from modelyard.control.usage import UsageFilter, UsageQueries, UsageTotal, UsageUnavailable
from modelyard.settings import Settings, default_data_dir
from modelyard.store import Store

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str, *, now: datetime | None = None) -> int:
    """`1h`, `30m`, `7d` (that long ago) or an ISO time (UTC unless it says) → epoch ms."""
    match = _RELATIVE.match(value.strip())
    if match:
        delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return int(((now or datetime.now(UTC)) - delta).timestamp() * 1000)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is neither a time like 2026-11-26T17:00 nor an age like 1h, 30m, 7d."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The server's data dir, whose SQLite database is read [default: $MODELYARD_DATA_DIR "
    "or ~/.modelyard].",
)
@click.option(
    "--database-url",
    envvar="MODELYARD_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL of the store, as given to `modelyard serve`.",
)
@click.option("--endpoint", default=None, help="Only this endpoint.")
@click.option("--user", default=None, help="Only this user or service principal.")
@click.option("--since", default=None, help="From this time (ISO, UTC) or age (1h, 30m, 7d).")
@click.option("--until", default=None, help="Before this time (ISO, UTC) or age.")
@click.option("--raw", is_flag=True, help="One line per request instead of totals.")
def usage(
    data_dir: Path | None,
    database_url: str | None,
    endpoint: str | None,
    user: str | None,
    since: str | None,
    until: str | None,
    raw: bool,
) -> None:
    """Requests, tokens, errors and latency per endpoint and user (usage tracking on)."""
    where = UsageFilter(
        endpoint=endpoint,
        user=user,
        since_ms=parse_time(since) if since else None,
        until_ms=parse_time(until) if until else None,
    )
    settings = Settings(data_dir=data_dir or default_data_dir(), database_url=database_url)
    if database_url is None and not (settings.data_dir / "modelyard.db").exists():
        raise click.ClickException(
            f"No database in {settings.data_dir}; pass --data-dir or --database-url as given "
            "to `modelyard serve`."
        )
    store = Store(settings.resolved_database_url)
    queries = UsageQueries(store.engine)
    try:
        if raw:
            _print_table(_RAW_HEADER, [_raw_line(r) for r in queries.rows(where)])
        else:
            _print_table(_TOTALS_HEADER, _totals_lines(queries.totals(where)))
    except UsageUnavailable as exc:
        raise click.ClickException(f"{exc} Start `modelyard serve` on it first.") from exc
    finally:
        store.close()


_TOTALS_HEADER = (
    "ENDPOINT", "USER", "REQUESTS", "ERRORS", "PROMPT_TOKENS", "COMPLETION_TOKENS",
    "P50_MS", "MEAN_MS",
)  # fmt: skip
_RAW_HEADER = (
    "TIME", "REQUEST_ID", "ENDPOINT", "USER", "STATUS", "PROMPT_TOKENS", "COMPLETION_TOKENS",
    "LATENCY_MS", "CLIENT_REQUEST_ID",
)  # fmt: skip


def _totals_lines(totals: list[UsageTotal]) -> list[tuple[Any, ...]]:
    lines: list[tuple[Any, ...]] = [
        (t.endpoint, t.user, t.requests, t.errors, t.prompt_tokens, t.completion_tokens,
         round(t.p50_latency_ms), round(t.mean_latency_ms))
        for t in totals
    ]  # fmt: skip
    if len(totals) > 1:
        requests = sum(t.requests for t in totals)
        mean = sum(t.mean_latency_ms * t.requests for t in totals) / requests
        lines.append(
            ("TOTAL", "", requests, sum(t.errors for t in totals),
             sum(t.prompt_tokens for t in totals), sum(t.completion_tokens for t in totals),
             "", round(mean))
        )  # fmt: skip
    return lines


def _raw_line(row: dict[str, Any]) -> tuple[Any, ...]:
    when = datetime.fromtimestamp(row["request_time_ms"] / 1000, tz=UTC)
    return (
        when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        row["request_id"], row["endpoint_name"], row["requester"], row["status_code"],
        row["prompt_tokens"], row["completion_tokens"], row["latency_ms"],
        row["client_request_id"] or "",
    )  # fmt: skip


def _print_table(header: tuple[str, ...], lines: list[tuple[Any, ...]]) -> None:
    cells = [header, *[tuple(str(v) for v in line) for line in lines]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

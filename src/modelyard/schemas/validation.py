"""Turning pydantic's validation errors into one message a person can act on."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, *, limit: int = 3) -> str:
    """`Invalid request: messages[0].role: Input should be ...; ...` (input values never echoed)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:limit]:
        location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(
            "."
        )
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    more = exc.error_count() - limit
    suffix = f" (and {more} more)" if more > 0 else ""
    return "Invalid request: " + "; ".join(parts) + suffix

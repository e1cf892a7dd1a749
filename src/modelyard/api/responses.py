"""JSON, error and server-sent-event responses, all encoded with orjson."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from modelyard.errors import ModelyardError, RateLimited

log = logging.getLogger("modelyard.api")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: ModelyardError) -> JSONResponse:
    """The Databricks error envelope with the error's status."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def sse_response(chunks: AsyncIterator[dict[str, Any]], headers: Mapping[str, str]) -> Response:
    """`data: <json>` events, then `data: [DONE]`; an error mid-stream is one last data event."""
    return StreamingResponse(
        _sse_events(chunks), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )


async def _sse_events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except ModelyardError as exc:
        yield b"data: " + orjson.dumps({"error": exc.to_body()}) + b"\n\n"
        return
    except Exception:
        log.exception("stream failed")
        error = {"error_code": "INTERNAL_ERROR", "message": "The stream failed on the server."}
        yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"

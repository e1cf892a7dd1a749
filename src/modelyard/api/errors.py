"""Every failure leaves as the Databricks envelope; nothing leaks a stack trace."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelyard.api.responses import JSONResponse, error_response
from modelyard.errors import MethodNotAllowed, ModelyardError, NotFound

log = logging.getLogger("modelyard.api")


async def modelyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelyardError)
    return error_response(exc)


async def routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 for unknown paths and methods, in our envelope."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"Method not allowed: {where}."))
    if exc.status_code == 404:
        return error_response(
            NotFound(f"No API found for '{where}'.", error_code="ENDPOINT_NOT_FOUND")
        )
    return JSONResponse(
        {"error_code": "BAD_REQUEST", "message": str(exc.detail)}, status_code=exc.status_code
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {
            "error_code": "INTERNAL_ERROR",
            "message": "The server failed to handle this request; details are in its log.",
        },
        status_code=500,
    )


EXCEPTION_HANDLERS = {
    ModelyardError: modelyard_error,
    HTTPException: routing_error,
    Exception: unexpected_error,
}

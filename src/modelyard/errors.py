"""The one error tree of modelyard, each kind with its HTTP status and stable `error_code`.

    ModelyardError
    ├── BadRequest              400 INVALID_PARAMETER_VALUE / BAD_REQUEST
    │   └── PayloadTooLarge     413 BAD_REQUEST
    ├── Unauthenticated         401 UNAUTHENTICATED
    ├── PermissionDenied        403 PERMISSION_DENIED
    ├── NotFound                404 RESOURCE_DOES_NOT_EXIST / ENDPOINT_NOT_FOUND
    ├── MethodNotAllowed        405 BAD_REQUEST
    ├── AlreadyExists           409 RESOURCE_ALREADY_EXISTS
    ├── RateLimited             429 REQUEST_LIMIT_EXCEEDED
    ├── Unavailable             503 TEMPORARILY_UNAVAILABLE
    └── UpstreamError           502 BAD_GATEWAY (504 DEADLINE_EXCEEDED for timeouts)

Everything raised below the HTTP layer is one of these; `api/` turns it into the envelope.
"""

from __future__ import annotations


class ModelyardError(Exception):
    """Base of every error that reaches a client."""

    status: int = 500
    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def to_body(self) -> dict[str, str]:
        """The Databricks error envelope."""
        return {"error_code": self.error_code, "message": self.message}


class BadRequest(ModelyardError):
    status = 400
    error_code = "INVALID_PARAMETER_VALUE"


class PayloadTooLarge(BadRequest):
    status = 413
    error_code = "BAD_REQUEST"


class Unauthenticated(ModelyardError):
    status = 401
    error_code = "UNAUTHENTICATED"


class PermissionDenied(ModelyardError):
    status = 403
    error_code = "PERMISSION_DENIED"


class NotFound(ModelyardError):
    status = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class MethodNotAllowed(ModelyardError):
    status = 405
    error_code = "BAD_REQUEST"


class AlreadyExists(ModelyardError):
    status = 409
    error_code = "RESOURCE_ALREADY_EXISTS"


class RateLimited(ModelyardError):
    status = 429
    error_code = "REQUEST_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ModelyardError):
    status = 503
    error_code = "TEMPORARILY_UNAVAILABLE"


class UpstreamError(ModelyardError):
    """A provider (or the local engine) failed; `retryable` drives fallback."""

    status = 502
    error_code = "BAD_GATEWAY"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        error_code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.status = status
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=504, error_code="DEADLINE_EXCEEDED", retryable=True)

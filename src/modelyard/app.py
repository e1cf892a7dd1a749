"""The ASGI application: the middleware stack and the routes, assembled in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from modelyard.api.errors import EXCEPTION_HANDLERS
from modelyard.api.management import management_routes
from modelyard.api.metrics import metrics_routes
from modelyard.api.middleware import (
    BodyLimitMiddleware,
    ChangeStampMiddleware,
    RequestIdMiddleware,
)
from modelyard.api.permissions import permission_routes
from modelyard.api.query import query_routes
from modelyard.api.scim import scim_routes
from modelyard.api.secrets import secret_routes
from modelyard.api.tokens import token_routes
from modelyard.control.config_file import ConfigFileError
from modelyard.runtime import Runtime
from modelyard.settings import Settings

log = logging.getLogger("modelyard")


def build_app(settings: Settings) -> Starlette:
    """The whole server: request id → body limit → routes, with the envelope for every error."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            runtime = await Runtime.start(settings)
        except ConfigFileError as exc:
            # A mistake in the user's file: one line saying what to fix, not a traceback.
            log.error("%s", exc)
            raise SystemExit(3) from None
        app.state.services = runtime.services
        try:
            yield
        finally:
            await runtime.stop()

    return Starlette(
        routes=[
            *query_routes(),
            *management_routes(),
            *token_routes(),
            *secret_routes(),
            *scim_routes(),
            *permission_routes(),
            *metrics_routes(),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
            Middleware(ChangeStampMiddleware),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )

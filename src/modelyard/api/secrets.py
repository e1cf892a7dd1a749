"""Secrets routes (/api/2.0/secrets/...), as the Databricks REST API and `w.secrets` use them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import parse_body, principal, services
from modelyard.api.responses import JSONResponse
from modelyard.errors import BadRequest, PermissionDenied
from modelyard.schemas.secrets import ScopeCreate, ScopeDelete, SecretDelete, SecretPut


async def create_scope(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, ScopeCreate)
    await services(request).secrets.create_scope(body.scope, caller.user_name)
    return JSONResponse({})


async def list_scopes(request: Request) -> Response:
    principal(request)
    scopes = await services(request).secrets.list_scopes()
    return JSONResponse(
        {"scopes": [{"name": s.name, "backend_type": s.backend_type} for s in scopes]}
    )


async def delete_scope(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, ScopeDelete)
    await services(request).secrets.require_manager(body.scope, caller)
    await services(request).secrets.delete_scope(body.scope)
    return JSONResponse({})


async def put_secret(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, SecretPut)
    await services(request).secrets.require_manager(body.scope, caller)
    await services(request).secrets.put(body.scope, body.key, body.value)
    return JSONResponse({})


async def delete_secret(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, SecretDelete)
    await services(request).secrets.require_manager(body.scope, caller)
    await services(request).secrets.delete(body.scope, body.key)
    return JSONResponse({})


async def list_secrets(request: Request) -> Response:
    principal(request)
    scope = request.query_params.get("scope")
    if not scope:
        raise BadRequest("Missing required query parameter 'scope'.")
    infos = await services(request).secrets.list(scope)
    return JSONResponse(
        {
            "secrets": [
                {"key": i.key, "last_updated_timestamp": i.last_updated_timestamp} for i in infos
            ]
        }
    )


async def get_secret(request: Request) -> Response:
    """Databricks serves values only to notebooks; modelyard never sends one back."""
    principal(request)
    raise PermissionDenied(
        "Secret values cannot be read back through the API; endpoints use them through "
        "references of the form {{secrets/<scope>/<key>}}."
    )


def secret_routes() -> list[Route]:
    return [
        Route("/api/2.0/secrets/scopes/create", create_scope, methods=["POST"]),
        Route("/api/2.0/secrets/scopes/list", list_scopes, methods=["GET"]),
        Route("/api/2.0/secrets/scopes/delete", delete_scope, methods=["POST"]),
        Route("/api/2.0/secrets/put", put_secret, methods=["POST"]),
        Route("/api/2.0/secrets/delete", delete_secret, methods=["POST"]),
        Route("/api/2.0/secrets/list", list_secrets, methods=["GET"]),
        Route("/api/2.0/secrets/get", get_secret, methods=["GET"]),
    ]

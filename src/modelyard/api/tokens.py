"""Token routes (/api/2.0/token/...) and the unauthenticated workspace discovery route."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import parse_body, principal, services
from modelyard.api.responses import JSONResponse
from modelyard.control.tokens import token_info
from modelyard.schemas.endpoints import TokenCreate, TokenDelete
from modelyard.schemas.scim import OboTokenCreate


async def create_token(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, TokenCreate)
    value, record = await services(request).tokens.create(
        caller.user_name, lifetime_seconds=body.lifetime_seconds, comment=body.comment
    )
    return JSONResponse({"token_value": value, "token_info": token_info(record)})


async def create_obo_token(request: Request) -> Response:
    """An admin creates a token on behalf of a service principal (or a user)."""
    caller = principal(request)
    body = await parse_body(request, OboTokenCreate)
    value, record = await services(request).tokens.create_on_behalf(
        caller,
        body.application_id,
        lifetime_seconds=body.lifetime_seconds,
        comment=body.comment,
    )
    return JSONResponse({"token_value": value, "token_info": token_info(record)})


async def list_tokens(request: Request) -> Response:
    records = await services(request).tokens.list(principal(request))
    return JSONResponse({"token_infos": [token_info(r) for r in records]})


async def delete_token(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, TokenDelete)
    await services(request).tokens.delete(caller, body.token_id)
    return JSONResponse({})


async def databricks_config(request: Request) -> Response:
    """Asked without credentials by every SDK client before anything else: answer at once."""
    svc = services(request)
    host = f"{request.url.scheme}://{request.url.netloc}"
    return JSONResponse(
        {
            "oidc_endpoint": f"{host}/oidc",
            "workspace_id": svc.workspace_id,
            "cloud": "aws",
            "host_type": "workspace",
        }
    )


def token_routes() -> list[Route]:
    return [
        Route("/api/2.0/token/create", create_token, methods=["POST"]),
        Route("/api/2.0/token/list", list_tokens, methods=["GET"]),
        Route("/api/2.0/token/delete", delete_token, methods=["POST"]),
        Route("/api/2.0/token-management/on-behalf-of/tokens", create_obo_token, methods=["POST"]),
        Route("/.well-known/databricks-config", databricks_config, methods=["GET"]),
    ]

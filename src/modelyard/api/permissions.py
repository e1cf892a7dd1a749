"""Endpoint permission routes: /api/2.0/permissions/serving-endpoints/{id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import parse_body, principal, services
from modelyard.api.responses import JSONResponse
from modelyard.control.permissions import permission_levels
from modelyard.errors import NotFound
from modelyard.gateway.access import Level
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.schemas.permissions import AccessControlList

BASE = "/api/2.0/permissions/serving-endpoints/{id}"


def _endpoint(request: Request) -> LiveEndpoint:
    """The endpoint whose `id` is in the path (not its name)."""
    endpoint_id = request.path_params["id"]
    endpoints = services(request).endpoints
    for live in endpoints.all():
        if live.record.id == endpoint_id:
            return live
    hint = ""
    if endpoints.find(endpoint_id) is not None:
        hint = (
            " That is an endpoint's name: this API takes its id (the 'id' field of the endpoint)."
        )
    raise NotFound(f"Serving endpoint with id '{endpoint_id}' does not exist.{hint}")


async def get_permissions(request: Request) -> Response:
    caller = principal(request)
    live = _endpoint(request)
    svc = services(request)
    svc.access.require(caller, live, Level.CAN_VIEW)
    return JSONResponse(svc.permissions.describe(live))


async def _change(request: Request, *, replace: bool) -> Response:
    caller = principal(request)
    live = _endpoint(request)
    svc = services(request)
    svc.access.require(caller, live, Level.CAN_MANAGE)
    body = await parse_body(request, AccessControlList)
    return JSONResponse(
        await svc.permissions.change(live, body.access_control_list, replace=replace)
    )


async def set_permissions(request: Request) -> Response:
    """PUT: the direct grants become exactly the list given."""
    return await _change(request, replace=True)


async def update_permissions(request: Request) -> Response:
    """PATCH: the principals named get the level given; the others keep theirs."""
    return await _change(request, replace=False)


async def get_permission_levels(request: Request) -> Response:
    caller = principal(request)
    live = _endpoint(request)
    services(request).access.require(caller, live, Level.CAN_VIEW)
    return JSONResponse(permission_levels())


def permission_routes() -> list[Route]:
    return [
        Route(BASE, get_permissions, methods=["GET"]),
        Route(BASE, set_permissions, methods=["PUT"]),
        Route(BASE, update_permissions, methods=["PATCH"]),
        Route(BASE + "/permissionLevels", get_permission_levels, methods=["GET"]),
    ]

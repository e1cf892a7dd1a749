"""Endpoint management routes: /api/2.0/serving-endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import parse_body, principal, services
from modelyard.api.responses import JSONResponse
from modelyard.control.render import render_endpoint
from modelyard.gateway.access import Level
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.schemas.endpoints import (
    AiGateway,
    EndpointCoreConfig,
    EndpointCreate,
    RateLimitsPut,
    TagsPatch,
)

BASE = "/api/2.0/serving-endpoints"


def _endpoint(request: Request, level: Level) -> tuple[LiveEndpoint, Level]:
    """The endpoint named in the path and the caller's level on it; 403 below `level`."""
    caller = principal(request)
    svc = services(request)
    live = svc.endpoints.get(request.path_params["name"])
    return live, svc.access.require(caller, live, level)


async def create_endpoint(request: Request) -> Response:
    """Any authenticated caller may create an endpoint, and then manages it."""
    caller = principal(request)
    body = await parse_body(request, EndpointCreate)
    svc = services(request)
    await svc.secrets.check_references(body.config.model_dump(), caller)
    live = await svc.endpoint_admin.create(body, caller.user_name)
    await svc.permissions.grant_creator(live, caller)
    return JSONResponse(render_endpoint(live, Level.CAN_MANAGE.name))


async def list_endpoints(request: Request) -> Response:
    """The endpoints the caller may view, each with the caller's level on it."""
    caller = principal(request)
    svc = services(request)
    endpoints = []
    for live in svc.endpoints.all():
        level = svc.access.level(caller, live)
        if level is not None:
            endpoints.append(render_endpoint(live, level.name))
    return JSONResponse({"endpoints": endpoints})


async def get_endpoint(request: Request) -> Response:
    live, level = _endpoint(request, Level.CAN_VIEW)
    return JSONResponse(render_endpoint(live, level.name))


async def delete_endpoint(request: Request) -> Response:
    live, _ = _endpoint(request, Level.CAN_MANAGE)
    svc = services(request)
    await svc.endpoint_admin.delete(live.name)
    svc.access.forget(live.record.id)  # the store dropped its rows with the endpoint
    return JSONResponse({})


async def update_config(request: Request) -> Response:
    _, level = _endpoint(request, Level.CAN_MANAGE)
    config = await parse_body(request, EndpointCoreConfig)
    await services(request).secrets.check_references(config.model_dump(), principal(request))
    live = await services(request).endpoint_admin.update_config(request.path_params["name"], config)
    return JSONResponse(render_endpoint(live, level.name))


async def patch_tags(request: Request) -> Response:
    _endpoint(request, Level.CAN_MANAGE)
    patch = await parse_body(request, TagsPatch)
    tags = await services(request).endpoint_admin.patch_tags(request.path_params["name"], patch)
    return JSONResponse({"tags": tags})


async def update_ai_gateway(request: Request) -> Response:
    _endpoint(request, Level.CAN_MANAGE)
    block = await parse_body(request, AiGateway)
    admin = services(request).endpoint_admin
    return JSONResponse(await admin.update_ai_gateway(request.path_params["name"], block))


async def update_rate_limits(request: Request) -> Response:
    _endpoint(request, Level.CAN_MANAGE)
    body = await parse_body(request, RateLimitsPut)
    admin = services(request).endpoint_admin
    limits = await admin.update_rate_limits(request.path_params["name"], body.rate_limits)
    return JSONResponse({"rate_limits": limits})


def management_routes() -> list[Route]:
    return [
        Route(BASE, create_endpoint, methods=["POST"]),
        Route(BASE + "/", create_endpoint, methods=["POST"]),
        Route(BASE, list_endpoints, methods=["GET"]),
        Route(BASE + "/", list_endpoints, methods=["GET"]),
        Route(BASE + "/{name}", get_endpoint, methods=["GET"]),
        Route(BASE + "/{name}", delete_endpoint, methods=["DELETE"]),
        Route(BASE + "/{name}/config", update_config, methods=["PUT"]),
        Route(BASE + "/{name}/tags", patch_tags, methods=["PATCH"]),
        Route(BASE + "/{name}/ai-gateway", update_ai_gateway, methods=["PUT"]),
        Route(BASE + "/{name}/rate-limits", update_rate_limits, methods=["PUT"]),
    ]

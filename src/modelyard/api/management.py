"""Endpoint management routes: /api/2.0/serving-endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import parse_body, principal, services
from modelyard.api.responses import JSONResponse
from modelyard.control.render import render_endpoint
from modelyard.schemas.endpoints import AiGateway, EndpointCoreConfig, EndpointCreate, TagsPatch

BASE = "/api/2.0/serving-endpoints"


async def create_endpoint(request: Request) -> Response:
    caller = principal(request)
    body = await parse_body(request, EndpointCreate)
    live = await services(request).endpoint_admin.create(body, caller.user_name)
    return JSONResponse(render_endpoint(live))


async def list_endpoints(request: Request) -> Response:
    principal(request)
    endpoints = [render_endpoint(e) for e in services(request).endpoints.all()]
    return JSONResponse({"endpoints": endpoints})


async def get_endpoint(request: Request) -> Response:
    principal(request)
    live = services(request).endpoints.get(request.path_params["name"])
    return JSONResponse(render_endpoint(live))


async def delete_endpoint(request: Request) -> Response:
    principal(request)
    await services(request).endpoint_admin.delete(request.path_params["name"])
    return JSONResponse({})


async def update_config(request: Request) -> Response:
    principal(request)
    config = await parse_body(request, EndpointCoreConfig)
    live = await services(request).endpoint_admin.update_config(request.path_params["name"], config)
    return JSONResponse(render_endpoint(live))


async def patch_tags(request: Request) -> Response:
    principal(request)
    patch = await parse_body(request, TagsPatch)
    tags = await services(request).endpoint_admin.patch_tags(request.path_params["name"], patch)
    return JSONResponse({"tags": tags})


async def update_ai_gateway(request: Request) -> Response:
    principal(request)
    block = await parse_body(request, AiGateway)
    admin = services(request).endpoint_admin
    return JSONResponse(await admin.update_ai_gateway(request.path_params["name"], block))


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
    ]

"""Query routes: the Databricks invocations path and the OpenAI-style paths."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import principal, services
from modelyard.api.responses import JSONResponse, sse_response
from modelyard.gateway.access import Level
from modelyard.gateway.service import Answer
from modelyard.schemas.query import Task


async def invocations(request: Request) -> Response:
    answer = await services(request).queries.query(
        authorization=request.headers.get("authorization"),
        body=await request.body(),
        endpoint_name=request.path_params["name"],
        request_id=request.state.request_id,
    )
    return _render(answer)


def _openai_route(task: Task) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        answer = await services(request).queries.query(
            authorization=request.headers.get("authorization"),
            body=await request.body(),
            task=task,
            request_id=request.state.request_id,
        )
        return _render(answer)

    return handler


async def list_models(request: Request) -> Response:
    """The endpoints the caller may query, as the openai client's `models.list()` expects."""
    caller = principal(request)
    svc = services(request)
    data = [
        {
            "id": ep.name,
            "object": "model",
            "created": ep.record.created_ms // 1000,
            "owned_by": ep.record.creator,
        }
        for ep in svc.endpoints.all()
        if (svc.access.level(caller, ep) or 0) >= Level.CAN_QUERY
    ]
    return JSONResponse({"object": "list", "data": data})


def _render(answer: Answer) -> Response:
    headers = {"served-model-name": answer.served_entity}
    if answer.stream is not None:
        return sse_response(answer.stream, headers)
    return JSONResponse(answer.body, headers=headers)


def query_routes() -> list[Route]:
    """Every path a client may query on, with the `/v1` aliases."""
    routes = [
        Route("/serving-endpoints/{name}/invocations", invocations, methods=["POST"]),
        Route("/serving-endpoints/models", list_models, methods=["GET"]),
        Route("/serving-endpoints/v1/models", list_models, methods=["GET"]),
    ]
    for path, task in (
        ("chat/completions", Task.CHAT),
        ("completions", Task.COMPLETIONS),
        ("embeddings", Task.EMBEDDINGS),
    ):
        handler = _openai_route(task)
        routes.append(Route(f"/serving-endpoints/{path}", handler, methods=["POST"]))
        routes.append(Route(f"/serving-endpoints/v1/{path}", handler, methods=["POST"]))
    return routes

"""Prometheus metrics: `/metrics` for scrapers, and one endpoint's series for its viewers.

`/metrics` needs no token, like most Prometheus targets (scrapers rarely carry credentials); it
holds counts per endpoint name, never a payload or a token. Bind the server to a private address
or filter `/metrics` at the proxy if endpoint names are sensitive. The Databricks route
`/api/2.0/serving-endpoints/{name}/metrics` needs a token and CAN_VIEW on the endpoint.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import principal, services
from modelyard.gateway.access import Level


async def all_metrics(request: Request) -> Response:
    metrics = services(request).queries.recorder.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def endpoint_metrics(request: Request) -> Response:
    caller = principal(request)
    svc = services(request)
    endpoint = svc.endpoints.get(request.path_params["name"])
    svc.queries.access.require(caller, endpoint, Level.CAN_VIEW)
    body = svc.queries.recorder.metrics.render(endpoint.name)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_routes() -> list[Route]:
    return [
        Route("/metrics", all_metrics, methods=["GET"]),
        Route("/api/2.0/serving-endpoints/{name}/metrics", endpoint_metrics, methods=["GET"]),
    ]

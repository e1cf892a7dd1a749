"""SCIM routes for users, groups and service principals, as `databricks-sdk` calls them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard.api.context import parse_body, principal, services
from modelyard.api.responses import JSONResponse
from modelyard.errors import BadRequest, NotFound, PermissionDenied
from modelyard.gateway.auth import Principal
from modelyard.gateway.directory import GROUP, SERVICE_PRINCIPAL, USER, Directory
from modelyard.schemas.scim import GroupBody, PatchBody, ServicePrincipalBody, UserBody
from modelyard.store import PrincipalRecord

BASE = "/api/2.0/preview/scim/v2"
_SCHEMAS = {
    USER: "urn:ietf:params:scim:schemas:core:2.0:User",
    GROUP: "urn:ietf:params:scim:schemas:core:2.0:Group",
    SERVICE_PRINCIPAL: "urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal",
}
_LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
_RESOURCES = {USER: "Users", GROUP: "Groups", SERVICE_PRINCIPAL: "ServicePrincipals"}
_BODIES: dict[str, type[UserBody | GroupBody | ServicePrincipalBody]] = {
    USER: UserBody,
    GROUP: GroupBody,
    SERVICE_PRINCIPAL: ServicePrincipalBody,
}
_NAME_ATTRIBUTE = {USER: "userName", GROUP: "displayName", SERVICE_PRINCIPAL: "applicationId"}
_FILTER = re.compile(r'^\s*(\w+)\s+(eq|co|sw)\s+"([^"]*)"\s*$', re.IGNORECASE)

Handler = Callable[[Request], Awaitable[Response]]


def render(record: PrincipalRecord, directory: Directory) -> dict[str, Any]:
    """A principal in its SCIM shape, with its direct groups (and a group's members)."""
    body: dict[str, Any] = {"schemas": [_SCHEMAS[record.kind]], "id": record.id}
    body[_NAME_ATTRIBUTE[record.kind]] = record.name
    if record.display_name and record.kind != GROUP:
        body["displayName"] = record.display_name
    if record.kind != GROUP:
        body["active"] = record.active
    body.update(record.attributes)
    if record.kind == GROUP:
        body["members"] = [_ref(m) for m in directory.members(record.id)]
        body["meta"] = {"resourceType": "WorkspaceGroup"}
    body["groups"] = [{**_ref(g), "type": "direct"} for g in directory.parents(record.id)]
    return body


def _ref(record: PrincipalRecord) -> dict[str, str]:
    return {
        "value": record.id,
        "display": record.display_name or record.name,
        "$ref": f"{_RESOURCES[record.kind]}/{record.id}",
    }


def require_admin(caller: Principal) -> None:
    """Only admins manage principals."""
    if not caller.is_admin:
        raise PermissionDenied(
            f"'{caller.user_name}' is not a workspace admin: only members of group 'admins' may "
            "create, change or delete users, groups and service principals."
        )


def _list(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        principal(request)
        directory = services(request).principals.directory
        records = [r for r in directory.all(kind) if _matches(r, kind, request)]
        start = _int_param(request, "startIndex", 1)
        count = _int_param(request, "count", 10_000)
        page = records[start - 1 : start - 1 + count]
        return JSONResponse(
            {
                "schemas": [_LIST_SCHEMA],
                "totalResults": len(records),
                "startIndex": start,
                "itemsPerPage": len(page),
                "Resources": [render(r, directory) for r in page],
            }
        )

    return handler


def _matches(record: PrincipalRecord, kind: str, request: Request) -> bool:
    """The simple filters the SCIM API documents: `<attribute> eq|co|sw "<value>"`."""
    text = request.query_params.get("filter")
    if not text:
        return True
    match = _FILTER.match(text)
    if not match:
        raise BadRequest(
            f'Unsupported filter {text!r}: use <attribute> eq|co|sw "<value>", for example '
            f'{_NAME_ATTRIBUTE[kind]} eq "name".'
        )
    attr, op, value = match.group(1), match.group(2).lower(), match.group(3)
    fields = {"id": record.id, _NAME_ATTRIBUTE[kind]: record.name}
    fields.setdefault("displayName", record.display_name or "")
    have = {k.lower(): v for k, v in fields.items()}.get(attr.lower())
    if have is None:
        raise BadRequest(f"Cannot filter on '{attr}'; use one of {sorted(fields)}.")
    if op == "eq":
        return have.lower() == value.lower()
    return have.lower().startswith(value.lower()) if op == "sw" else value.lower() in have.lower()


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a positive integer.") from None
    if value < (1 if name == "startIndex" else 0):
        raise BadRequest(f"{name} must be a positive integer.")
    return value


def _create(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        require_admin(principal(request))
        body = await parse_body(request, _BODIES[kind])
        svc = services(request).principals
        record = await svc.create(kind, body)
        return JSONResponse(render(record, svc.directory), status_code=201)

    return handler


def _get(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        principal(request)
        svc = services(request).principals
        return JSONResponse(render(svc.get(kind, request.path_params["id"]), svc.directory))

    return handler


def _replace(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        require_admin(principal(request))
        body = await parse_body(request, _BODIES[kind])
        svc = services(request).principals
        record = await svc.replace(kind, request.path_params["id"], body)
        return JSONResponse(render(record, svc.directory))

    return handler


def _patch(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        require_admin(principal(request))
        body = await parse_body(request, PatchBody)
        svc = services(request).principals
        record = await svc.patch(kind, request.path_params["id"], body.operations)
        return JSONResponse(render(record, svc.directory))

    return handler


def _delete(kind: str) -> Handler:
    async def handler(request: Request) -> Response:
        require_admin(principal(request))
        await services(request).principals.delete(kind, request.path_params["id"])
        return Response(status_code=204)

    return handler


async def me(request: Request) -> Response:
    """The caller, as a User (a service principal's userName is its applicationId)."""
    caller = principal(request)
    directory = services(request).principals.directory
    identity = directory.identity(caller.user_name)
    if identity is None:
        raise NotFound(f"'{caller.user_name}' is not in the directory.")
    body = render(identity.record, directory)
    body.pop("applicationId", None)
    body["schemas"] = [_SCHEMAS[USER]]
    body["userName"] = identity.record.name
    return JSONResponse(body)


def scim_routes() -> list[Route]:
    routes = [Route(f"{BASE}/Me", me, methods=["GET"])]
    for kind, resource in _RESOURCES.items():
        path = f"{BASE}/{resource}"
        routes += [
            Route(path, _list(kind), methods=["GET"]),
            Route(path, _create(kind), methods=["POST"]),
            Route(path + "/{id}", _get(kind), methods=["GET"]),
            Route(path + "/{id}", _replace(kind), methods=["PUT"]),
            Route(path + "/{id}", _patch(kind), methods=["PATCH"]),
            Route(path + "/{id}", _delete(kind), methods=["DELETE"]),
        ]
    return routes

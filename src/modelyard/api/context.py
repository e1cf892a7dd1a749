"""The objects a request handler works with, owned by the app's lifespan (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from modelyard.control.endpoints import EndpointService
from modelyard.control.permissions import PermissionService
from modelyard.control.principals import PrincipalService
from modelyard.control.sync import ReplicaSync
from modelyard.control.tokens import TokenService
from modelyard.errors import BadRequest
from modelyard.gateway.access import AccessControl
from modelyard.gateway.auth import Authenticator, Principal
from modelyard.gateway.endpoints import EndpointRegistry
from modelyard.gateway.service import QueryService, parse_json_object
from modelyard.schemas.validation import describe_validation_error
from modelyard.secrets import SecretBox, SecretService, SecretVault
from modelyard.settings import Settings

Body = TypeVar("Body", bound=BaseModel)


@dataclass
class Services:
    settings: Settings
    authenticator: Authenticator
    endpoints: EndpointRegistry
    queries: QueryService
    endpoint_admin: EndpointService
    tokens: TokenService
    secrets: SecretService
    vault: SecretVault
    secret_box: SecretBox
    workspace_id: str
    sync: ReplicaSync
    access: AccessControl
    principals: PrincipalService
    permissions: PermissionService


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def principal(request: Request) -> Principal:
    """The authenticated caller, or 401/403."""
    return services(request).authenticator.authenticate(request.headers.get("authorization"))


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The request body validated as `model`, or a 400 saying what to fix."""
    payload = parse_json_object(await request.body())
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from exc

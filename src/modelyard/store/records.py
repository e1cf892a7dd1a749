"""The plain records the store takes and returns; no SQLAlchemy type leaks past `store/`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EndpointRecord:
    """One serving endpoint as persisted; `config` is the normalised served_entities JSON."""

    id: str  # 32 hex chars (uuid4().hex)
    name: str
    creator: str
    created_ms: int
    updated_ms: int
    config_version: int
    task: str  # "llm/v1/chat", ...
    endpoint_type: str  # "FOUNDATION_MODEL_API" | "EXTERNAL_MODEL"
    config: dict[str, Any]  # {"served_entities": [...], "traffic_config": {...}}
    ai_gateway: dict[str, Any] | None
    tags: list[dict[str, str]]  # [{"key": ..., "value": ...}]
    description: str | None
    route_optimized: bool


@dataclass(frozen=True)
class TokenRecord:
    """One personal access token; only the sha256 of its value is ever stored."""

    token_id: str  # 32 hex
    token_hash: str  # hex sha256 of the token value
    owner: str  # user name, e.g. "admin"
    comment: str | None
    created_ms: int
    expiry_ms: int  # -1 = never


@dataclass(frozen=True)
class SecretScopeRecord:
    """One secret scope; its secrets are deleted with it."""

    name: str
    backend_type: str  # "DATABRICKS"
    creator: str
    created_ms: int


@dataclass(frozen=True)
class SecretRecord:
    """One secret; the value is stored only as the Fernet token `value_encrypted`."""

    scope: str
    key: str
    value_encrypted: str
    updated_ms: int


@dataclass(frozen=True)
class PrincipalRecord:
    """A user, group or service principal; `name` is the userName, group displayName or
    service principal applicationId."""

    id: str  # numeric string, like Databricks' SCIM ids
    kind: str  # "user" | "group" | "service_principal"
    name: str
    display_name: str | None
    active: bool
    created_ms: int
    attributes: dict[str, Any]  # other SCIM attributes as sent: emails, name, entitlements


@dataclass(frozen=True)
class AclRecord:
    """One direct permission of a principal on an endpoint."""

    endpoint_id: str
    principal_id: str
    level: str  # "CAN_VIEW" | "CAN_QUERY" | "CAN_MANAGE"

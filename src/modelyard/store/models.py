"""The ORM tables. Migrations in `migrations/versions/` must create exactly this schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so later migrations can drop or alter them by name on every
# backend (SQLite otherwise leaves unique constraints anonymous).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EndpointRow(Base):
    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    creator: Mapped[str] = mapped_column(String(255))
    # Epoch milliseconds overflow a 32-bit INTEGER on PostgreSQL.
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    config_version: Mapped[int]
    task: Mapped[str] = mapped_column(String(64))
    endpoint_type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # none_as_null: a missing ai_gateway is SQL NULL, not the JSON literal `null`.
    ai_gateway: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    tags: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    route_optimized: Mapped[bool]


class TokenRow(Base):
    __tablename__ = "tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    comment: Mapped[str | None] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expiry_ms: Mapped[int] = mapped_column(BigInteger)


class SettingRow(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SecretScopeRow(Base):
    __tablename__ = "secret_scopes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend_type: Mapped[str] = mapped_column(String(32))
    creator: Mapped[str] = mapped_column(String(255))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class SecretRow(Base):
    __tablename__ = "secrets"

    scope: Mapped[str] = mapped_column(
        String(128), ForeignKey("secret_scopes.name", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value_encrypted: Mapped[str] = mapped_column(Text)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class UsageRow(Base):
    """One query on an endpoint with usage tracking on (`modelyard usage` reads these)."""

    __tablename__ = "usage_records"

    # BIGINT on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    client_request_id: Mapped[str | None] = mapped_column(String(255))
    usage_context: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    endpoint_name: Mapped[str] = mapped_column(String(255), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(32))
    served_entity: Mapped[str | None] = mapped_column(String(255))
    requester: Mapped[str] = mapped_column(String(255), index=True)
    request_time_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    status_code: Mapped[int]
    error_code: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int]
    completion_tokens: Mapped[int]
    latency_ms: Mapped[int]


class PrincipalRow(Base):
    """A user, group or service principal (`kind`); `name` is unique within its kind."""

    __tablename__ = "principals"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool]
    created_ms: Mapped[int] = mapped_column(BigInteger)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)


class GroupMemberRow(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class EndpointAclRow(Base):
    __tablename__ = "endpoint_acl"

    endpoint_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    principal_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    level: Mapped[str] = mapped_column(String(32))

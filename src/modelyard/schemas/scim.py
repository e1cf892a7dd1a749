"""SCIM request bodies as the Databricks SDK sends them (`w.users`, `w.groups`,
`w.service_principals`): camelCase attributes, `Operations` for PATCH."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Attributes kept as sent and echoed back; modelyard gives them no meaning.
EXTRA_ATTRIBUTES = ("emails", "name", "entitlements", "roles", "externalId")


class ComplexValue(BaseModel):
    """A reference to another principal: `{"value": "<id>", "display"?, "$ref"?}`."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    value: str = Field(min_length=1)
    display: str | None = None
    ref: str | None = Field(None, alias="$ref")

    @field_validator("value", mode="before")
    @classmethod
    def _ids_are_strings(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class _Scim(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    schemas: list[str] | None = None
    display_name: str | None = Field(None, alias="displayName", max_length=255)
    groups: list[ComplexValue] | None = None
    emails: list[dict[str, Any]] | None = None
    name: dict[str, Any] | None = None
    entitlements: list[dict[str, Any]] | None = None
    roles: list[dict[str, Any]] | None = None
    external_id: str | None = Field(None, alias="externalId")

    def extra_attributes(self) -> dict[str, Any]:
        """The kept-as-sent attributes that were given, under their SCIM names."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        return {k: data[k] for k in EXTRA_ATTRIBUTES if k in data}


class UserBody(_Scim):
    user_name: str | None = Field(None, alias="userName", max_length=255)
    active: bool | None = None


class GroupBody(_Scim):
    members: list[ComplexValue] | None = None


class ServicePrincipalBody(_Scim):
    application_id: str | None = Field(None, alias="applicationId", max_length=255)
    active: bool | None = None


class PatchOperation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    op: Literal["add", "remove", "replace"]
    path: str | None = None
    value: Any = None

    @field_validator("op", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # Azure AD and Okta send "Add" / "Replace".
        return value.lower() if isinstance(value, str) else value


class PatchBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    schemas: list[str] | None = None
    operations: list[PatchOperation] = Field(alias="Operations", min_length=1)


class OboTokenCreate(BaseModel):
    """`w.token_management.create_obo_token`: a token for a service principal (or a user)."""

    model_config = ConfigDict(extra="ignore")  # autoscope_enabled, scopes: not modelled

    application_id: str = Field(min_length=1)
    lifetime_seconds: int | None = Field(default=None, gt=0)
    comment: str | None = None

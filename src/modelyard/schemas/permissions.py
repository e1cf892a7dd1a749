"""Access control lists as `w.serving_endpoints.set_permissions/update_permissions` send them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

PermissionLevel = Literal["CAN_VIEW", "CAN_QUERY", "CAN_MANAGE"]


class AccessControlEntry(BaseModel):
    """One grant: exactly one of user_name, group_name, service_principal_name."""

    model_config = ConfigDict(extra="forbid")

    user_name: str | None = None
    group_name: str | None = None
    service_principal_name: str | None = None
    permission_level: PermissionLevel

    @model_validator(mode="after")
    def _one_principal(self) -> AccessControlEntry:
        named = [n for n in (self.user_name, self.group_name, self.service_principal_name) if n]
        if len(named) != 1:
            raise ValueError(
                "each entry names exactly one of user_name, group_name, service_principal_name"
            )
        return self


class AccessControlList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_control_list: list[AccessControlEntry] = []

"""Endpoint permissions: access control lists as the Databricks permissions API shows them."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from modelyard.errors import BadRequest, NotFound
from modelyard.gateway.access import AccessControl, Level
from modelyard.gateway.auth import ADMINS_GROUP, Principal
from modelyard.gateway.directory import GROUP, SERVICE_PRINCIPAL, USER, Directory
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.schemas.permissions import AccessControlEntry
from modelyard.store import Store, StoreNotFound

OBJECT_TYPE = "serving-endpoint"
ROOT_OBJECT = "/serving-endpoints/"
_NAME_FIELDS = {USER: "user_name", GROUP: "group_name", SERVICE_PRINCIPAL: "service_principal_name"}
LEVEL_DESCRIPTIONS = {
    Level.CAN_VIEW: "Can see the endpoint and its configuration",
    Level.CAN_QUERY: "Can query the endpoint, and view it",
    Level.CAN_MANAGE: "Can change, delete and grant permissions on the endpoint, and query it",
}


class HasDirectory(Protocol):
    directory: Directory


class PermissionService:
    """Changes grants in the store, then in the in-memory `AccessControl`."""

    def __init__(self, store: Store, access: AccessControl, principals: HasDirectory) -> None:
        self.store = store
        self.access = access
        # The PrincipalService: its `directory` snapshot is swapped on every change.
        self._principals = principals
        # Changes and reloads take turns, so a reload never undoes a grant made meanwhile.
        self._lock = asyncio.Lock()

    @property
    def directory(self) -> Directory:
        return self._principals.directory

    async def load(self) -> None:
        """Fill the cache from the store (server start, and changes from other replicas)."""
        async with self._lock:
            self.access.load(await asyncio.to_thread(self.store.list_acl))

    async def grant_creator(self, endpoint: LiveEndpoint, creator: Principal) -> None:
        """The creator of an endpoint may manage it."""
        if creator.principal_id:
            await self._write(endpoint, {creator.principal_id: Level.CAN_MANAGE}, replace=False)

    async def change(
        self, endpoint: LiveEndpoint, entries: list[AccessControlEntry], *, replace: bool
    ) -> dict[str, Any]:
        """PUT (`replace`) or PATCH the direct grants; returns the new ACL."""
        levels: dict[str, Level] = {}
        for entry in entries:
            levels[self._resolve(entry)] = Level[entry.permission_level]
        await self._write(endpoint, levels, replace=replace)
        return self.describe(endpoint)

    async def _write(
        self, endpoint: LiveEndpoint, levels: dict[str, Level], *, replace: bool
    ) -> None:
        stored = {p: level.name for p, level in levels.items()}
        async with self._lock:
            try:
                await asyncio.to_thread(
                    self.store.set_acl, endpoint.record.id, stored, replace=replace
                )
            except StoreNotFound as exc:
                raise NotFound(f"{exc} It may have just been deleted.") from exc
            self.access.set(endpoint.record.id, levels, replace=replace)

    def _resolve(self, entry: AccessControlEntry) -> str:
        for kind, field in _NAME_FIELDS.items():
            name = getattr(entry, field)
            if name:
                found = self.directory.find(kind, name)
                if found is None:
                    raise BadRequest(
                        f"{field} '{name}' does not exist. Create it first "
                        "(SCIM: /api/2.0/preview/scim/v2/...)."
                    )
                return found.id
        raise BadRequest("Each entry names a user_name, group_name or service_principal_name.")

    def describe(self, endpoint: LiveEndpoint) -> dict[str, Any]:
        """The ACL in the shape `ServingEndpointPermissions` parses."""
        acl: list[dict[str, Any]] = []
        for principal_id, level in self.access.direct(endpoint.record.id).items():
            record = self.directory.get(principal_id)
            if record is None:
                continue
            entry: dict[str, Any] = {_NAME_FIELDS[record.kind]: record.name}
            if record.display_name:
                entry["display_name"] = record.display_name
            entry["all_permissions"] = [{"permission_level": level.name, "inherited": False}]
            acl.append(entry)
        acl.sort(key=lambda e: next(iter(e.values())))  # by principal name
        # Admins may manage every endpoint; shown as Databricks does, inherited from the root.
        acl.append(
            {
                "group_name": ADMINS_GROUP,
                "all_permissions": [
                    {
                        "permission_level": Level.CAN_MANAGE.name,
                        "inherited": True,
                        "inherited_from_object": [ROOT_OBJECT],
                    }
                ],
            }
        )
        return {
            "object_id": f"{ROOT_OBJECT}{endpoint.record.id}",
            "object_type": OBJECT_TYPE,
            "access_control_list": acl,
        }


def permission_levels() -> dict[str, Any]:
    """The levels an endpoint grant may have, as `GetServingEndpointPermissionLevelsResponse`."""
    return {
        "permission_levels": [
            {"permission_level": level.name, "description": text}
            for level, text in LEVEL_DESCRIPTIONS.items()
        ]
    }

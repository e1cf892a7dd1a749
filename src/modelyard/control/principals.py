"""Users, groups and service principals: validate, persist, then swap the in-memory directory."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from dataclasses import replace
from typing import Any

from modelyard.control.scim_patch import apply_patch
from modelyard.errors import AlreadyExists, BadRequest, NotFound
from modelyard.gateway.access import AccessControl
from modelyard.gateway.auth import ADMIN_USER, ADMINS_GROUP, Authenticator
from modelyard.gateway.directory import GROUP, SERVICE_PRINCIPAL, USER, Directory
from modelyard.schemas.scim import (
    EXTRA_ATTRIBUTES,
    GroupBody,
    PatchOperation,
    ServicePrincipalBody,
    UserBody,
)
from modelyard.store import PrincipalRecord, Store, StoreConflict, StoreNotFound

KIND_NAMES = {USER: "User", GROUP: "Group", SERVICE_PRINCIPAL: "Service principal"}


def new_principal_id() -> str:
    """A 16-digit numeric string, the form Databricks' SCIM ids take."""
    return str(secrets.randbelow(9 * 10**15) + 10**15)


class PrincipalService:
    """The one way principals change; keeps the store and the directory snapshot in step."""

    def __init__(self, store: Store, authenticator: Authenticator, access: AccessControl) -> None:
        self.store = store
        self.authenticator = authenticator
        self.access = access
        self.directory = Directory()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read every principal and membership and swap in a new snapshot (start, and after
        each change; another replica's changes show after its next call too)."""
        principals = await asyncio.to_thread(self.store.list_principals)
        memberships = await asyncio.to_thread(self.store.all_memberships)
        self.directory = Directory(principals, memberships)
        self.authenticator.directory = self.directory

    async def reload(self) -> None:
        """Take in principals another replica changed (not while a change here is under way)."""
        async with self._lock:
            await self.load()

    async def bootstrap(self) -> None:
        """Make sure user `admin` exists and is a member of group `admins` (first start)."""
        async with self._lock:
            await self.load()
            admin = self.directory.find(USER, ADMIN_USER) or await self._insert_quietly(
                _record(USER, ADMIN_USER, "Administrator")
            )
            group = self.directory.find(GROUP, ADMINS_GROUP) or await self._insert_quietly(
                _record(GROUP, ADMINS_GROUP, ADMINS_GROUP), [admin.id]
            )
            await self.load()
            if admin.id not in self.directory.member_ids(group.id):
                members = [*self.directory.member_ids(group.id), admin.id]
                await asyncio.to_thread(self.store.set_members, group.id, members)
                await self.load()

    async def _insert_quietly(
        self, record: PrincipalRecord, members: list[str] | None = None
    ) -> PrincipalRecord:
        # Two replicas starting together: the loser of the race uses the winner's row.
        try:
            await asyncio.to_thread(self.store.insert_principal, record, members or [])
            return record
        except StoreConflict:
            await self.load()
            found = self.directory.find(record.kind, record.name)
            assert found is not None
            return found

    def get(self, kind: str, principal_id: str) -> PrincipalRecord:
        """The principal of `kind` with that id, or 404."""
        record = self.directory.get(principal_id)
        if record is None or record.kind != kind:
            raise NotFound(f"{KIND_NAMES[kind]} with id '{principal_id}' does not exist.")
        return record

    async def create(
        self, kind: str, body: UserBody | GroupBody | ServicePrincipalBody
    ) -> PrincipalRecord:
        """A new principal, with the members (groups) and parent groups the body names."""
        name = _name_of(kind, body)
        active = getattr(body, "active", None)
        record = _record(
            kind,
            name,
            body.display_name,
            active=active is not False,
            attributes=body.extra_attributes(),
        )
        async with self._lock:
            members = [m.value for m in getattr(body, "members", None) or []]
            parents = [g.value for g in body.groups or []]
            self._check_members(record, members)
            for group_id in parents:
                self.get(GROUP, group_id)
            if kind != GROUP and self.directory.identity(name) is not None:
                raise AlreadyExists(f"A user or service principal named '{name}' already exists.")
            try:
                await asyncio.to_thread(self.store.insert_principal, record, members)
            except StoreConflict as exc:
                raise AlreadyExists(f"{KIND_NAMES[kind]} '{name}' already exists.") from exc
            for group_id in parents:
                await self._set_members(group_id, [*self.directory.member_ids(group_id), record.id])
            await self.load()
        return record

    async def replace(
        self, kind: str, principal_id: str, body: UserBody | GroupBody | ServicePrincipalBody
    ) -> PrincipalRecord:
        """PUT: the whole principal as given (its name cannot change)."""
        doc = {
            "displayName": body.display_name,
            "active": getattr(body, "active", None) is not False,
            **body.extra_attributes(),
        }
        if kind == GROUP:
            doc["members"] = [m.value for m in getattr(body, "members", None) or []]
        async with self._lock:
            current = self.get(kind, principal_id)
            if kind != GROUP and _name_of(kind, body, current.name) != current.name:
                raise BadRequest(f"The name of {KIND_NAMES[kind].lower()} cannot be changed.")
            return await self._store_doc(current, doc)

    async def patch(
        self, kind: str, principal_id: str, operations: list[PatchOperation]
    ) -> PrincipalRecord:
        """Apply SCIM PATCH operations (membership changes take effect on the next request)."""
        async with self._lock:
            current = self.get(kind, principal_id)
            doc = self._doc(current)
            for op in operations:
                apply_patch(doc, op, kind)
            return await self._store_doc(current, doc)

    async def delete(self, kind: str, principal_id: str) -> None:
        """Delete a principal with its memberships, grants and tokens, effective at once."""
        async with self._lock:
            record = self.get(kind, principal_id)
            if (kind, record.name) in ((USER, ADMIN_USER), (GROUP, ADMINS_GROUP)):
                raise BadRequest(f"'{record.name}' is built in and cannot be deleted.")
            await asyncio.to_thread(self.store.delete_principal, principal_id)
            if kind != GROUP:
                self.authenticator.remove_owner(record.name)
            self.access.forget_principal(principal_id)
            await self.load()

    def _doc(self, record: PrincipalRecord) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "displayName": record.display_name,
            "active": record.active,
            **record.attributes,
        }
        if record.kind == GROUP:
            doc["members"] = self.directory.member_ids(record.id)
        return doc

    async def _store_doc(self, current: PrincipalRecord, doc: dict[str, Any]) -> PrincipalRecord:
        display = doc.get("displayName")
        if display is not None and not isinstance(display, str):
            raise BadRequest("displayName must be a string.")
        name = display if current.kind == GROUP else current.name
        if not name:
            raise BadRequest("A group needs a displayName.")
        if not isinstance(doc.get("active"), bool):
            raise BadRequest("active must be true or false.")
        if current.kind == GROUP and current.name == ADMINS_GROUP and name != ADMINS_GROUP:
            raise BadRequest("Group 'admins' is built in and cannot be renamed.")
        record = replace(
            current,
            name=name,
            display_name=display,
            active=doc["active"],
            attributes={k: doc[k] for k in EXTRA_ATTRIBUTES if doc.get(k) is not None},
        )
        members = doc.get("members")
        if members is not None:
            self._check_members(record, members)
        try:
            await asyncio.to_thread(self.store.update_principal, record)
        except StoreConflict as exc:
            raise AlreadyExists(f"{KIND_NAMES[record.kind]} '{name}' already exists.") from exc
        except StoreNotFound as exc:
            raise NotFound(str(exc)) from exc
        if members is not None and members != self.directory.member_ids(record.id):
            await self._set_members(record.id, members)
        await self.load()
        return record

    def _check_members(self, group: PrincipalRecord, members: list[str]) -> None:
        if members and group.kind != GROUP:
            raise BadRequest("Only groups have members.")
        for member_id in members:
            if member_id == group.id:
                raise BadRequest("A group cannot be a member of itself.")
            if self.directory.get(member_id) is None:
                raise BadRequest(
                    f"No user, group or service principal has id '{member_id}'; members are "
                    "given by id ({'value': '<id>'})."
                )

    async def _set_members(self, group_id: str, members: list[str]) -> None:
        unique = list(dict.fromkeys(members))
        try:
            await asyncio.to_thread(self.store.set_members, group_id, unique)
        except StoreNotFound as exc:
            raise BadRequest(f"{exc} Reload and retry.") from exc


def _record(
    kind: str,
    name: str,
    display_name: str | None,
    *,
    active: bool = True,
    attributes: dict[str, Any] | None = None,
) -> PrincipalRecord:
    return PrincipalRecord(
        id=new_principal_id(),
        kind=kind,
        name=name,
        display_name=display_name,
        active=active,
        created_ms=int(time.time() * 1000),
        attributes=attributes or {},
    )


def _name_of(
    kind: str, body: UserBody | GroupBody | ServicePrincipalBody, default: str | None = None
) -> str:
    """The unique name: userName, the group's displayName, or the applicationId."""
    if isinstance(body, UserBody):
        name = body.user_name or default
        if not name:
            raise BadRequest("userName is required: the user's name (usually an e-mail address).")
        return name
    if isinstance(body, ServicePrincipalBody):
        return body.application_id or default or str(uuid.uuid4())
    if not body.display_name:
        raise BadRequest("displayName is required: the group's name.")
    return body.display_name

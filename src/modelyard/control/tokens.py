"""Personal access tokens: created once and shown once, stored only as a hash."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from modelyard.errors import NotFound, PermissionDenied
from modelyard.gateway.auth import ADMIN_USER, Authenticator, Principal, hash_token, new_token_value
from modelyard.gateway.directory import SERVICE_PRINCIPAL, USER
from modelyard.store import Store, TokenRecord

_ADMIN_CREATED = "admin_token_created"


def token_info(record: TokenRecord) -> dict[str, Any]:
    """A token as the API lists it: never its value or hash."""
    info: dict[str, Any] = {
        "token_id": record.token_id,
        "creation_time": record.created_ms,
        "expiry_time": record.expiry_ms,
        "created_by_username": record.owner,
    }
    if record.comment is not None:
        info["comment"] = record.comment
    return info


class TokenService:
    """Creates, lists and revokes tokens, keeping the authenticator's cache in step."""

    def __init__(self, store: Store, authenticator: Authenticator) -> None:
        self.store = store
        self.authenticator = authenticator
        # Changes and reloads take turns, so a reload never undoes a change made meanwhile.
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        """Take in tokens another replica created or revoked."""
        async with self._lock:
            self.authenticator.replace(await asyncio.to_thread(self.store.all_tokens))

    async def create(
        self,
        owner: str,
        *,
        lifetime_seconds: int | None = None,
        comment: str | None = None,
        value: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token for `owner`; returns its value (the only time it exists) and record."""
        value = value or new_token_value()
        now = int(time.time() * 1000)
        record = TokenRecord(
            token_id=uuid.uuid4().hex,
            token_hash=hash_token(value),
            owner=owner,
            comment=comment,
            created_ms=now,
            expiry_ms=now + lifetime_seconds * 1000 if lifetime_seconds else -1,
        )
        async with self._lock:
            await asyncio.to_thread(self.store.insert_token, record)
            self.authenticator.add(record)
        return value, record

    async def create_on_behalf(
        self,
        caller: Principal,
        application_id: str,
        *,
        lifetime_seconds: int | None = None,
        comment: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """An admin creates a token for a service principal (by applicationId or SCIM id) or,
        as modelyard's addition, for a user (by userName or SCIM id): their first token."""
        if not caller.is_admin:
            raise PermissionDenied(
                "Only workspace admins may create tokens on behalf of others; create your own "
                "with POST /api/2.0/token/create."
            )
        directory = self.authenticator.directory
        found = None
        if directory is not None:
            found = directory.find(SERVICE_PRINCIPAL, application_id) or directory.find(
                USER, application_id
            )
            by_id = directory.get(application_id)
            if found is None and by_id is not None and by_id.kind in (SERVICE_PRINCIPAL, USER):
                found = by_id
        if found is None:
            raise NotFound(
                f"No service principal with application_id '{application_id}' (nor a user with "
                "that userName or id) exists."
            )
        return await self.create(found.name, lifetime_seconds=lifetime_seconds, comment=comment)

    async def list(self, principal: Principal) -> list[TokenRecord]:
        """The caller's tokens; the admin sees everyone's."""
        owner = None if principal.is_admin else principal.user_name
        return await asyncio.to_thread(self.store.list_tokens, owner)

    async def delete(self, principal: Principal, token_id: str) -> None:
        """Revoke a token the caller owns (the admin may revoke any); effective at once."""
        mine = {t.token_id for t in await self.list(principal)}
        async with self._lock:
            if token_id not in mine or not await asyncio.to_thread(
                self.store.delete_token, token_id
            ):
                raise NotFound(f"Token with id '{token_id}' does not exist.")
            self.authenticator.remove(token_id)

    async def bootstrap_admin(self, configured: str | None) -> str | None:
        """Make sure the admin can log in; returns a newly created token value to show once.

        `configured` (MODELYARD_ADMIN_TOKEN) is registered as an admin token if it is new.
        """
        if configured:
            if await asyncio.to_thread(self.store.get_token_by_hash, hash_token(configured)):
                return None
            await self.create(
                ADMIN_USER, comment="admin token from MODELYARD_ADMIN_TOKEN", value=configured
            )
            return None
        if await asyncio.to_thread(self.store.get_setting, _ADMIN_CREATED):
            return None
        value, _ = await self.create(ADMIN_USER, comment="admin token created by modelyard serve")
        await asyncio.to_thread(self.store.set_setting, _ADMIN_CREATED, "1")
        return value

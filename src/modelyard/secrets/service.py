"""Secret scopes and secrets: validated, encrypted into the store, decrypted into the vault."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from modelyard.errors import AlreadyExists, BadRequest, NotFound, PermissionDenied
from modelyard.gateway.auth import Principal
from modelyard.secrets.box import SecretBox
from modelyard.secrets.vault import KEY_CHARS, SCOPE_CHARS, SecretVault, references_in
from modelyard.store import SecretRecord, SecretScopeRecord, Store, StoreConflict

BACKEND_TYPE = "DATABRICKS"
MAX_NAME_CHARS = 128
MAX_VALUE_BYTES = 128 * 1024
_SCOPE_NAME = re.compile(rf"{SCOPE_CHARS}{{1,{MAX_NAME_CHARS}}}")
_KEY_NAME = re.compile(rf"{KEY_CHARS}{{1,{MAX_NAME_CHARS}}}")


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    key: str
    last_updated_timestamp: int


class SecretService:
    """The one way secrets change; keeps the store and the in-memory vault in step."""

    def __init__(self, store: Store, box: SecretBox, vault: SecretVault) -> None:
        self.store = store
        self.box = box
        self.vault = vault
        # One writer at a time, so the vault ends in the order the store committed.
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Decrypt every stored secret into the vault (server start); `SecretKeyError` if the
        key changed."""
        for record in await asyncio.to_thread(self.store.all_secrets):
            self.vault.set(record.scope, record.key, self.box.decrypt(record.value_encrypted))

    async def reload(self) -> None:
        """Take in secrets another replica put or deleted."""
        async with self._lock:
            records = await asyncio.to_thread(self.store.all_secrets)
            values = {(r.scope, r.key): self.box.decrypt(r.value_encrypted) for r in records}
            self.vault.replace(values)

    async def require_manager(self, scope: str, caller: Principal) -> None:
        """403 unless the caller is an admin or created `scope`: a scope's keys are its
        creator's to change and to spend in endpoint configs."""
        if caller.is_admin:
            return
        creators = {s.name: s.creator for s in await self.list_scopes()}
        if creators.get(scope, caller.user_name) != caller.user_name:
            raise PermissionDenied(
                f"'{caller.user_name}' may not use secrets of scope '{scope}' nor change them: "
                f"only admins and the creator of scope '{scope}' may. Put the key in a scope "
                "of your own."
            )

    async def check_references(self, config: Any, caller: Principal) -> None:
        """403 if `config` names a secret in a scope its author may not use."""
        for scope, _ in references_in(config):
            await self.require_manager(scope, caller)

    async def create_scope(self, name: str, creator: str) -> SecretScopeRecord:
        """A new, empty scope; 409 if the name is taken."""
        _check_name("scope", name, _SCOPE_NAME, "letters, digits, '-', '_', '.' and '@'")
        record = SecretScopeRecord(
            name=name, backend_type=BACKEND_TYPE, creator=creator, created_ms=_now_ms()
        )
        try:
            await asyncio.to_thread(self.store.insert_scope, record)
        except StoreConflict as exc:
            raise AlreadyExists(f"Scope '{name}' already exists.") from exc
        return record

    async def list_scopes(self) -> list[SecretScopeRecord]:
        """Every scope, by name."""
        return await asyncio.to_thread(self.store.list_scopes)

    async def delete_scope(self, name: str) -> None:
        """Delete a scope and every secret in it; 404 if there is no such scope."""
        async with self._lock:
            if not await asyncio.to_thread(self.store.delete_scope, name):
                raise NotFound(_no_scope(name))
            self.vault.remove_scope(name)

    async def put(self, scope: str, key: str, value: str) -> None:
        """Create or overwrite `scope/key`; 404 if the scope does not exist."""
        _check_name("key", key, _KEY_NAME, "letters, digits, '-', '_' and '.'")
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            # The size only: the value itself never appears in a message.
            raise BadRequest(
                f"The value of secret '{key}' is {size} bytes; the limit is "
                f"{MAX_VALUE_BYTES} bytes (128 KiB)."
            )
        record = SecretRecord(
            scope=scope, key=key, value_encrypted=self.box.encrypt(value), updated_ms=_now_ms()
        )
        async with self._lock:
            await asyncio.to_thread(self.store.upsert_secret, record)
            self.vault.set(scope, key, value)

    async def delete(self, scope: str, key: str) -> None:
        """Delete `scope/key`; 404 naming the scope or the secret, whichever is missing."""
        async with self._lock:
            if not await asyncio.to_thread(self.store.delete_secret, scope, key):
                await self.list(scope)  # 404 naming the scope if that is what is missing
                raise NotFound(f"Secret '{key}' does not exist in scope '{scope}'.")
            self.vault.remove(scope, key)

    async def list(self, scope: str) -> list[SecretInfo]:
        """The keys of `scope` and when each last changed; 404 if there is no such scope."""
        records = await asyncio.to_thread(self.store.list_secrets, scope)
        return [SecretInfo(r.key, r.updated_ms) for r in records]


def _check_name(kind: str, name: str, pattern: re.Pattern[str], allowed: str) -> None:
    """400 unless `name` is 1 to 128 of the `allowed` characters."""
    if pattern.fullmatch(name):
        return
    if not name or len(name) > MAX_NAME_CHARS:
        raise BadRequest(
            f"A secret {kind} name must be 1 to {MAX_NAME_CHARS} characters long; "
            f"this one has {len(name)}."
        )
    raise BadRequest(f"Invalid secret {kind} name '{name}': use only {allowed}.")


def _no_scope(name: str) -> str:
    return f"Scope '{name}' does not exist."


def _now_ms() -> int:
    return int(time.time() * 1000)

"""Token authentication against an in-memory cache: no database round-trip per request."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from modelyard.errors import PermissionDenied, Unauthenticated
from modelyard.gateway.directory import SERVICE_PRINCIPAL, Directory
from modelyard.store import TokenRecord

ADMIN_USER = "admin"
ADMINS_GROUP = "admins"


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    user_name: str
    token_id: str
    groups: frozenset[str] = frozenset()
    service_principal: bool = False
    principal_id: str = ""  # the SCIM id; "" for a token whose owner is not in the directory
    group_ids: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.user_name == ADMIN_USER or ADMINS_GROUP in self.groups


def new_token_value() -> str:
    """A fresh token in Databricks' form: `dapi` and 32 hex characters (128 random bits)."""
    return "dapi" + secrets.token_hex(16)


def hash_token(value: str) -> str:
    """Tokens are random, so one SHA-256 is enough to keep them unusable if the store leaks."""
    return hashlib.sha256(value.encode()).hexdigest()


def token_from_header(authorization: str | None) -> str:
    """The token in `Bearer <token>` or Basic `token:<token>`; 401 if absent or malformed."""
    if not authorization:
        raise Unauthenticated(
            "No credentials sent. Send 'Authorization: Bearer <token>' "
            "(or curl -u token:<token>); create tokens with POST /api/2.0/token/create."
        )
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        _, sep, token = decoded.partition(":")
        if sep and token:
            return token
    raise Unauthenticated(
        "Malformed Authorization header: use 'Bearer <token>' or Basic auth with user "
        "'token' and the token as password."
    )


class Authenticator:
    """Maps token hashes to their records and owners; updated in place when either changes."""

    def __init__(
        self, tokens: Iterable[TokenRecord] = (), directory: Directory | None = None
    ) -> None:
        self._by_hash: dict[str, TokenRecord] = {t.token_hash: t for t in tokens}
        # None: no directory (tools and tests that only need tokens); every owner is known.
        self.directory = directory

    def add(self, token: TokenRecord) -> None:
        self._by_hash[token.token_hash] = token

    def replace(self, tokens: Iterable[TokenRecord]) -> None:
        """Swap in the whole set of tokens (another replica changed them)."""
        self._by_hash = {t.token_hash: t for t in tokens}

    def remove(self, token_id: str) -> None:
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.token_id != token_id}

    def remove_owner(self, owner: str) -> None:
        """Forget every token of `owner` (a deleted user or service principal)."""
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.owner != owner}

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an Authorization header, or 401/403."""
        digest = hash_token(token_from_header(authorization))
        record = self._by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.token_hash, digest):
            raise PermissionDenied("Invalid access token: it does not exist or was revoked.")
        if 0 <= record.expiry_ms <= time.time() * 1000:
            raise PermissionDenied(
                "The access token has expired. Create a new one with POST /api/2.0/token/create."
            )
        if self.directory is None:
            return Principal(user_name=record.owner, token_id=record.token_id)
        identity = self.directory.identity(record.owner)
        if identity is None:
            raise PermissionDenied(
                f"The owner of this access token, '{record.owner}', no longer exists."
            )
        if not identity.record.active:
            raise PermissionDenied(
                f"'{record.owner}' is deactivated; an admin can reactivate it through SCIM."
            )
        return Principal(
            user_name=record.owner,
            token_id=record.token_id,
            groups=identity.group_names,
            service_principal=identity.record.kind == SERVICE_PRINCIPAL,
            principal_id=identity.record.id,
            group_ids=identity.group_ids,
        )

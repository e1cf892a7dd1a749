"""`Store`: the synchronous persistence interface the server calls through `asyncio.to_thread`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, cast

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.store import migrate as _migrate
from modelyard.store.engine import SQLITE_BEGIN, make_engine
from modelyard.store.errors import StoreConflict, StoreNotFound
from modelyard.store.models import (
    EndpointAclRow,
    EndpointRow,
    GroupMemberRow,
    PrincipalRow,
    SecretRow,
    SecretScopeRow,
    SettingRow,
    TokenRow,
)
from modelyard.store.records import (
    AclRecord,
    EndpointRecord,
    PrincipalRecord,
    SecretRecord,
    SecretScopeRecord,
    TokenRecord,
)

_ENDPOINT_FIELDS = tuple(f.name for f in fields(EndpointRecord))
_TOKEN_FIELDS = tuple(f.name for f in fields(TokenRecord))
_SCOPE_FIELDS = tuple(f.name for f in fields(SecretScopeRecord))
_SECRET_FIELDS = tuple(f.name for f in fields(SecretRecord))
_PG_UNIQUE_VIOLATION = "23505"
_PG_FOREIGN_KEY_VIOLATION = "23503"
_SQLITE_UNIQUE_CODES = frozenset({1555, 2067})  # SQLITE_CONSTRAINT_PRIMARYKEY, _UNIQUE
_SQLITE_FOREIGN_KEY_CODE = 787  # SQLITE_CONSTRAINT_FOREIGNKEY


class Store:
    """Endpoints, tokens, secrets and settings in SQLite (`sqlite:///path.db`) or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        """The engine, for the usage recorder's batch inserts (store/usage.py)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """The backend name: "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest revision; a no-op when already there."""
        _migrate.upgrade(self._engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    # -- endpoints ---------------------------------------------------------------------------

    def insert_endpoint(self, rec: EndpointRecord) -> None:
        """Add an endpoint; `StoreConflict` if its name (or id) is taken."""
        with _conflict(f"Endpoint with name '{rec.name}'"), self._write() as session:
            session.add(EndpointRow(**_endpoint_values(rec)))

    def get_endpoint(self, name: str) -> EndpointRecord | None:
        """The endpoint called `name`, or None."""
        with self._read() as session:
            row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
            return None if row is None else _endpoint_record(row)

    def list_endpoints(self) -> list[EndpointRecord]:
        """Every endpoint, ordered by name."""
        with self._read() as session:
            rows = session.scalars(select(EndpointRow).order_by(EndpointRow.name))
            return [_endpoint_record(row) for row in rows]

    def update_endpoint(self, rec: EndpointRecord) -> None:
        """Replace the whole endpoint with id `rec.id`; `StoreNotFound` if it is gone,
        `StoreConflict` if it was renamed to a taken name."""
        with _conflict(f"Endpoint with name '{rec.name}'"), self._write() as session:
            row = session.get(EndpointRow, rec.id)
            if row is None:
                raise StoreNotFound(f"Endpoint with id '{rec.id}' does not exist.")
            for key, value in _endpoint_values(rec).items():
                setattr(row, key, value)

    def delete_endpoint(self, name: str) -> bool:
        """Delete the endpoint called `name`; False if there was none."""
        with self._write() as session:
            ids = select(EndpointRow.id).where(EndpointRow.name == name).scalar_subquery()
            session.execute(delete(EndpointAclRow).where(EndpointAclRow.endpoint_id == ids))
            return _deleted(session.execute(delete(EndpointRow).where(EndpointRow.name == name)))

    # -- tokens ------------------------------------------------------------------------------

    def insert_token(self, rec: TokenRecord) -> None:
        """Add a token; `StoreConflict` if its id or hash is taken."""
        with _conflict(f"Token with id '{rec.token_id}'"), self._write() as session:
            session.add(TokenRow(**{name: getattr(rec, name) for name in _TOKEN_FIELDS}))

    def get_token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token whose value hashes to `token_hash`, or None."""
        with self._read() as session:
            row = session.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash))
            return None if row is None else _token_record(row)

    def list_tokens(self, owner: str | None = None) -> list[TokenRecord]:
        """Tokens, oldest first; only `owner`'s when given."""
        query = select(TokenRow).order_by(TokenRow.created_ms, TokenRow.token_id)
        if owner is not None:
            query = query.where(TokenRow.owner == owner)
        with self._read() as session:
            return [_token_record(row) for row in session.scalars(query)]

    def delete_token(self, token_id: str) -> bool:
        """Delete (revoke) a token; False if there was none."""
        with self._write() as session:
            return _deleted(session.execute(delete(TokenRow).where(TokenRow.token_id == token_id)))

    def all_tokens(self) -> list[TokenRecord]:
        """Every token of every owner, oldest first (to fill the server's cache)."""
        return self.list_tokens()

    # -- secrets -----------------------------------------------------------------------------

    def insert_scope(self, rec: SecretScopeRecord) -> None:
        """Add a secret scope; `StoreConflict` if its name is taken."""
        with _conflict(f"Scope '{rec.name}'"), self._write() as session:
            session.add(SecretScopeRow(**{name: getattr(rec, name) for name in _SCOPE_FIELDS}))

    def list_scopes(self) -> list[SecretScopeRecord]:
        """Every secret scope, ordered by name."""
        with self._read() as session:
            rows = session.scalars(select(SecretScopeRow).order_by(SecretScopeRow.name))
            return [_scope_record(row) for row in rows]

    def delete_scope(self, name: str) -> bool:
        """Delete the scope `name` and its secrets; False if there was no such scope."""
        with self._write() as session:
            # Explicitly as well as by ON DELETE CASCADE, which SQLite honours only on
            # connections with PRAGMA foreign_keys on (ours, but not every tool's).
            session.execute(delete(SecretRow).where(SecretRow.scope == name))
            return _deleted(
                session.execute(delete(SecretScopeRow).where(SecretScopeRow.name == name))
            )

    def upsert_secret(self, rec: SecretRecord) -> None:
        """Create or overwrite the secret `rec.scope/rec.key`; `StoreNotFound` if no such scope."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        insert = dialect_insert(SecretRow).values(
            **{name: getattr(rec, name) for name in _SECRET_FIELDS}
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[SecretRow.scope, SecretRow.key],
            set_={
                "value_encrypted": insert.excluded.value_encrypted,
                "updated_ms": insert.excluded.updated_ms,
            },
        )
        # The foreign key, not a read first, decides: a scope deleted meanwhile is caught too.
        with _missing(f"Scope '{rec.scope}'"), self._write() as session:
            session.execute(stmt)

    def delete_secret(self, scope: str, key: str) -> bool:
        """Delete the secret `scope/key`; False if there was none."""
        where = (SecretRow.scope == scope) & (SecretRow.key == key)
        with self._write() as session:
            return _deleted(session.execute(delete(SecretRow).where(where)))

    def list_secrets(self, scope: str) -> list[SecretRecord]:
        """The secrets of `scope`, ordered by key; `StoreNotFound` if no such scope."""
        with self._read() as session:
            if session.get(SecretScopeRow, scope) is None:
                raise StoreNotFound(_no_scope(scope))
            rows = session.scalars(
                select(SecretRow).where(SecretRow.scope == scope).order_by(SecretRow.key)
            )
            return [_secret_record(row) for row in rows]

    def all_secrets(self) -> list[SecretRecord]:
        """Every secret of every scope, ordered by scope and key (to fill the server's vault)."""
        with self._read() as session:
            rows = session.scalars(select(SecretRow).order_by(SecretRow.scope, SecretRow.key))
            return [_secret_record(row) for row in rows]

    # -- settings ----------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        """The value stored under `key`, or None."""
        with self._read() as session:
            return session.scalar(select(SettingRow.value).where(SettingRow.key == key))

    def set_setting(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing any old value."""
        # A native upsert: a read-then-write would race between two replicas starting at once.
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        insert = dialect_insert(SettingRow).values(key=key, value=value)
        stmt = insert.on_conflict_do_update(
            index_elements=[SettingRow.key], set_={"value": insert.excluded.value}
        )
        with self._write() as session:
            session.execute(stmt)

    # -- principals and permissions ---------------------------------------------------------

    def insert_principal(self, rec: PrincipalRecord, member_ids: Iterable[str] = ()) -> None:
        """Add a principal (a group with its members); `StoreConflict` if its name is taken,
        `StoreNotFound` if a member does not exist."""
        what = f"{rec.kind.replace('_', ' ').capitalize()} '{rec.name}'"
        with _conflict(what), _missing("A member"), self._write() as session:
            session.add(PrincipalRow(**_principal_values(rec)))
            session.flush()
            session.add_all(GroupMemberRow(group_id=rec.id, member_id=m) for m in member_ids)

    def update_principal(self, rec: PrincipalRecord) -> None:
        """Replace the principal with id `rec.id`; `StoreNotFound` if gone, `StoreConflict` if
        renamed to a taken name."""
        what = f"{rec.kind.replace('_', ' ').capitalize()} '{rec.name}'"
        with _conflict(what), self._write() as session:
            row = session.get(PrincipalRow, rec.id)
            if row is None:
                raise StoreNotFound(f"Principal with id '{rec.id}' does not exist.")
            for key, value in _principal_values(rec).items():
                setattr(row, key, value)

    def delete_principal(self, principal_id: str) -> bool:
        """Delete a principal with its memberships, permissions and (users and service
        principals) tokens, in one transaction; False if there was none."""
        with self._write() as session:
            row = session.get(PrincipalRow, principal_id)
            if row is None:
                return False
            # Explicitly as well as by ON DELETE CASCADE (see delete_scope).
            session.execute(
                delete(GroupMemberRow).where(
                    (GroupMemberRow.group_id == principal_id)
                    | (GroupMemberRow.member_id == principal_id)
                )
            )
            session.execute(
                delete(EndpointAclRow).where(EndpointAclRow.principal_id == principal_id)
            )
            if row.kind != "group":
                session.execute(delete(TokenRow).where(TokenRow.owner == row.name))
            session.delete(row)
            return True

    def list_principals(self) -> list[PrincipalRecord]:
        """Every user, group and service principal, by kind and name."""
        with self._read() as session:
            rows = session.scalars(
                select(PrincipalRow).order_by(PrincipalRow.kind, PrincipalRow.name)
            )
            return [_principal_record(row) for row in rows]

    def all_memberships(self) -> list[tuple[str, str]]:
        """Every (group id, member id) pair."""
        with self._read() as session:
            rows = session.execute(select(GroupMemberRow.group_id, GroupMemberRow.member_id))
            return [(g, m) for g, m in rows]

    def set_members(self, group_id: str, member_ids: Iterable[str]) -> None:
        """Make `member_ids` the group's direct members; `StoreNotFound` if any is missing."""
        with _missing("A member or the group"), self._write() as session:
            session.execute(delete(GroupMemberRow).where(GroupMemberRow.group_id == group_id))
            session.add_all(GroupMemberRow(group_id=group_id, member_id=m) for m in member_ids)

    def set_acl(self, endpoint_id: str, levels: dict[str, str], *, replace: bool) -> None:
        """Give each principal id in `levels` its level on the endpoint; with `replace`, the
        principals not named lose theirs. `StoreNotFound` if the endpoint or a principal is gone."""
        with _missing("The endpoint or a principal"), self._write() as session:
            where = EndpointAclRow.endpoint_id == endpoint_id
            if not replace:
                where &= EndpointAclRow.principal_id.in_(list(levels))
            session.execute(delete(EndpointAclRow).where(where))
            session.add_all(
                EndpointAclRow(endpoint_id=endpoint_id, principal_id=p, level=level)
                for p, level in levels.items()
            )

    def list_acl(self) -> list[AclRecord]:
        """Every direct permission on every endpoint."""
        with self._read() as session:
            rows = session.scalars(
                select(EndpointAclRow).order_by(
                    EndpointAclRow.endpoint_id, EndpointAclRow.principal_id
                )
            )
            return [AclRecord(r.endpoint_id, r.principal_id, r.level) for r in rows]

    # -- sessions ----------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session that commits on success; on SQLite it holds the write lock from BEGIN."""
        with self._sessions() as session, session.begin():
            if self.dialect == "sqlite":
                session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
            yield session


@contextmanager
def _conflict(what: str) -> Iterator[None]:
    """Turn a unique-key violation into `StoreConflict`; other integrity errors propagate."""
    try:
        yield
    except IntegrityError as exc:
        orig = exc.orig
        if (
            getattr(orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION
            or getattr(orig, "sqlite_errorcode", None) in _SQLITE_UNIQUE_CODES
        ):
            raise StoreConflict(f"{what} already exists.") from exc
        raise


def _no_scope(scope: str) -> str:
    return f"Scope '{scope}' does not exist."


def _deleted(result: Result[Any]) -> bool:
    # rowcount rather than DELETE ... RETURNING, which needs SQLite >= 3.35 (Debian 11 has 3.34).
    return bool(cast("CursorResult[Any]", result).rowcount)


def _endpoint_values(rec: EndpointRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in _ENDPOINT_FIELDS}


def _endpoint_record(row: EndpointRow) -> EndpointRecord:
    return EndpointRecord(**{name: getattr(row, name) for name in _ENDPOINT_FIELDS})


def _token_record(row: TokenRow) -> TokenRecord:
    return TokenRecord(**{name: getattr(row, name) for name in _TOKEN_FIELDS})


def _scope_record(row: SecretScopeRow) -> SecretScopeRecord:
    return SecretScopeRecord(**{name: getattr(row, name) for name in _SCOPE_FIELDS})


def _secret_record(row: SecretRow) -> SecretRecord:
    return SecretRecord(**{name: getattr(row, name) for name in _SECRET_FIELDS})


@contextmanager
def _missing(what: str) -> Iterator[None]:
    """Turn a foreign-key violation into `StoreNotFound`."""
    try:
        yield
    except IntegrityError as exc:
        orig = exc.orig
        if (
            getattr(orig, "sqlstate", None) == _PG_FOREIGN_KEY_VIOLATION
            or getattr(orig, "sqlite_errorcode", None) == _SQLITE_FOREIGN_KEY_CODE
        ):
            raise StoreNotFound(f"{what} does not exist.") from exc
        raise


_PRINCIPAL_FIELDS = tuple(f.name for f in fields(PrincipalRecord))


def _principal_values(rec: PrincipalRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in _PRINCIPAL_FIELDS}


def _principal_record(row: PrincipalRow) -> PrincipalRecord:
    return PrincipalRecord(**{name: getattr(row, name) for name in _PRINCIPAL_FIELDS})

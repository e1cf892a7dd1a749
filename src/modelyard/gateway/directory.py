"""Users, groups and service principals in memory: a snapshot rebuilt whole on every change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelyard.store import PrincipalRecord

USER = "user"
GROUP = "group"
SERVICE_PRINCIPAL = "service_principal"


@dataclass(frozen=True)
class Identity:
    """Who a token's owner is, with every group it belongs to (directly or through groups)."""

    record: PrincipalRecord
    group_ids: frozenset[str]
    group_names: frozenset[str]


class Directory:
    """An immutable snapshot of the principals and memberships; readers never see half a change."""

    def __init__(
        self,
        principals: Iterable[PrincipalRecord] = (),
        memberships: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._by_id = {p.id: p for p in principals}
        self._by_key = {(p.kind, p.name): p for p in self._by_id.values()}
        self._members: dict[str, list[str]] = {}
        self._parents: dict[str, list[str]] = {}
        for group_id, member_id in memberships:
            self._members.setdefault(group_id, []).append(member_id)
            self._parents.setdefault(member_id, []).append(group_id)
        self._identities = {
            p.name: self._identity(p) for p in self._by_id.values() if p.kind != GROUP
        }

    def _identity(self, record: PrincipalRecord) -> Identity:
        # Groups nest: a member of a member group belongs to both (cycles are tolerated).
        seen: set[str] = set()
        todo = list(self._parents.get(record.id, ()))
        while todo:
            group_id = todo.pop()
            if group_id not in seen:
                seen.add(group_id)
                todo.extend(self._parents.get(group_id, ()))
        names = frozenset(self._by_id[g].name for g in seen if g in self._by_id)
        return Identity(record, frozenset(seen), names)

    def identity(self, name: str) -> Identity | None:
        """The user or service principal called `name` (a token owner), or None."""
        return self._identities.get(name)

    def get(self, principal_id: str) -> PrincipalRecord | None:
        return self._by_id.get(principal_id)

    def find(self, kind: str, name: str) -> PrincipalRecord | None:
        return self._by_key.get((kind, name))

    def all(self, kind: str) -> list[PrincipalRecord]:
        """Every principal of `kind`, by name."""
        return sorted((p for p in self._by_id.values() if p.kind == kind), key=lambda p: p.name)

    def members(self, group_id: str) -> list[PrincipalRecord]:
        """A group's direct members."""
        return [self._by_id[m] for m in self._members.get(group_id, ()) if m in self._by_id]

    def member_ids(self, group_id: str) -> list[str]:
        return list(self._members.get(group_id, ()))

    def parents(self, principal_id: str) -> list[PrincipalRecord]:
        """The groups `principal_id` is a direct member of."""
        return [self._by_id[g] for g in self._parents.get(principal_id, ()) if g in self._by_id]

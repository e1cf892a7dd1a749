"""Who may do what on an endpoint: CAN_VIEW < CAN_QUERY < CAN_MANAGE, answered from memory."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from modelyard.errors import PermissionDenied
from modelyard.gateway.auth import Principal
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.store import AclRecord


class Level(IntEnum):
    CAN_VIEW = 1
    CAN_QUERY = 2
    CAN_MANAGE = 3


_VERBS = {Level.CAN_VIEW: "view", Level.CAN_QUERY: "query", Level.CAN_MANAGE: "manage"}


class AccessControl:
    """Endpoint id → principal id → level, swapped whole on change (no database read per request).

    Admins may do everything; everyone else has the highest level granted to them directly or
    to any group they belong to (through nested groups too).
    """

    def __init__(self, entries: Iterable[AclRecord] = ()) -> None:
        self._acl: dict[str, dict[str, Level]] = {}
        self.load(entries)

    def load(self, entries: Iterable[AclRecord]) -> None:
        """Replace the whole cache (server start, or after a change that touches many rows)."""
        acl: dict[str, dict[str, Level]] = {}
        for e in entries:
            acl.setdefault(e.endpoint_id, {})[e.principal_id] = Level[e.level]
        self._acl = acl

    def set(self, endpoint_id: str, levels: dict[str, Level], *, replace: bool) -> None:
        """Grant each principal id its level; with `replace`, drop the others' direct grants."""
        current = {} if replace else dict(self._acl.get(endpoint_id, {}))
        self._acl = {**self._acl, endpoint_id: {**current, **levels}}

    def forget(self, endpoint_id: str) -> None:
        """Drop a deleted endpoint's grants."""
        self._acl = {k: v for k, v in self._acl.items() if k != endpoint_id}

    def forget_principal(self, principal_id: str) -> None:
        """Drop a deleted principal's grants everywhere."""
        self._acl = {
            e: {p: lv for p, lv in grants.items() if p != principal_id}
            for e, grants in self._acl.items()
        }

    def direct(self, endpoint_id: str) -> dict[str, Level]:
        """The direct grants on an endpoint: principal id → level."""
        return dict(self._acl.get(endpoint_id, {}))

    def level(self, principal: Principal, endpoint: LiveEndpoint) -> Level | None:
        """The caller's highest level on `endpoint`, or None when it has none."""
        if principal.is_admin:
            return Level.CAN_MANAGE
        grants = self._acl.get(endpoint.record.id)
        if not grants:
            return None
        ids = (principal.principal_id, *principal.group_ids)
        return max((grants[i] for i in ids if i in grants), default=None)

    def require(self, principal: Principal, endpoint: LiveEndpoint, level: Level) -> Level:
        """The caller's level if it is at least `level`; else 403 naming what is missing.

        Always 403, never 404, when the caller has no level at all: endpoint names are not
        secret (Databricks answers the same way), and one answer keeps clients simple.
        """
        have = self.level(principal, endpoint)
        if have is None or have < level:
            raise PermissionDenied(
                f"'{principal.user_name}' does not have permission to {_VERBS[level]} endpoint "
                f"'{endpoint.name}': {level.name} is required. Ask someone with CAN_MANAGE on it "
                "to grant it (PATCH /api/2.0/permissions/serving-endpoints/<endpoint id>)."
            )
        return have

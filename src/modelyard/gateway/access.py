"""Who may do what on an endpoint: CAN_VIEW < CAN_QUERY < CAN_MANAGE."""

from __future__ import annotations

from enum import IntEnum

from modelyard.gateway.auth import Principal
from modelyard.gateway.endpoints import LiveEndpoint


class Level(IntEnum):
    CAN_VIEW = 1
    CAN_QUERY = 2
    CAN_MANAGE = 3


class AccessControl:
    """Answers permission questions from memory. Until ACLs exist, every caller may manage."""

    def level(self, principal: Principal, endpoint: LiveEndpoint) -> Level | None:
        """The caller's highest level on `endpoint`, or None when it has none."""
        return Level.CAN_MANAGE

    def require(self, principal: Principal, endpoint: LiveEndpoint, level: Level) -> None:
        """Return if the caller has `level` on `endpoint`; else 403 (404 if it may not view)."""

"""Store errors, placed in modelyard's one error tree so the API layer renders them as is."""

from __future__ import annotations

from modelyard.errors import AlreadyExists, NotFound


class StoreConflict(AlreadyExists):
    """A unique key (endpoint name, id, token hash) is already taken: 409."""


class StoreNotFound(NotFound):
    """The row to update does not exist (any more): 404."""

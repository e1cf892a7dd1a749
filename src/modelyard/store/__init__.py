"""Persistence: endpoints, tokens, secrets and settings behind one synchronous `Store`.

SQLAlchemy 2 with packaged alembic migrations; SQLite by default, PostgreSQL for several
replicas. Nothing here is on the query hot path: the server caches what it reads.
"""

from modelyard.store.errors import StoreConflict, StoreNotFound
from modelyard.store.records import (
    AclRecord,
    EndpointRecord,
    PrincipalRecord,
    SecretRecord,
    SecretScopeRecord,
    TokenRecord,
)
from modelyard.store.store import Store

__all__ = [
    "AclRecord",
    "EndpointRecord",
    "PrincipalRecord",
    "SecretRecord",
    "SecretScopeRecord",
    "Store",
    "StoreConflict",
    "StoreNotFound",
    "TokenRecord",
]

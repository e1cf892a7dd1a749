"""Running the packaged alembic migrations programmatically: no alembic.ini at run time."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from modelyard.store.engine import SQLITE_BEGIN

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Key of the PostgreSQL advisory lock that serialises migrations across processes
# ("modelyar" in ASCII; any constant works as long as every replica uses the same one).
PG_MIGRATE_LOCK = 0x6D6F64656C796172
# alembic's `context` and `op` are process-global proxies: two migrations running in threads of
# one process (even on different databases) would overwrite each other's. The database locks
# below serialise processes; this serialises threads.
_IN_PROCESS = threading.Lock()


def alembic_config(url: str | None = None) -> Config:
    """An alembic `Config` for the packaged migrations; `url` only for offline/CLI use."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser interpolation would choke on a '%' in a URL-encoded password.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision shipped with this version of modelyard."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """`alembic upgrade head` in one transaction, serialised against concurrent callers.

    PostgreSQL: a transaction-scoped advisory lock, then transactional DDL, so a second replica
    waits and then finds the schema at head. SQLite: BEGIN IMMEDIATE takes the write lock first.
    """
    cfg = alembic_config()
    with _IN_PROCESS, engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATE_LOCK})
            # env.py runs inside this transaction (alembic sees it as external and leaves the
            # commit to us), so the lock is held until every migration step is committed.
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

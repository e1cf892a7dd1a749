"""Building the one SQLAlchemy `Engine` for a database URL, with the SQLite setup it needs."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool

# Execution option read by the SQLite "begin" hook: "IMMEDIATE" takes the write lock at BEGIN.
SQLITE_BEGIN = "modelyard_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str) -> URL:
    """Parse `url`, mapping bare `postgresql://` (and `postgres://`) to the psycopg v3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the file's parent directory is created if missing."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping: a long-lived server outlives PostgreSQL restarts and idle-connection reaping.
        return create_engine(parsed, pool_pre_ping=True)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    database = parsed.database
    lock_path: Path | None = None
    if not database or database == ":memory:":
        # One shared connection, or every pooled connection would see its own empty database.
        kwargs["poolclass"] = StaticPool
    elif not database.startswith("file:"):
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + ".init.lock")
    engine = create_engine(parsed, **kwargs)
    _install_sqlite_hooks(engine, lock_path)
    return engine


def _install_sqlite_hooks(engine: Engine, lock_path: Path | None) -> None:
    """WAL, a busy timeout, and real transactions (the sqlite3 module's own BEGIN is disabled)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # isolation_level=None stops sqlite3 from issuing BEGIN itself: its legacy mode never
        # begins before SELECT or DDL, so reads were not repeatable and migrations not atomic.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor, lock_path)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers ask for IMMEDIATE: a DEFERRED transaction that reads and then writes fails at
        # once with SQLITE_BUSY when another writer got in between; busy_timeout cannot help it.
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(cursor: Any, lock_path: Path | None) -> None:
    """Switch the database to WAL (readers never block the writer); it stays so on disk.

    SQLite answers "locked" at once, without waiting, when processes starting together switch
    a new database at the same moment, so the switch is serialised with a file lock.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    if lock_path is None:
        cursor.execute("PRAGMA journal_mode=WAL")
        return
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cursor.execute("PRAGMA journal_mode=WAL")

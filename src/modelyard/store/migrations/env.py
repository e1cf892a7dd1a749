"""Alembic environment for modelyard's store.

Normally run by `modelyard.store.migrate.upgrade`, which hands over an open connection in
`config.attributes["connection"]`. For development (autogenerate a new revision) or to print the
SQL for a DBA, use `alembic_config(url)` from `modelyard.store.migrate` with alembic's `command`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from modelyard.store.engine import make_engine, normalize_url
from modelyard.store.models import Base

TARGET_METADATA = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=TARGET_METADATA,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    """Emit the migration SQL for the configured URL instead of running it."""
    url = normalize_url(context.config.get_main_option("sqlalchemy.url") or "")
    context.configure(
        url=url,
        target_metadata=TARGET_METADATA,
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run on the caller's connection if given, else on a fresh engine for the configured URL."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

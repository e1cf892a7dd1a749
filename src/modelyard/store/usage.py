"""The usage table and the inference (payload) tables: batch inserts, tables made on first use.

Payload tables have the columns of Databricks' AI Gateway inference tables:

    request_date DATE, databricks_request_id, client_request_id, request_time TIMESTAMP,
    status_code, sampling_fraction, execution_duration_ms, request (JSON text),
    response (JSON text; a streamed answer assembled), served_entity_id, logging_error_codes
    (JSON list), requester
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
)
from sqlalchemy.exc import DBAPIError

from modelyard.store.engine import SQLITE_BEGIN
from modelyard.store.models import UsageRow

USAGE_TABLE = UsageRow.__tablename__
_IDENTIFIER_MAX = 63  # PostgreSQL truncates longer names; keep ours whole and unique


def payload_table_name(catalog: str, schema: str, prefix: str) -> str:
    """`<catalog>__<schema>__<prefix>_payload`, lower-case letters, digits and `_` only."""
    raw = f"{catalog}__{schema}__{prefix}_payload".lower()
    name = re.sub(r"[^a-z0-9_]", "_", raw)
    if len(name) > _IDENTIFIER_MAX:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        name = f"{name[: _IDENTIFIER_MAX - 17]}_{digest}_payload"
    return name


def payload_table(name: str) -> Table:
    """The Core `Table` of one payload table, in a metadata of its own."""
    return Table(
        name,
        MetaData(),
        Column("request_date", Date, nullable=False),
        Column("databricks_request_id", String(128), nullable=False),
        Column("client_request_id", String(255)),
        Column("request_time", DateTime(timezone=True), nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("sampling_fraction", Float, nullable=False),
        Column("execution_duration_ms", BigInteger, nullable=False),
        Column("request", Text),
        Column("response", Text),
        Column("served_entity_id", String(255)),
        Column("logging_error_codes", JSON),
        Column("requester", String(255), nullable=False),
        Index(f"ix_{name[:50]}_request_id", "databricks_request_id"),
    )


class RecordWriter:
    """Writes batches of usage and payload rows, each batch in one transaction (sync)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()

    def write(self, usage: Sequence[dict[str, Any]], payloads: Mapping[str, list[dict]]) -> None:
        """Insert every row (executemany per table) in one transaction."""
        tables = {name: self.ensure_payload_table(name) for name in payloads}
        with self._engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with conn.begin():
                if usage:
                    conn.execute(insert(UsageRow.__table__), list(usage))
                for name, rows in payloads.items():
                    if rows:
                        conn.execute(insert(tables[name]), rows)

    def ensure_payload_table(self, name: str) -> Table:
        """The payload table `name`, created if it does not exist yet."""
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                table = payload_table(name)
                try:
                    table.metadata.create_all(self._engine, checkfirst=True)
                except DBAPIError:
                    # Another replica created it between our check and our CREATE.
                    if not inspect(self._engine).has_table(name):
                        raise
                self._tables[name] = table
            return table

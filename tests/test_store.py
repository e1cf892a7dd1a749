"""The store against SQLite (a temporary file) and PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from tests.conftest import pg_database

from modelyard.errors import AlreadyExists, NotFound
from modelyard.store import EndpointRecord, Store, StoreConflict, StoreNotFound, TokenRecord
from modelyard.store.engine import make_engine, normalize_url
from modelyard.store.migrate import alembic_config, current_revision, head_revision
from modelyard.store.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database; the SQLite file's parent directory does not exist yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'modelyard.db'}"
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store."""
    s = Store(db_url)
    s.migrate()
    yield s
    s.close()


def endpoint(name: str = "chat", **changes: object) -> EndpointRecord:
    rec = EndpointRecord(
        id=uuid.uuid4().hex,
        name=name,
        creator="admin",
        created_ms=1_729_527_763_000,
        updated_ms=1_729_527_763_000,
        config_version=1,
        task="llm/v1/chat",
        endpoint_type="EXTERNAL_MODEL",
        config={
            "served_entities": [
                {
                    "name": "gpt-4o",
                    "external_model": {
                        "provider": "openai",
                        "name": "gpt-4o",
                        "task": "llm/v1/chat",
                        "openai_config": {"openai_api_key": "{{secrets/llm/openai}}"},
                    },
                }
            ],
            "traffic_config": {
                "routes": [{"served_entity_name": "gpt-4o", "traffic_percentage": 100}]
            },
        },
        ai_gateway={"usage_tracking_config": {"enabled": True}},
        tags=[{"key": "team", "value": "ml"}],
        description="an endpoint",
        route_optimized=False,
    )
    return replace(rec, **changes)  # type: ignore[arg-type]


def token(owner: str = "admin", created_ms: int = 1_000, **changes: object) -> TokenRecord:
    rec = TokenRecord(
        token_id=uuid.uuid4().hex,
        token_hash=uuid.uuid4().hex + uuid.uuid4().hex,
        owner=owner,
        comment="for tests",
        created_ms=created_ms,
        expiry_ms=-1,
    )
    return replace(rec, **changes)  # type: ignore[arg-type]


def run_in_threads(n: int, fn: Callable[[int], None]) -> list[BaseException]:
    """Start `fn(i)` in `n` threads at the same instant; return what they raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        barrier.wait()
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


# -- migrations -------------------------------------------------------------------------------


def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    s = Store(db_url)
    try:
        s.migrate()
        s.insert_endpoint(endpoint("kept"))
        s.migrate()
        assert current_revision(s._engine) == head_revision() == "0004"
        assert [e.name for e in s.list_endpoints()] == ["kept"]
    finally:
        s.close()


def test_migrate_concurrently_from_threads(db_url: str) -> None:
    """Two stores of one process migrating at once (alembic's proxies are process-global)."""
    stores = [Store(db_url), Store(db_url)]
    try:
        errors = run_in_threads(2, lambda i: stores[i].migrate())
        assert errors == []
        assert current_revision(stores[0]._engine) == head_revision()
        stores[0].insert_endpoint(endpoint())
        assert stores[1].get_endpoint("chat") is not None
    finally:
        for s in stores:
            s.close()


# Imports first, then waits for a common instant, so the processes really do race.
MIGRATE_SCRIPT = """
import sys, time
from modelyard.store import Store
store = Store(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
store.migrate()
store.close()
"""


def test_migrate_from_processes_at_once(db_url: str) -> None:
    """Several replicas starting together: one migrates, the others wait and find it done."""
    start_at = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_SCRIPT, db_url, start_at],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    stderrs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(stderrs)
    s = Store(db_url)
    try:
        assert current_revision(s._engine) == head_revision()
    finally:
        s.close()


def test_migrated_schema_matches_models(store: Store, db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(store: Store, db_url: str) -> None:
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "base")
    assert current_revision(store._engine) is None
    store.migrate()
    store.insert_endpoint(endpoint())
    assert store.get_endpoint("chat") is not None


# -- endpoints --------------------------------------------------------------------------------


def test_endpoint_insert_get_list(store: Store) -> None:
    b, a, c = endpoint("b-chat"), endpoint("a-chat"), endpoint("c_chat")
    for rec in (b, a, c):
        store.insert_endpoint(rec)
    assert store.get_endpoint("a-chat") == a
    assert store.get_endpoint("missing") is None
    assert store.list_endpoints() == [a, b, c]


def test_endpoint_list_empty(store: Store) -> None:
    assert store.list_endpoints() == []


def test_endpoint_name_conflict(store: Store) -> None:
    first = endpoint("chat")
    store.insert_endpoint(first)
    with pytest.raises(StoreConflict, match="'chat' already exists") as info:
        store.insert_endpoint(endpoint("chat", creator="someone-else"))
    assert isinstance(info.value, AlreadyExists) and info.value.status == 409
    # The failed insert rolled back cleanly and the store is still usable.
    assert store.list_endpoints() == [first]
    store.insert_endpoint(endpoint("other"))
    assert len(store.list_endpoints()) == 2


def test_endpoint_update_whole_record(store: Store) -> None:
    rec = endpoint("chat")
    store.insert_endpoint(rec)
    new = replace(
        rec,
        name="renamed",
        updated_ms=rec.updated_ms + 5_000,
        config_version=2,
        endpoint_type="FOUNDATION_MODEL_API",
        config={"served_entities": [{"name": "smol", "foundation_model": {"name": "smollm2"}}]},
        ai_gateway=None,
        tags=[],
        description=None,
        route_optimized=True,
    )
    store.update_endpoint(new)
    assert store.get_endpoint("chat") is None
    assert store.get_endpoint("renamed") == new
    assert store.list_endpoints() == [new]


def test_endpoint_update_conflicts_and_missing(store: Store) -> None:
    a, b = endpoint("a"), endpoint("b")
    store.insert_endpoint(a)
    store.insert_endpoint(b)
    with pytest.raises(StoreConflict):
        store.update_endpoint(replace(b, name="a"))
    assert store.get_endpoint("b") == b
    with pytest.raises(StoreNotFound) as info:
        store.update_endpoint(endpoint("ghost"))
    assert isinstance(info.value, NotFound)
    assert store.get_endpoint("ghost") is None


def test_endpoint_delete(store: Store) -> None:
    store.insert_endpoint(endpoint("a"))
    store.insert_endpoint(endpoint("b"))
    assert store.delete_endpoint("a") is True
    assert store.delete_endpoint("a") is False
    assert store.get_endpoint("a") is None
    assert [e.name for e in store.list_endpoints()] == ["b"]
    # The name is free again.
    store.insert_endpoint(endpoint("a"))


def test_endpoint_json_round_trip(store: Store) -> None:
    config = {
        "served_entities": [
            {
                "name": "模型-ü",
                "external_model": {"provider": "custom", "extra": {"deep": {"deeper": [1, 2.5]}}},
                "workload": None,
                "flags": [True, False, None],
            }
        ],
        "zeta": "emoji 🦙 and RTL שלום",
        "alpha": {"big": 2**53, "neg": -7, "empty": {}, "list": []},
        "escapes": 'quote " backslash \\ newline \n tab \t nul-free',
    }
    ai_gateway = {"guardrails": {"input": {"invalid_keywords": ["Geheim", "秘密"]}}}
    tags = [{"key": "équipe", "value": "ML 🚀"}, {"key": "k", "value": ""}]
    rec = endpoint("unicode", config=config, ai_gateway=ai_gateway, tags=tags, description="ü 🦙")
    store.insert_endpoint(rec)
    got = store.get_endpoint("unicode")
    assert got == rec
    assert got is not None and list(got.config) == list(config)  # key order as given


def test_endpoint_without_ai_gateway_is_sql_null(store: Store) -> None:
    store.insert_endpoint(endpoint("plain", ai_gateway=None))
    got = store.get_endpoint("plain")
    assert got is not None and got.ai_gateway is None
    with store._engine.connect() as conn:
        query = text("SELECT ai_gateway IS NULL FROM endpoints WHERE name = 'plain'")
        assert conn.scalar(query)


def test_concurrent_writes(store: Store) -> None:
    """The server writes from `asyncio.to_thread` workers: no 'database is locked'."""

    def work(i: int) -> None:
        for j in range(10):
            store.insert_endpoint(endpoint(f"ep-{i}-{j}"))
            store.set_setting("last", f"{i}-{j}")
            store.insert_token(token(owner=f"user{i}"))

    assert run_in_threads(6, work) == []
    assert len(store.list_endpoints()) == 60
    assert len(store.all_tokens()) == 60
    assert store.get_setting("last") is not None


# -- tokens -----------------------------------------------------------------------------------


def test_tokens(store: Store) -> None:
    t3 = token("alice", created_ms=3_000, comment=None, expiry_ms=1_900_000_000_000)
    t1 = token("alice", created_ms=1_000)
    t2 = token("bob", created_ms=2_000)
    for rec in (t3, t1, t2):
        store.insert_token(rec)
    assert store.get_token_by_hash(t3.token_hash) == t3
    assert store.get_token_by_hash("0" * 64) is None
    assert store.list_tokens(owner="alice") == [t1, t3]
    assert store.list_tokens(owner="nobody") == []
    assert store.list_tokens() == [t1, t2, t3]
    assert store.all_tokens() == [t1, t2, t3]
    assert store.delete_token(t1.token_id) is True
    assert store.delete_token(t1.token_id) is False
    assert store.get_token_by_hash(t1.token_hash) is None
    assert store.all_tokens() == [t2, t3]


def test_token_hash_conflict(store: Store) -> None:
    first = token()
    store.insert_token(first)
    with pytest.raises(StoreConflict):
        store.insert_token(token(token_hash=first.token_hash))
    with pytest.raises(StoreConflict):
        store.insert_token(token(token_id=first.token_id))
    assert store.all_tokens() == [first]


# -- settings and persistence -----------------------------------------------------------------


def test_settings_upsert(store: Store) -> None:
    assert store.get_setting("workspace_id") is None
    store.set_setting("workspace_id", "1234567890")
    store.set_setting("admin_token_created", "true")
    store.set_setting("workspace_id", "42")
    assert store.get_setting("workspace_id") == "42"
    assert store.get_setting("admin_token_created") == "true"
    store.set_setting("empty", "")
    assert store.get_setting("empty") == ""


def test_data_persists_across_instances(db_url: str) -> None:
    first = Store(db_url)
    first.migrate()
    ep, tok = endpoint("persisted"), token()
    first.insert_endpoint(ep)
    first.insert_token(tok)
    first.set_setting("workspace_id", "7")
    first.close()

    second = Store(db_url)
    try:
        second.migrate()
        assert second.get_endpoint("persisted") == ep
        assert second.get_token_by_hash(tok.token_hash) == tok
        assert second.get_setting("workspace_id") == "7"
    finally:
        second.close()


# -- backend specifics ------------------------------------------------------------------------


def test_sqlite_file_setup(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "modelyard.db"
    s = Store(f"sqlite:///{path}")
    try:
        s.migrate()
        assert path.exists()
        with s._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        s.close()


def test_sqlite_in_memory() -> None:
    s = Store("sqlite://")
    try:
        s.migrate()
        s.insert_endpoint(endpoint())
        assert s.get_endpoint("chat") is not None
    finally:
        s.close()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u:p%40ss@h:5433/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_normalize_url(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver

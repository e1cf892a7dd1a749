"""Secrets: the key and the box, the vault, the service on both stores, and the Databricks API
through databricks-sdk and plain HTTP against a real server. No value may ever come back out."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alembic import command
from cryptography.fernet import Fernet
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    InvalidParameterValue,
    PermissionDenied,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)

import test_store
from conftest import Server, start_server
from modelyard.errors import AlreadyExists, BadRequest, NotFound
from modelyard.secrets import (
    SecretBox,
    SecretKeyError,
    SecretService,
    SecretVault,
    load_secret_box,
    parse_reference,
)
from modelyard.settings import Settings
from modelyard.store import SecretRecord, SecretScopeRecord, Store, StoreConflict, StoreNotFound
from modelyard.store.migrate import alembic_config, current_revision, head_revision

VALUE = "sk-live-5ecret-VALUE-that-must-never-leak-7f3a9c"
BYTES_VALUE = "bytes-5ecret-VALUE-4e1b0d"
PASSPHRASE = "correct horse battery staple"
WRONG_PASSPHRASE = "wrong-passphrase-0x51"

# test_store's fixtures: SQLite and a fresh PostgreSQL database per test.
db_url = test_store.db_url
store = test_store.store
run_in_threads = test_store.run_in_threads


@pytest.fixture(autouse=True)
def _no_key_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELYARD_SECRET_KEY", raising=False)


def sdk(server: Server) -> WorkspaceClient:
    """A client that uses only what it is given, not a ~/.databrickscfg profile."""
    return WorkspaceClient(
        host=server.url, token=server.token, config_file="/nonexistent/databrickscfg"
    )


def box_in(data_dir: Path, secret_key: str | None = None) -> SecretBox:
    return load_secret_box(Settings(data_dir=data_dir, secret_key=secret_key))


def scope(name: str = "llm", created_ms: int = 1_000) -> SecretScopeRecord:
    return SecretScopeRecord(
        name=name, backend_type="DATABRICKS", creator="admin", created_ms=created_ms
    )


def secret(
    scope_name: str = "llm", key: str = "openai", token: str = "t", ms: int = 1
) -> SecretRecord:
    return SecretRecord(scope=scope_name, key=key, value_encrypted=token, updated_ms=ms)


# -- the key and the box ----------------------------------------------------------------------


def test_key_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = box_in(data_dir)
    key_file = data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = first.encrypt(VALUE)
    assert VALUE not in token
    assert box_in(data_dir).decrypt(token) == VALUE  # the second start reads the same key
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []  # no temp file


KEY_SCRIPT = """
import sys, time
from pathlib import Path
from modelyard.secrets import load_secret_box
from modelyard.settings import Settings
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
box = load_secret_box(Settings(data_dir=Path(sys.argv[1])))
print(box.encrypt("probe"))
"""


def test_servers_starting_together_agree_on_the_key(tmp_path: Path) -> None:
    start_at = str(time.time() + 2)
    env = {k: v for k, v in os.environ.items() if k != "MODELYARD_SECRET_KEY"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", KEY_SCRIPT, str(tmp_path), start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    box = box_in(tmp_path)
    assert [box.decrypt(out.strip()) for out, _ in outputs] == ["probe"] * 4


def test_env_key_fernet_or_passphrase(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    assert box_in(tmp_path, key).decrypt(Fernet(key).encrypt(b"x").decode()) == "x"
    sealed = box_in(tmp_path, PASSPHRASE).encrypt(VALUE)
    assert box_in(tmp_path / "elsewhere", PASSPHRASE).decrypt(sealed) == VALUE
    assert not (tmp_path / "secret.key").exists()  # an env key never writes the file


def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    sealed = box_in(tmp_path, PASSPHRASE).encrypt(VALUE)
    with pytest.raises(SecretKeyError) as info:
        box_in(tmp_path, "another passphrase").decrypt(sealed)
    message = str(info.value)
    assert f"{tmp_path / 'secret.key'} or MODELYARD_SECRET_KEY differs" in message
    assert VALUE not in message and sealed not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- the vault --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{secrets/llm/openai}}", ("llm", "openai")),
        ("{{ secrets/my.scope@corp/key_1-a.b }}", ("my.scope@corp", "key_1-a.b")),
        ("  {{secrets/s/k}}\n", ("s", "k")),
        ("{{secrets/s}}", None),
        ("{{secrets/s/k/extra}}", None),
        ("{{secrets/s/k@x}}", None),  # '@' is allowed in scope names only
        ("prefix {{secrets/s/k}}", None),
        ("sk-plaintext", None),
        ("", None),
    ],
)
def test_parse_reference(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_reference(text) == expected


def test_vault() -> None:
    vault = SecretVault()
    vault.set("llm", "openai", VALUE)
    vault.set("llm", "anthropic", "a-key")
    vault.set("other", "k", "")
    assert vault.get("llm", "openai") == VALUE
    assert vault.get("llm", "missing") is None
    assert vault.values() == frozenset({VALUE, "a-key"})  # "" is nothing to scrub
    assert vault.resolve("{{ secrets/llm/openai }}") == VALUE
    assert vault.resolve("{{secrets/llm/missing}}") is None
    assert vault.resolve("sk-plaintext") == "sk-plaintext"
    vault.remove("llm", "anthropic")
    vault.remove("llm", "anthropic")
    assert vault.values() == frozenset({VALUE})
    vault.remove_scope("llm")
    assert vault.get("llm", "openai") is None and vault.get("other", "k") == ""


# -- the store, on SQLite and PostgreSQL -------------------------------------------------------


def test_upgrade_from_0001_keeps_data(db_url: str) -> None:
    command.upgrade(alembic_config(db_url), "0001")
    s = Store(db_url)
    try:
        s.set_setting("workspace_id", "7")
        s.migrate()
        assert current_revision(s._engine) == head_revision()
        assert s.get_setting("workspace_id") == "7"
        s.insert_scope(scope())
        s.upsert_secret(secret())
        command.downgrade(alembic_config(db_url), "0001")
        assert s.get_setting("workspace_id") == "7"
    finally:
        s.close()


def test_store_scopes(store: Store) -> None:
    b, a = scope("b-scope", 2), scope("a@corp.com", 1)
    store.insert_scope(b)
    store.insert_scope(a)
    with pytest.raises(StoreConflict, match="'b-scope' already exists"):
        store.insert_scope(scope("b-scope"))
    assert store.list_scopes() == [a, b]
    assert store.delete_scope("b-scope") is True
    assert store.delete_scope("b-scope") is False
    assert store.list_scopes() == [a]


def test_store_secrets(store: Store) -> None:
    store.insert_scope(scope("s1"))
    store.insert_scope(scope("s2"))
    store.upsert_secret(secret("s1", "b", "t1", 1))
    store.upsert_secret(secret("s1", "a", "t2", 2))
    store.upsert_secret(secret("s2", "a", "t3", 3))
    store.upsert_secret(secret("s1", "b", "t4", 4))  # overwrite
    assert store.list_secrets("s1") == [secret("s1", "a", "t2", 2), secret("s1", "b", "t4", 4)]
    assert store.list_secrets("s2") == [secret("s2", "a", "t3", 3)]
    assert [(r.scope, r.key) for r in store.all_secrets()] == [
        ("s1", "a"),
        ("s1", "b"),
        ("s2", "a"),
    ]
    assert store.delete_secret("s1", "a") is True
    assert store.delete_secret("s1", "a") is False
    assert store.delete_secret("nope", "a") is False
    assert store.list_secrets("s1") == [secret("s1", "b", "t4", 4)]
    # Deleting a scope takes its secrets with it; the name is free again and starts empty.
    assert store.delete_scope("s1") is True
    assert [(r.scope, r.key) for r in store.all_secrets()] == [("s2", "a")]
    store.insert_scope(scope("s1"))
    assert store.list_secrets("s1") == []


def test_store_secret_needs_its_scope(store: Store) -> None:
    with pytest.raises(StoreNotFound, match="Scope 'ghost' does not exist") as info:
        store.upsert_secret(secret("ghost"))
    assert isinstance(info.value, NotFound) and info.value.status == 404
    with pytest.raises(StoreNotFound):
        store.list_secrets("ghost")
    assert store.all_secrets() == []
    store.insert_scope(scope("ghost"))  # the failed insert left the store usable
    store.upsert_secret(secret("ghost"))
    assert len(store.all_secrets()) == 1


def test_store_upsert_is_atomic(store: Store) -> None:
    """Writers racing on one key: no conflict error, one row, one of their values."""
    store.insert_scope(scope("race"))

    def work(i: int) -> None:
        for j in range(10):
            store.upsert_secret(secret("race", "k", f"t{i}-{j}", j))
            store.upsert_secret(secret("race", f"k{i}-{j}", "t", j))

    assert run_in_threads(6, work) == []
    rows = store.list_secrets("race")
    assert len(rows) == 61
    assert rows[0].key == "k" and rows[0].value_encrypted.endswith("-9")


# -- the service ------------------------------------------------------------------------------


@pytest.fixture
def service(store: Store, tmp_path: Path) -> SecretService:
    return SecretService(store, box_in(tmp_path / "data"), SecretVault())


async def test_service_round_trip(service: SecretService, store: Store, tmp_path: Path) -> None:
    record = await service.create_scope("llm", "alice")
    assert (record.name, record.backend_type, record.creator) == ("llm", "DATABRICKS", "alice")
    with pytest.raises(AlreadyExists, match="Scope 'llm' already exists"):
        await service.create_scope("llm", "bob")
    await service.put("llm", "openai", "old")
    await service.put("llm", "openai", VALUE)
    await service.put("llm", "empty", "")
    assert [s.name for s in await service.list_scopes()] == ["llm"]
    infos = await service.list("llm")
    assert [i.key for i in infos] == ["empty", "openai"]
    assert all(i.last_updated_timestamp > 1_700_000_000_000 for i in infos)
    assert service.vault.get("llm", "openai") == VALUE
    stored = {r.key: r.value_encrypted for r in store.all_secrets()}
    assert VALUE not in stored["openai"] and stored["openai"] != stored["empty"]

    # A new process: the vault is rebuilt from the store with the same key file.
    fresh = SecretService(store, box_in(tmp_path / "data"), SecretVault())
    await fresh.load()
    assert fresh.vault.get("llm", "openai") == VALUE and fresh.vault.get("llm", "empty") == ""

    await service.delete("llm", "openai")
    assert service.vault.get("llm", "openai") is None
    with pytest.raises(NotFound, match="Secret 'openai' does not exist in scope 'llm'"):
        await service.delete("llm", "openai")
    await service.delete_scope("llm")
    assert service.vault.values() == frozenset() and store.all_secrets() == []


async def test_service_missing_scope(service: SecretService) -> None:
    for call in (
        service.put("ghost", "k", "v"),
        service.delete("ghost", "k"),
        service.list("ghost"),
        service.delete_scope("ghost"),
    ):
        with pytest.raises(NotFound, match="Scope 'ghost' does not exist") as info:
            await call
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert service.vault.get("ghost", "k") is None


@pytest.mark.parametrize(
    ("scope_name", "key", "size", "message"),
    [
        ("bad scope", "k", 1, "Invalid secret scope name 'bad scope'"),
        ("x" * 129, "k", 1, "1 to 128 characters long; this one has 129"),
        ("", "k", 1, "1 to 128 characters long; this one has 0"),
        ("ok", "bad@key", 1, "Invalid secret key name 'bad@key'"),
        ("ok", "k" * 129, 1, "1 to 128 characters long"),
        ("ok", "k", 128 * 1024 + 1, "is 131073 bytes; the limit is 131072 bytes"),
    ],
)
async def test_service_validation(
    service: SecretService, scope_name: str, key: str, size: int, message: str
) -> None:
    await service.create_scope("ok", "admin")
    value = "v" * size
    with pytest.raises(BadRequest, match=message) as info:
        if scope_name != "ok":
            await service.create_scope(scope_name, "admin")
        else:
            await service.put(scope_name, key, value)
    assert info.value.status == 400 and "vvvv" not in info.value.message
    await service.put("ok", "k" * 128, "v" * 128 * 1024)  # the limits themselves are fine


async def test_service_load_with_wrong_key(
    service: SecretService, store: Store, tmp_path: Path
) -> None:
    await service.create_scope("llm", "admin")
    await service.put("llm", "openai", VALUE)
    other = SecretService(store, box_in(tmp_path / "data", PASSPHRASE), SecretVault())
    with pytest.raises(SecretKeyError, match="or MODELYARD_SECRET_KEY differs") as info:
        await other.load()
    assert VALUE not in str(info.value)


# -- the API, through a real server -----------------------------------------------------------


class Recorder:
    """Every response body the test received, to prove no value ever came back."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def __call__(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.bodies.append(response.text)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Debug logging: the access log and everything else are on, and must still not leak.
    srv = start_server(
        tmp_path_factory.mktemp("secrets"), "--default-model", "", "--log-level", "debug"
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def http(api_server: Server) -> Iterator[tuple[requests.Session, Recorder]]:
    session = requests.Session()
    session.headers.update(api_server.headers)
    recorder = Recorder()
    session.hooks["response"].append(recorder)
    yield session, recorder
    session.close()


@pytest.fixture
def workspace(api_server: Server) -> WorkspaceClient:
    return sdk(api_server)


def test_sdk_secrets(workspace: WorkspaceClient, api_server: Server) -> None:
    w = workspace
    w.secrets.create_scope("sdk-scope", initial_manage_principal="users")
    with pytest.raises(ResourceAlreadyExists, match="'sdk-scope' already exists"):
        w.secrets.create_scope("sdk-scope")
    scopes = {s.name: s for s in w.secrets.list_scopes()}
    assert scopes["sdk-scope"].backend_type is not None
    assert scopes["sdk-scope"].backend_type.value == "DATABRICKS"

    before = int(time.time() * 1000)
    w.secrets.put_secret("sdk-scope", "openai", string_value=VALUE)
    w.secrets.put_secret(
        "sdk-scope", "raw", bytes_value=base64.b64encode(BYTES_VALUE.encode()).decode()
    )
    w.secrets.put_secret("sdk-scope", "openai", string_value=VALUE + "-rotated")
    listed = list(w.secrets.list_secrets("sdk-scope"))
    assert sorted(s.key or "" for s in listed) == ["openai", "raw"]
    assert all((s.last_updated_timestamp or 0) >= before for s in listed)
    seen = repr([s.as_dict() for s in listed]) + repr([s.as_dict() for s in scopes.values()])
    assert VALUE not in seen and BYTES_VALUE not in seen

    w.secrets.delete_secret("sdk-scope", "raw")
    assert [s.key for s in w.secrets.list_secrets("sdk-scope")] == ["openai"]
    with pytest.raises(ResourceDoesNotExist, match="Secret 'raw' does not exist"):
        w.secrets.delete_secret("sdk-scope", "raw")
    with pytest.raises(InvalidParameterValue, match="Invalid secret key name"):
        w.secrets.put_secret("sdk-scope", "bad key", string_value="x")

    w.secrets.delete_scope("sdk-scope")
    assert "sdk-scope" not in {s.name for s in w.secrets.list_scopes()}
    with pytest.raises(ResourceDoesNotExist, match="Scope 'sdk-scope' does not exist"):
        list(w.secrets.list_secrets("sdk-scope"))
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.put_secret("sdk-scope", "k", string_value="v")
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.delete_scope("sdk-scope")


def envelope(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code, body
    return str(body["message"])


def test_http_bad_input(api_server: Server, http: tuple[requests.Session, Recorder]) -> None:
    session, recorder = http
    url = f"{api_server.url}/api/2.0/secrets"
    assert session.post(f"{url}/scopes/create", json={"scope": "http"}).json() == {}
    bad = session.post(f"{url}/scopes/create", json={"scope": "no spaces!"})
    assert "Invalid secret scope name" in envelope(bad, 400, "INVALID_PARAMETER_VALUE")
    azure = session.post(
        f"{url}/scopes/create", json={"scope": "kv", "scope_backend_type": "AZURE_KEYVAULT"}
    )
    assert "only DATABRICKS" in envelope(azure, 400, "INVALID_PARAMETER_VALUE")
    missing_key = session.post(f"{url}/put", json={"scope": "http", "string_value": VALUE})
    assert "key: Field required" in envelope(missing_key, 400, "INVALID_PARAMETER_VALUE")
    both = session.post(
        f"{url}/put",
        json={"scope": "http", "key": "k", "string_value": VALUE, "bytes_value": "eA=="},
    )
    assert "exactly one of string_value or bytes_value" in envelope(
        both, 400, "INVALID_PARAMETER_VALUE"
    )
    for wrong in ([VALUE], {VALUE: VALUE}, 12345):  # a wrong type must not be echoed either
        r = session.post(f"{url}/put", json={"scope": "http", "key": "k", "string_value": wrong})
        assert "string_value" in envelope(r, 400, "INVALID_PARAMETER_VALUE")
    not_b64 = session.post(f"{url}/put", json={"scope": "http", "key": "k", "bytes_value": VALUE})
    assert "bytes_value must be base64" in envelope(not_b64, 400, "INVALID_PARAMETER_VALUE")
    malformed = session.post(
        f"{url}/put", data=f'{{"scope": "http", "key": "k", "string_value": {VALUE}}}'
    )
    assert "Malformed JSON" in envelope(malformed, 400, "BAD_REQUEST")
    huge = session.post(
        f"{url}/put", json={"scope": "http", "key": "k", "string_value": VALUE * 3000}
    )
    assert "the limit is 131072 bytes" in envelope(huge, 400, "INVALID_PARAMETER_VALUE")
    no_scope = session.get(f"{url}/list")
    assert "'scope'" in envelope(no_scope, 400, "INVALID_PARAMETER_VALUE")
    unknown = session.post(f"{url}/put", json={"scope": "ghost", "key": "k", "string_value": "v"})
    assert "Scope 'ghost' does not exist" in envelope(unknown, 404, "RESOURCE_DOES_NOT_EXIST")

    assert (
        session.post(f"{url}/put", json={"scope": "http", "key": "k", "string_value": VALUE}).json()
        == {}
    )
    get = session.get(f"{url}/get", params={"scope": "http", "key": "k"})
    assert "cannot be read back" in envelope(get, 403, "PERMISSION_DENIED")
    assert session.get(f"{url}/list", params={"scope": "http"}).json()["secrets"][0]["key"] == "k"
    assert len(recorder.bodies) > 15 and all(VALUE not in body for body in recorder.bodies)


def test_http_needs_a_token(api_server: Server) -> None:
    url = f"{api_server.url}/api/2.0/secrets"
    for method, path in [("GET", "scopes/list"), ("POST", "put"), ("GET", "get"), ("GET", "list")]:
        r = requests.request(method, f"{url}/{path}", json={}, timeout=10)
        envelope(r, 401, "UNAUTHENTICATED")


def test_only_admins_and_the_creator_change_a_scope(workspace: WorkspaceClient, api_server: Server):
    w = workspace
    user = w.users.create(user_name=f"scope-user-{os.urandom(3).hex()}@example.com")
    token = w.token_management.create_obo_token(application_id=user.id).token_value
    as_user = WorkspaceClient(host=api_server.url, token=token)
    w.secrets.create_scope("admins-scope")
    w.secrets.put_secret("admins-scope", "openai", string_value=VALUE)
    with pytest.raises(PermissionDenied, match="creator of scope 'admins-scope'"):
        as_user.secrets.put_secret("admins-scope", "openai", string_value="sk-mine")
    with pytest.raises(PermissionDenied):
        as_user.secrets.delete_scope("admins-scope")
    # A user's own scope is theirs to change, and listing keys is open to every caller.
    as_user.secrets.create_scope("users-scope")
    as_user.secrets.put_secret("users-scope", "k", string_value="v")
    as_user.secrets.delete_secret("users-scope", "k")
    assert [s.key for s in as_user.secrets.list_secrets("admins-scope")] == ["openai"]


def test_values_never_in_the_server_log(
    api_server: Server, workspace: WorkspaceClient, http: tuple[requests.Session, Recorder]
) -> None:
    """After everything above (and a put of its own), the debug log holds no value."""
    workspace.secrets.create_scope("log-check")
    workspace.secrets.put_secret("log-check", "k", string_value=VALUE)
    log = api_server.log()
    assert "/api/2.0/secrets/put" in log  # the debug access log did see the requests
    assert VALUE not in log and BYTES_VALUE not in log
    assert base64.b64encode(BYTES_VALUE.encode()).decode() not in log


def test_values_encrypted_on_disk_and_kept_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    server = start_server(data_dir, "--default-model", "")
    try:
        w = sdk(server)
        w.secrets.create_scope("disk")
        w.secrets.put_secret("disk", "openai", string_value=VALUE)
    finally:
        server.stop()
    for path in data_dir.glob("modelyard.db*"):  # the database, its WAL and shared memory
        assert VALUE.encode() not in path.read_bytes(), path

    server = start_server(data_dir, "--default-model", "")
    try:
        w = sdk(server)
        assert [s.key for s in w.secrets.list_secrets("disk")] == ["openai"]
    finally:
        server.stop()
    # The API cannot give the value back; the service the server runs can still decrypt it.
    store_ = Store(f"sqlite:///{data_dir / 'modelyard.db'}")
    try:
        [record] = store_.all_secrets()
        assert box_in(data_dir).decrypt(record.value_encrypted) == VALUE
    finally:
        store_.close()


def test_passphrase_key_and_wrong_key_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    env = {"MODELYARD_SECRET_KEY": PASSPHRASE}
    server = start_server(data_dir, "--default-model", "", extra_env=env)
    try:
        w = sdk(server)
        w.secrets.create_scope("p")
        w.secrets.put_secret("p", "k", string_value=VALUE)
    finally:
        server.stop()
    assert not (data_dir / "secret.key").exists()

    wrong = start_server(
        data_dir,
        "--default-model",
        "",
        extra_env={"MODELYARD_SECRET_KEY": WRONG_PASSPHRASE},
        wait=False,
    )
    assert wrong.process.wait(60) != 0
    log = wrong.log()
    assert "or MODELYARD_SECRET_KEY differs from the one the value was written with" in log
    assert VALUE not in log and PASSPHRASE not in log and WRONG_PASSPHRASE not in log

    server = start_server(data_dir, "--default-model", "", extra_env=env)
    try:
        w = sdk(server)
        assert [s.key for s in w.secrets.list_secrets("p")] == ["k"]
    finally:
        server.stop()

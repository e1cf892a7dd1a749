"""Fixtures that run real `modelyard serve` processes on loopback, sharing one model cache."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests
from openai import OpenAI
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
# Pulled once, then reused by every server the suite starts (and by later runs).
MODELS_DIR = Path(os.environ.get("MODELYARD_TEST_MODELS_DIR", REPO / ".cache" / "models"))
DEFAULT_ENDPOINT = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The server to create throw-away databases on; its user needs CREATEDB.
PG_ADMIN_URL = os.environ.get(
    "MODELYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_START_HINT = (
    "PostgreSQL is not reachable at {url} ({error}). Start the local server with\n"
    "    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    "or point MODELYARD_TEST_PG_URL at one whose user may CREATE DATABASE."
)


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        error = str(exc).strip()
    # Fail, not skip: a silently skipped backend is how PostgreSQL-only bugs ship.
    pytest.fail(PG_START_HINT.format(url=PG_ADMIN_URL, error=error), pytrace=False)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin() as admin:
            # FORCE terminates connections a failed test may have leaked.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seconds_until(check: Callable[[], bool], limit: float = 5.0) -> float:
    """How long until `check()` holds, polled every 20 ms (a change reaching another replica)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit, "the change never reached the other replica"
        time.sleep(0.02)
    return time.monotonic() - started


@dataclass
class Server:
    """A running `modelyard serve` child process."""

    url: str
    token: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_endpoint_ready(self, name: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            r = requests.get(
                f"{self.url}/api/2.0/serving-endpoints/{name}", headers=self.headers, timeout=10
            )
            body = r.json()
            if r.status_code == 200 and body["state"]["ready"] == "READY":
                return body
            time.sleep(0.25)
        raise AssertionError(f"endpoint {name} not ready in {timeout}s: {body}\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return self.process.returncode


def start_server(
    data_dir: Path,
    *args: str,
    token: str = "dapi-test-admin-token",
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
) -> Server:
    """Start `modelyard serve` on a free port and wait until it answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MODELYARD_ADMIN_TOKEN": token,
        "MODELYARD_MODELS_DIR": str(MODELS_DIR),
        "MODELYARD_DATA_DIR": str(data_dir),
        **(extra_env or {}),
    }
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    server = Server(f"http://127.0.0.1:{port}", token, data_dir, process, log_path, env)
    if wait:
        _wait_listening(server)
    return server


def _wait_listening(server: Server, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            requests.get(f"{server.url}/.well-known/databricks-config", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"server did not start in {timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server with the default endpoint ready."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    try:
        srv.wait_endpoint_ready(DEFAULT_ENDPOINT)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def new_endpoint_name(server: Server) -> Iterator[str]:
    """A name no endpoint has; whatever the test creates under it is deleted afterwards."""
    name = f"t-{os.urandom(6).hex()}"
    yield name
    delete_endpoint(server, name)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The default model's GGUF file in the shared cache, pulled on first use."""
    from modelyard.engine.model_store import ModelStore

    return ModelStore(MODELS_DIR).ensure(DEFAULT_ENDPOINT).path


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with no local model: for external providers, which need no engine."""
    srv = start_server(tmp_path_factory.mktemp("gateway"), "--default-model", "")
    try:
        yield srv
    finally:
        srv.stop()


def create_endpoint(
    server: Server,
    name: str,
    entities: list[dict],
    routes: list[dict] | None = None,
    **extra: object,
) -> dict:
    """Create an endpoint through the REST API and return what the server answered."""
    config: dict = {"served_entities": entities}
    if routes is not None:
        config["traffic_config"] = {"routes": routes}
    body = {"name": name, "config": config, **extra}
    r = requests.post(
        f"{server.url}/api/2.0/serving-endpoints", json=body, headers=server.headers, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()


def delete_endpoint(server: Server, name: str) -> None:
    """Delete an endpoint through the REST API, whether or not it exists."""
    requests.delete(
        f"{server.url}/api/2.0/serving-endpoints/{name}", headers=server.headers, timeout=30
    )


@pytest.fixture
def endpoint_name(gateway: Server) -> Iterator[str]:
    """A fresh endpoint name on `gateway`, deleted after the test."""
    name = f"e-{os.urandom(6).hex()}"
    yield name
    delete_endpoint(gateway, name)


@pytest.fixture
def openai_client(gateway: Server) -> Iterator[OpenAI]:
    """The openai client on `gateway`'s serving endpoints, without retries."""
    url = f"{gateway.url}/serving-endpoints"
    with OpenAI(base_url=url, api_key=gateway.token, max_retries=0) as client:
        yield client  # closed after the test: no sockets left for the GC to find

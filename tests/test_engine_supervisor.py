"""The engine supervisor against real worker processes running the real default model."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelyard.engine import supervisor as supervisor_module
from modelyard.engine.supervisor import (
    DeploymentState,
    EngineSpec,
    EngineSupervisor,
    EngineWorker,
)

WORKER_MODULE = "modelyard.engine.worker"


@pytest.fixture(scope="session")
def model_path(default_model_path: Path) -> Path:
    return default_model_path


@asynccontextmanager
async def supervised(tmp_path: Path, **kwargs: Any) -> AsyncIterator[EngineSupervisor]:
    supervisor = EngineSupervisor(log_dir=tmp_path / "logs", **kwargs)
    try:
        yield supervisor
    finally:
        await supervisor.close()


async def chat(
    worker: EngineWorker, *, secret: str | None = None, max_tokens: int = 8, **extra: Any
) -> tuple[int, dict[str, Any]]:
    """POST one chat completion straight at the worker; (status, body)."""
    token = worker.secret if secret is None else secret
    body = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": max_tokens}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{worker.base_url}/v1/chat/completions",
            json=body | extra,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        ) as response,
    ):
        return response.status, await response.json()


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def worker_children(parent: int) -> list[tuple[int, str]]:
    """(pid, state) of every worker process whose parent is `parent`, zombies included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        stat = proc_stat(int(entry.name))
        if stat and stat[1] == parent and (WORKER_MODULE.encode() in cmdline or stat[0] == "Z"):
            found.append((int(entry.name), stat[0]))
    return found


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the listening TCP sockets on `port` (IPv4 and IPv6)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                addresses.append(address)
    return addresses


async def wait_for(predicate: Callable[[], object], within: float) -> bool:
    """Poll `predicate` until it is true or `within` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_ready_serves_with_secret_only_on_loopback(tmp_path: Path, model_path: Path) -> None:
    async with supervised(tmp_path) as supervisor:
        seen: list[DeploymentState] = []
        worker = supervisor.ensure(EngineSpec("smol", model_path, parallel=2))
        worker.add_listener(lambda w: seen.append(w.state))
        assert supervisor.ensure(EngineSpec("smol", model_path)) is worker
        assert supervisor.get("smol") is worker

        assert await worker.wait_ready(60), worker.message
        assert worker.state is DeploymentState.READY and seen[-1] is DeploymentState.READY
        assert worker.n_ctx_per_slot == 2048
        assert worker.base_url is not None and worker.base_url.startswith("http://127.0.0.1:")

        status, body = await chat(worker)
        assert status == 200 and body["choices"][0]["message"]["content"]
        assert (await chat(worker, secret=""))[0] == 401
        assert (await chat(worker, secret="not-the-secret"))[0] == 401

        port = int(worker.base_url.rsplit(":", 1)[1])
        assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, nothing else


async def test_killed_worker_is_restarted(tmp_path: Path, model_path: Path) -> None:
    async with supervised(tmp_path) as supervisor:
        worker = supervisor.ensure(EngineSpec("smol", model_path, parallel=2))
        assert await worker.wait_ready(60), worker.message
        old_pid = worker.pid
        assert old_pid is not None

        os.kill(old_pid, signal.SIGKILL)
        assert await wait_for(lambda: worker.state is not DeploymentState.READY, 5)
        assert "code -9" in worker.message
        assert await worker.wait_ready(60), worker.message
        assert worker.pid not in (None, old_pid)
        assert worker.restarts == 1
        assert (await chat(worker))[0] == 200
        assert proc_stat(old_pid) is None  # reaped, not a zombie


async def test_hung_worker_is_killed_and_restarted(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "HEALTH_INTERVAL", 0.2)
    monkeypatch.setattr(supervisor_module, "HEALTH_TIMEOUT", 0.3)
    async with supervised(tmp_path) as supervisor:
        worker = supervisor.ensure(EngineSpec("smol", model_path, parallel=2))
        assert await worker.wait_ready(60), worker.message
        old_pid = worker.pid
        assert old_pid is not None

        os.kill(old_pid, signal.SIGSTOP)  # alive but answering nothing: a hang
        assert await wait_for(lambda: worker.state is not DeploymentState.READY, 10)
        assert "/health" in worker.message
        assert await worker.wait_ready(60), worker.message
        assert worker.pid != old_pid and worker.restarts == 1


async def test_not_gguf_fails_with_reason_and_no_zombie(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"<html>not a model</html>" * 100)
    async with supervised(tmp_path) as supervisor:
        worker = supervisor.ensure(EngineSpec("junk", junk))
        assert await wait_for(lambda: worker.state is DeploymentState.FAILED, 30)
        assert "not a valid GGUF" in worker.message and str(junk) in worker.message
        assert worker.base_url is None
        assert not await worker.wait_ready(0.1)
        assert await wait_for(lambda: "Z" not in dict(worker_children(os.getpid())).values(), 5)
    assert worker_children(os.getpid()) == []
    assert "worker starting" in (tmp_path / "logs" / "engine-junk.log").read_text()


async def test_prepare_hook_pulls_then_loads(tmp_path: Path, model_path: Path) -> None:
    pulled: list[str] = []

    async def prepare(name: str) -> Path:
        pulled.append(name)
        return model_path

    async with supervised(tmp_path, prepare=prepare) as supervisor:
        worker = supervisor.ensure("smollm2-135m-instruct")
        assert worker.state is DeploymentState.CREATING
        assert await worker.wait_ready(60), worker.message
        assert pulled == ["smollm2-135m-instruct"] and worker.spec.model_path == model_path


async def test_prepare_failure_is_failed_with_its_message(tmp_path: Path) -> None:
    async def prepare(name: str) -> Path:
        raise RuntimeError(f"checksum mismatch for {name}")

    async with supervised(tmp_path, prepare=prepare) as supervisor:
        worker = supervisor.ensure("broken")
        assert await wait_for(lambda: worker.state is DeploymentState.FAILED, 5)
        assert worker.message == "checksum mismatch for broken"


async def test_close_leaves_no_worker(tmp_path: Path, model_path: Path) -> None:
    async with supervised(tmp_path) as supervisor:
        workers = [
            supervisor.ensure(EngineSpec(name, model_path, parallel=1)) for name in ("a", "b")
        ]
        for worker in workers:
            assert await worker.wait_ready(60), worker.message
        pids = [worker.pid for worker in workers]
    assert all(pid is not None and proc_stat(pid) is None for pid in pids)
    assert worker_children(os.getpid()) == []
    assert all(w.state is DeploymentState.FAILED and w.base_url is None for w in workers)


async def test_stop_is_bounded_with_a_request_in_flight(tmp_path: Path, model_path: Path) -> None:
    # llama.cpp's destructor waits for a non-streamed request's client; the worker must not.
    async with supervised(tmp_path) as supervisor:
        worker = supervisor.ensure(EngineSpec("smol", model_path, parallel=1))
        assert await worker.wait_ready(60), worker.message
        pid = worker.pid
        assert pid is not None
        long_chat = asyncio.create_task(chat(worker, max_tokens=4000, ignore_eos=True))
        await asyncio.sleep(1)

        started = time.monotonic()
        await supervisor.stop("smol")
        assert time.monotonic() - started < 8
        assert proc_stat(pid) is None and supervisor.get("smol") is None
        assert worker.state is DeploymentState.FAILED and worker.message == "Stopped"
        with pytest.raises(aiohttp.ClientError):
            await long_chat


PARENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
from modelyard.engine.supervisor import EngineSpec, EngineSupervisor

async def main():
    supervisor = EngineSupervisor(log_dir=Path(sys.argv[2]))
    worker = supervisor.ensure(EngineSpec("smol", Path(sys.argv[1]), parallel=1))
    assert await worker.wait_ready(60), worker.message
    print(worker.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_killed_parent_leaves_no_orphan(tmp_path: Path, model_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT_SCRIPT, str(model_path), str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 60)
    worker_pid = int(line)
    assert alive(worker_pid)

    parent.kill()
    await parent.wait()
    assert await wait_for(lambda: not alive(worker_pid), 5), "worker outlived its parent"

"""Supervision of local-model worker processes: start, watch, restart with backoff, stop.

One `EngineWorker` per local model; its state is the served entity's deployment state.
Everything runs as asyncio tasks owned by the `EngineSupervisor` (no threads, no globals).
A worker whose parent dies exits by itself on stdin EOF (see `worker.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import aiohttp

from modelyard.engine.worker import WorkerProcess, WorkerStartError

log = logging.getLogger(__name__)

READY_TIMEOUT = 600.0  # loading a multi-GB model from a slow disk can take minutes
STOP_GRACE = 10.0
BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_RESET = 0.5, 30.0, 60.0
HEALTH_INTERVAL, HEALTH_TIMEOUT, HEALTH_FAILURES = 2.0, 5.0, 3


class DeploymentState(StrEnum):
    CREATING = "DEPLOYMENT_CREATING"
    READY = "DEPLOYMENT_READY"
    FAILED = "DEPLOYMENT_FAILED"


@dataclass(frozen=True)
class EngineSpec:
    """What to run: a model name and, unless the supervisor's `prepare` finds it, its file."""

    model_name: str
    model_path: Path | None = None
    parallel: int = 8
    ctx_per_slot: int = 2048
    threads: int | None = None

    def worker_args(self, path: Path) -> list[str]:
        """The worker's command line for this spec; port 0 lets the OS pick a free port."""
        args = ["--model", str(path), "--alias", self.model_name, "--port", "0"]
        args += ["--parallel", str(self.parallel), "--ctx-per-slot", str(self.ctx_per_slot)]
        return args + (["--threads", str(self.threads)] if self.threads else [])


class EngineWorker:
    """One supervised worker process for one local model."""

    def __init__(self, spec: EngineSpec, secret: str, log_path: Path) -> None:
        self.spec = spec
        self.secret = secret
        self.log_path = log_path
        self.state = DeploymentState.CREATING
        self.message = f"Starting {spec.model_name}"
        self.base_url: str | None = None
        self.n_ctx_per_slot = spec.ctx_per_slot
        self.restarts = 0
        # Whether this worker has served at all: a later restart is not a config update.
        self.ever_ready = False
        self.process: WorkerProcess | None = None
        self._listeners: list[Callable[[EngineWorker], None]] = []
        self._ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The running worker's process id, if any."""
        proc = self.process
        return proc.pid if proc is not None and proc.returncode is None else None

    def add_listener(self, fn: Callable[[EngineWorker], None]) -> None:
        """Call `fn(worker)` on every change of state, message or URL."""
        self._listeners.append(fn)

    async def wait_ready(self, timeout: float) -> bool:  # noqa: ASYNC109 - the agreed interface
        """True once the worker is READY, False if `timeout` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def set_state(self, state: DeploymentState, message: str, base_url: str | None = None) -> None:
        """Record a new state and tell the listeners (the supervisor's use only)."""
        if (state, message, base_url) == (self.state, self.message, self.base_url):
            return
        self.state, self.message, self.base_url = state, message, base_url
        if state is DeploymentState.READY:
            self.ever_ready = True
            self._ready.set()
        else:
            self._ready.clear()
        log.info("engine %s: %s %s", self.spec.model_name, state.value, message)
        for fn in self._listeners:
            try:
                fn(self)
            except Exception:  # a faulty listener must not stop the supervision
                log.exception("engine listener failed")


class EngineSupervisor:
    """Starts one worker process per local model and keeps it running."""

    def __init__(
        self,
        *,
        log_dir: Path,
        secret: str | None = None,
        prepare: Callable[[str], Awaitable[Path]] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.secret = secret or secrets.token_urlsafe(32)
        self._prepare = prepare
        self._workers: dict[str, EngineWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def ensure(self, spec: EngineSpec | str) -> EngineWorker:
        """The worker for `spec.model_name`, started in the background if new; returns at once.

        Call it from the event loop. A bare name needs `prepare` to find the model file.
        A worker that exists is returned as is: `stop` it first to change its spec.
        """
        if isinstance(spec, str):
            spec = EngineSpec(model_name=spec)
        worker = self._workers.get(spec.model_name)
        if worker is None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", spec.model_name)
            worker = EngineWorker(spec, self.secret, self.log_dir / f"engine-{safe}.log")
            self._workers[spec.model_name] = worker
            self._tasks[spec.model_name] = asyncio.create_task(
                self._supervise(worker), name=f"engine-{spec.model_name}"
            )
        return worker

    def get(self, model_name: str) -> EngineWorker | None:
        """The worker for `model_name`, if `ensure` was called for it."""
        return self._workers.get(model_name)

    async def stop(self, model_name: str) -> None:
        """Stop the worker: SIGTERM, up to 10 s of grace, then SIGKILL."""
        task = self._tasks.pop(model_name, None)
        worker = self._workers.pop(model_name, None)
        if worker is not None:  # not READY any more: routing stops before the process does
            worker.set_state(DeploymentState.FAILED, "Stopping")
        if task is not None:
            task.cancel()  # the task's cleanup terminates the process
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if worker is not None:
            worker.set_state(DeploymentState.FAILED, "Stopped")

    async def close(self) -> None:
        """Stop every worker and release the health-check session."""
        await asyncio.gather(*(self.stop(name) for name in list(self._workers)))
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _supervise(self, worker: EngineWorker) -> None:
        """Start, watch and restart one worker until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST
        while True:
            started = loop.time()
            try:
                reason = await self._run_once(worker)
            except WorkerStartError as exc:
                worker.set_state(DeploymentState.FAILED, str(exc))
            except Exception as exc:  # e.g. an unwritable log dir: show it, keep retrying
                log.exception("engine %s: supervision error", worker.spec.model_name)
                worker.set_state(DeploymentState.FAILED, f"Engine supervisor error: {exc}")
            else:
                if loop.time() - started >= HEALTHY_RESET:
                    backoff = BACKOFF_FIRST
                message = f"{reason}; restarting in {backoff:.1f} s"
                worker.set_state(DeploymentState.CREATING, message)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            worker.restarts += 1

    async def _run_once(self, worker: EngineWorker) -> str:
        """One worker life: prepare, spawn, serve. Returns why it ended after READY."""
        path = await self._model_path(worker)
        if worker.state is not DeploymentState.FAILED:  # keep the last error visible on retries
            worker.set_state(DeploymentState.CREATING, f"Loading {worker.spec.model_name}")
        args = worker.spec.worker_args(path)
        proc = await WorkerProcess.spawn(args, secret=worker.secret, log_path=worker.log_path)
        worker.process = proc
        try:
            url, worker.n_ctx_per_slot = await proc.read_ready(READY_TIMEOUT)
            slots = f"{worker.spec.parallel} slots of {worker.n_ctx_per_slot} tokens"
            worker.set_state(DeploymentState.READY, f"Ready: {slots}, pid {proc.pid}", url)
            hung = await self._serve(proc, url)
        finally:
            await proc.terminate(STOP_GRACE)
        if hung:
            return f"Worker stopped answering /health ({HEALTH_FAILURES} checks); killed it"
        return f"Worker exited with code {proc.returncode}"

    async def _model_path(self, worker: EngineWorker) -> Path:
        """The model file: from the spec, else from `prepare` (the model store's pull)."""
        spec = worker.spec
        if spec.model_path is not None:
            return spec.model_path
        if self._prepare is None:
            raise WorkerStartError(f"No model file given for {spec.model_name}")
        if worker.state is not DeploymentState.FAILED:
            worker.set_state(DeploymentState.CREATING, f"Pulling {spec.model_name}")
        try:
            path = await self._prepare(spec.model_name)
        except Exception as exc:  # any pull failure is shown and retried, never fatal
            raise WorkerStartError(str(exc) or type(exc).__name__) from exc
        worker.spec = dataclasses.replace(spec, model_path=path)
        return path

    async def _serve(self, proc: WorkerProcess, url: str) -> bool:
        """Wait for the process to exit while health-checking it. True if it hung."""
        health = asyncio.create_task(self._watch_health(proc, url))
        try:
            await proc.wait()
        finally:
            health.cancel()
        return health.done() and not health.cancelled() and health.result()

    async def _watch_health(self, proc: WorkerProcess, url: str) -> bool:
        """Kill the process after HEALTH_FAILURES failed `GET /health` in a row."""
        failures = 0
        while failures < HEALTH_FAILURES:
            await asyncio.sleep(HEALTH_INTERVAL)
            failures = 0 if await self._healthy(url) else failures + 1
        log.warning("engine at %s stopped answering /health; killing pid %s", url, proc.pid)
        proc.kill()
        return True

    async def _healthy(self, url: str) -> bool:
        if self._session is None:  # created lazily: a session belongs to the running loop
            timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.get(f"{url}/health") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

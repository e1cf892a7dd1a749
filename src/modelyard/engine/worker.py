"""The local-model worker: one llama.cpp server (through xllamacpp) in its own process.

This module holds both sides of the worker protocol: the worker's `main`, and the parent's
`WorkerProcess` handle that spawns one, reads its ready line and terminates it.

    python -m modelyard.engine.worker --model PATH --alias NAME [--port 0] [--parallel 8]
        [--ctx-per-slot 2048] [--threads T] [--verbosity 2]

The API secret comes from `MODELYARD_ENGINE_SECRET`, never argv (argv is visible in `ps`).
Protocol with the supervisor: exactly one JSON line on stdout, either
`{"ready": true, "url": "http://127.0.0.1:PORT", "n_ctx_per_slot": C}` or
`{"ready": false, "error": "..."}` (then exit 1). The worker exits cleanly on SIGTERM/SIGINT
and when stdin reaches EOF, which is how it learns that its parent died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

SECRET_ENV = "MODELYARD_ENGINE_SECRET"
GGUF_MAGIC = b"GGUF"
# llama.cpp log levels: 1 error, 2 warning, 3 info (about 8 lines per request), 4 debug.
DEFAULT_VERBOSITY = 2
LOG_ROTATE_BYTES = 10 * 1024 * 1024
SHUTDOWN_GRACE = 5  # seconds; below the supervisor's 10 s, after which it sends SIGKILL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The worker's command line."""
    parser = argparse.ArgumentParser(prog="python -m modelyard.engine.worker")
    parser.add_argument("--model", required=True, type=Path, help="GGUF model file")
    parser.add_argument("--alias", required=True, help="model name reported by the API")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick a free port")
    parser.add_argument("--parallel", type=int, default=8, help="concurrent sequences (slots)")
    parser.add_argument("--ctx-per-slot", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--verbosity", type=int, default=DEFAULT_VERBOSITY, help="llama.cpp log")
    return parser.parse_args(argv)


def check_model_file(path: Path) -> None:
    """Raise ValueError naming the problem when `path` cannot be a GGUF model.

    llama.cpp only says "Failed to init server" for every load failure, so the common
    mistakes are caught here first, where the message can name them.
    """
    if not path.is_file():
        raise ValueError(f"Model file not found: {path}")
    with path.open("rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        raise ValueError(
            f"Model file is not a valid GGUF: {path} starts with {head!r}, not {GGUF_MAGIC!r}"
        )


def load_server(args: argparse.Namespace, secret: str) -> Any:
    """Load the model and start llama-server: loopback only, secret required."""
    import xllamacpp  # imported here so `--help` and argument errors stay instant

    return xllamacpp.Server(build_params(xllamacpp.CommonParams(), args, secret))


def build_params(p: Any, args: argparse.Namespace, secret: str) -> Any:
    """Fill xllamacpp's `CommonParams` from the command line."""
    p.model.path = str(args.model)
    p.model_alias = {args.alias}
    p.hostnames = ["127.0.0.1"]
    p.port = args.port
    p.api_keys = [secret]
    p.n_parallel = args.parallel
    p.n_ctx = args.parallel * args.ctx_per_slot  # split evenly: kv_unified is off
    p.endpoint_metrics = True
    p.ui = False  # no web UI on an internal engine
    p.fit_params = False  # it loads the model a second time and may shrink n_ctx on its own
    p.verbosity = args.verbosity
    if args.threads:
        p.cpuparams.n_threads = args.threads
        p.cpuparams_batch.n_threads = args.threads
    return p


def slot_context(url: str, secret: str, default: int) -> int:
    """The context size per slot that the server actually uses, from `/props`."""
    request = urllib.request.Request(f"{url}/props", headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(json.load(response)["default_generation_settings"]["n_ctx"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def protocol_stream() -> IO[str]:
    """A private handle on stdout, with fd 1 pointed at stderr.

    Native code may print to stdout; only our one JSON line may reach the supervisor.
    """
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def watch_stdin() -> None:
    """Turn EOF on stdin (the parent died or closed the pipe) into a SIGTERM to ourselves."""
    while os.read(sys.stdin.fileno(), 4096):
        pass
    # During the load the default SIGTERM action ends the process at once; after it,
    # the handler installed by `serve` shuts the server down cleanly.
    os.kill(os.getpid(), signal.SIGTERM)


def serve(args: argparse.Namespace, secret: str, out: IO[str]) -> int:
    """Load the model, announce readiness, and serve until told to stop."""
    try:
        check_model_file(args.model)
        server = load_server(args, secret)
    except (OSError, ValueError) as exc:
        emit(out, {"ready": False, "error": str(exc)})
        return 1
    except RuntimeError:  # its text is always "Failed to init server"; the log has the cause
        emit(out, {"ready": False, "error": f"llama.cpp could not load {args.model}"})
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        url = server.listening_address
        ctx = slot_context(url, secret, args.ctx_per_slot)
        emit(out, {"ready": True, "url": url, "n_ctx_per_slot": ctx})
        # A timed wait: the main thread then runs Python signal handlers promptly even
        # when the signal was delivered to one of llama.cpp's threads.
        while not stop.wait(0.5):
            pass
    finally:
        # The destructor (run holding the GIL) waits for any non-streamed request in flight
        # until its client hangs up (measured: a minute and more). SIGALRM's default action
        # ends the process without needing the GIL, so the stop stays bounded.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(SHUTDOWN_GRACE)
        del server  # stops the HTTP server and the inference loop
        signal.alarm(0)
    return 0


def emit(out: IO[str], message: dict[str, Any]) -> None:
    """Write one protocol line and flush it."""
    out.write(json.dumps(message) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m modelyard.engine.worker`."""
    args = parse_args(argv)
    out = protocol_stream()
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        emit(out, {"ready": False, "error": f"{SECRET_ENV} is not set"})
        return 1
    # Default actions while loading: a stop request must not wait for a long load to finish.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    return serve(args, secret, out)


class WorkerStartError(Exception):
    """The worker did not become ready; the message names the problem."""


@dataclass
class WorkerProcess:
    """The parent's handle on one worker process."""

    proc: asyncio.subprocess.Process
    log_path: Path
    log_offset: int  # where this process's output begins in the (appended) log

    @classmethod
    async def spawn(cls, args: list[str], *, secret: str, log_path: Path) -> WorkerProcess:
        """Start `python -m modelyard.engine.worker ARGS`, stderr appended to `log_path`."""
        with _open_log(log_path) as log_file:
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            log_file.write(f"--- {started} worker starting: {' '.join(args)}\n".encode())
            log_file.flush()
            offset = log_file.tell()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "modelyard.engine.worker",
                *args,
                stdin=asyncio.subprocess.PIPE,  # EOF on it tells the worker its parent died
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env={**os.environ, SECRET_ENV: secret},
                start_new_session=True,  # a terminal's Ctrl-C reaches the gateway, which stops us
            )
        return cls(proc, log_path, offset)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def read_ready(self, timeout: float) -> tuple[str, int]:  # noqa: ASYNC109
        """`(url, n_ctx_per_slot)` from the ready line; WorkerStartError if it fails.

        A worker that dies while loading closes stdout, so that is noticed at once.
        """
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise WorkerStartError(f"Worker not ready after {timeout:.0f} s") from None
        try:
            ready = json.loads(line)
        except ValueError:
            ready = None
        if not isinstance(ready, dict):
            ready = {}
        if ready.get("ready") is True:
            return str(ready["url"]), int(ready["n_ctx_per_slot"])
        await self.terminate()
        error = ready.get("error") or f"Worker exited with code {self.returncode} before ready"
        detail = _log_error(self.log_path, self.log_offset)
        raise WorkerStartError(f"{error} ({detail})" if detail and detail not in error else error)

    async def wait(self) -> int:
        """Wait for the process to exit; its exit code (negative: killed by that signal)."""
        return await self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: for a hung worker, which may never act on SIGTERM."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM, `grace` seconds to exit, then SIGKILL; always reaps the process."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
            except TimeoutError:
                self.kill()
        await self.proc.wait()


def _open_log(path: Path) -> BinaryIO:
    """Open a worker log for appending, rotating it once it passes LOG_ROTATE_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return path.open("ab")


def _log_error(path: Path, offset: int) -> str:
    """The first llama.cpp error line (else the last line) logged since `offset`."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read(256 * 1024).decode(errors="replace").splitlines()
    except OSError:
        return ""
    # llama.cpp lines look like "0.00.007.546 E gguf_init_from_reader: invalid magic ...".
    errors = [ln.split(" E ", 1)[1].strip() for ln in lines if " E " in ln[:20]]
    if errors:
        return errors[0]
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1] if tail else ""


if __name__ == "__main__":
    sys.exit(main())

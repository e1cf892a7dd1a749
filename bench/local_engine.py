"""Tokens/s through modelyard versus straight against the same engine, in one run.

    python bench/local_engine.py [--rounds 3] [--max-tokens 128] [--stream]

Starts one standalone engine worker (what modelyard runs, same model and parameters) and one
`modelyard serve`, both idle while the other is measured. For each concurrency the two are
measured alternately, `--rounds` times, and the median aggregate completion tokens/s of each is
compared. Every request generates exactly `--max-tokens` tokens (`ignore_eos`), so both sides do
the same work. Prints one line per concurrency:

    concurrency=N modelyard_tok_s=… engine_tok_s=… ratio=…
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import DEFAULT_ENDPOINT, MODELS_DIR, start_server  # noqa: E402
from modelyard.engine.model_store import ModelStore  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def start_engine(model_path: Path, secret: str) -> tuple[subprocess.Popen[str], str]:
    """A standalone worker with the parameters `modelyard serve` gives its own."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelyard.engine.worker",
            "--model",
            str(model_path),
            "--alias",
            DEFAULT_ENDPOINT,
            "--parallel",
            "8",
            "--ctx-per-slot",
            "2048",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MODELYARD_ENGINE_SECRET": secret},
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    if not ready.get("ready"):
        raise SystemExit(f"engine failed to start: {ready}")
    return proc, ready["url"]


async def one_client(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    requests: int,
    max_tokens: int,
    stream: bool,
) -> int:
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "ignore_eos": True,
        "stream": stream,
        "model": DEFAULT_ENDPOINT,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    tokens = 0
    for _ in range(requests):
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise SystemExit(f"{url}: HTTP {resp.status}: {await resp.text()}")
            if not stream:
                tokens += (await resp.json())["usage"]["completion_tokens"]
                continue
            async for line in resp.content:
                if line.startswith(b"data: {") and b'"usage"' in line:
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        tokens += usage["completion_tokens"]
    return tokens


async def measure(
    url: str, headers: dict[str, str], concurrency: int, max_tokens: int, stream: bool
) -> float:
    """Aggregate completion tokens/s of `concurrency` clients making 2 requests each."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(one_client(session, url, headers, 2, max_tokens, stream) for _ in range(concurrency))
        )
        return sum(counts) / (time.perf_counter() - start)


async def run(args: argparse.Namespace) -> None:
    model = ModelStore(MODELS_DIR).ensure(DEFAULT_ENDPOINT, progress=True)
    secret = secrets.token_urlsafe(32)
    engine, engine_url = start_engine(model.path, secret)
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(Path(data_dir))
        try:
            server.wait_endpoint_ready(DEFAULT_ENDPOINT)
            targets = {
                "engine": (
                    f"{engine_url}/v1/chat/completions",
                    {"Authorization": f"Bearer {secret}"},
                ),
                "modelyard": (f"{server.url}/serving-endpoints/chat/completions", server.headers),
            }
            for url, headers in targets.values():  # warm both: first requests load caches
                await measure(url, headers, 2, 16, args.stream)
            for concurrency in (1, 4, 8):
                results: dict[str, list[float]] = {"engine": [], "modelyard": []}
                for _ in range(args.rounds):
                    for name, (url, headers) in targets.items():
                        results[name].append(
                            await measure(url, headers, concurrency, args.max_tokens, args.stream)
                        )
                        if args.verbose:
                            print(f"  {name} c={concurrency}: {results[name][-1]:.1f} tok/s")
                ours = statistics.median(results["modelyard"])
                theirs = statistics.median(results["engine"])
                print(
                    f"concurrency={concurrency} modelyard_tok_s={ours:.1f} "
                    f"engine_tok_s={theirs:.1f} ratio={ours / theirs:.3f}",
                    flush=True,
                )
        finally:
            server.stop()
            engine.terminate()
            engine.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--stream", action="store_true", help="measure streamed answers")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    # On SIGTERM (e.g. `timeout`), unwind so the servers this run started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

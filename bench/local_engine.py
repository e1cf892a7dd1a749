"""Tokens/s through modelyard versus straight against the same engine, in one run.

    python bench/local_engine.py [--rounds 5] [--max-tokens 128] [--stream]

Starts one standalone engine worker (what modelyard runs, same model and parameters) and one
`modelyard serve`, both idle while the other is measured. For each concurrency the two are
measured back to back, `--rounds` times; the line gives the median aggregate completion tokens/s
of each and the median of the per-round ratios. Every request generates exactly `--max-tokens`
tokens (`ignore_eos`), so both sides do the same work. Prints one line per concurrency:

    concurrency=N modelyard_tok_s=… engine_tok_s=… ratio=…

after a line with the median time to the first streamed token through modelyard and the median
time it adds over the engine, from requests sent to each in turn (`first_token_ms`).
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


async def first_token_ms(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> float:
    """Milliseconds from sending one streamed request to its first content chunk."""
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 4,
        "stream": True,
        "model": DEFAULT_ENDPOINT,
    }
    start = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as resp:
        async for line in resp.content:
            if b'"content":"' in line:
                elapsed = (time.perf_counter() - start) * 1000
                await resp.read()
                return elapsed
    raise SystemExit(f"{url}: no content in the stream")


async def added_first_token_ms(
    targets: dict[str, tuple[str, dict[str, str]]],
    pairs: int,
) -> tuple[float, float]:
    """Median first-token time through modelyard, and its median excess over the engine's,
    from requests sent alternately to each so both see the same machine."""
    ours, added = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(pairs):
            engine = await first_token_ms(session, *targets["engine"])
            modelyard = await first_token_ms(session, *targets["modelyard"])
            ours.append(modelyard)
            added.append(modelyard - engine)
    return statistics.median(ours), statistics.median(added)


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
            first_token, added = await added_first_token_ms(targets, 40)
            print(f"first_token_ms modelyard={first_token:.1f} added_ms={added:.1f}", flush=True)
            for concurrency in (1, 4, 8):
                results: dict[str, list[float]] = {"engine": [], "modelyard": []}
                for round_ in range(args.rounds):
                    # Alternate who goes first, so neither gains from the order.
                    order = list(targets.items())[:: 1 if round_ % 2 == 0 else -1]
                    for name, (url, headers) in order:
                        results[name].append(
                            await measure(url, headers, concurrency, args.max_tokens, args.stream)
                        )
                        if args.verbose:
                            print(f"  {name} c={concurrency}: {results[name][-1]:.1f} tok/s")
                ours = statistics.median(results["modelyard"])
                theirs = statistics.median(results["engine"])
                # Each round measures both back to back: the ratio is taken within a round,
                # where both saw the same machine, and the median of those is reported.
                ratio = statistics.median(
                    m / e for m, e in zip(results["modelyard"], results["engine"], strict=True)
                )
                print(
                    f"concurrency={concurrency} modelyard_tok_s={ours:.1f} "
                    f"engine_tok_s={theirs:.1f} ratio={ratio:.3f}",
                    flush=True,
                )
        finally:
            server.stop()
            engine.terminate()
            engine.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--stream", action="store_true", help="measure streamed answers")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    # On SIGTERM (e.g. `timeout`), unwind so the servers this run started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

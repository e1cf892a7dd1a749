"""What usage tracking and inference tables cost a request, measured against the same endpoint
without them, in one run.

    python bench/recording_overhead.py [--rounds 5] [--requests 1000] [--concurrency 32]

Starts one `modelyard serve` (SQLite, no local model) and a fake OpenAI upstream that answers
at once, so the gateway is all that is measured. Two endpoints on that upstream differ only in
`usage_tracking_config` and `inference_table_config`. Each round sends `--requests` chat
requests at `--concurrency` to each endpoint in turn (alternating which goes first) and takes
requests/s and the median latency. Prints one line:

    recorded_rps=… plain_rps=… ratio=… recorded_p50_ms=… plain_p50_ms=…

ratio is the median of the per-round ratios (recorded / plain; 1.0 = free).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import create_endpoint, start_server  # noqa: E402
from tests.fakes.openai import FakeOpenAI  # noqa: E402

KEY = "sk-bench"
RECORDING = {
    "usage_tracking_config": {"enabled": True},
    "inference_table_config": {"enabled": True, "catalog_name": "bench", "schema_name": "rec"},
}


async def measure(
    url: str, token: str, endpoint: str, n: int, concurrency: int
) -> tuple[float, float]:
    """(requests/s, median latency ms) of `n` requests, `concurrency` at a time."""
    body = {"messages": [{"role": "user", "content": "How fast is this gateway?"}]}
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker(http: aiohttp.ClientSession) -> None:
        for _ in queue:
            sent = time.perf_counter()
            async with http.post(f"{url}/serving-endpoints/{endpoint}/invocations",
                                 json=body, headers=headers) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
                await resp.read()
            latencies.append((time.perf_counter() - sent) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return n / elapsed, statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    upstream = FakeOpenAI(KEY).start()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data", "--default-model", "", "--log-level", "warning")
        try:
            config = {"openai_api_key_plaintext": KEY, "openai_api_base": f"{upstream.url}/v1"}
            model = {"provider": "openai", "name": "m", "task": "llm/v1/chat"}
            entity = {"external_model": {**model, "openai_config": config}}
            create_endpoint(server, "plain", [entity])
            create_endpoint(server, "recorded", [entity], ai_gateway=RECORDING)
            run = lambda name: asyncio.run(  # noqa: E731
                measure(server.url, server.token, name, args.requests, args.concurrency)
            )
            run("plain"), run("recorded")  # warm up both paths and create the payload table
            results: dict[str, list[tuple[float, float]]] = {"plain": [], "recorded": []}
            for i in range(args.rounds):
                order = ["plain", "recorded"] if i % 2 == 0 else ["recorded", "plain"]
                for name in order:
                    results[name].append(run(name))
        finally:
            server.stop()
            upstream.stop()
    pairs = zip(results["recorded"], results["plain"], strict=True)
    ratio = statistics.median(r[0] / p[0] for r, p in pairs)
    rps = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
    p50 = {k: statistics.median(x[1] for x in v) for k, v in results.items()}
    print(f"recorded_rps={rps['recorded']:.0f} plain_rps={rps['plain']:.0f} ratio={ratio:.3f} "
          f"recorded_p50_ms={p50['recorded']:.2f} plain_p50_ms={p50['plain']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""What the usage, inference-table and metrics tests share: throw-away PostgreSQL databases, an
endpoint on a fake OpenAI with recording on, a concurrent burst of queries, and reading the
tables back with plain SQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import requests
from sqlalchemy import create_engine, text
from tests.conftest import Server, create_endpoint
from tests.fakes.openai import FakeOpenAI

from modelyard.store.engine import normalize_url

KEY = "sk-recording-key"
TABLES = {"catalog_name": "main", "schema_name": "serving"}


def server_args(database_url: str | None) -> list[str]:
    """`serve` flags for a server without a local model, on `database_url` or its SQLite."""
    return ["--default-model", "", *(["--database-url", database_url] if database_url else [])]


def database_url_of(server: Server, database_url: str | None = None) -> str:
    return database_url or f"sqlite:///{server.data_dir / 'modelyard.db'}"


def recorded_endpoint(
    server: Server,
    name: str,
    fake: FakeOpenAI,
    *,
    usage: bool = True,
    tables: bool = True,
    prefix: str | None = None,
) -> dict:
    """An endpoint on `fake` with usage tracking and/or inference tables on."""
    ai_gateway: dict[str, Any] = {}
    if usage:
        ai_gateway["usage_tracking_config"] = {"enabled": True}
    if tables:
        config: dict[str, Any] = {"enabled": True, **TABLES}
        if prefix is not None:
            config["table_name_prefix"] = prefix
        ai_gateway["inference_table_config"] = config
    model = {
        "provider": "openai",
        "name": "gpt-fake",
        "task": "llm/v1/chat",
        "openai_config": {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1"},
    }
    return create_endpoint(
        server, name, [{"name": "fake", "external_model": model}], ai_gateway=ai_gateway
    )  # fmt: skip


def payload_table_of(endpoint: str) -> str:
    return f"main__serving__{endpoint.replace('-', '_').lower()}_payload"


@dataclass
class Outcome:
    request_id: str
    status: int  # 0 when the connection failed
    complete: bool  # a 200 with the whole answer (a stream: through `[DONE]`)


def burst(
    server: Server,
    endpoint: str,
    n: int,
    *,
    concurrency: int = 100,
    stream_every: int = 3,
    after: int | None = None,
    then: Any = None,
) -> list[Outcome]:
    """`n` chat queries, `concurrency` at a time, every `stream_every`-th streamed, each with
    its own `x-request-id`; `then()` is called once `after` of them have completed."""
    return asyncio.run(_burst(server, endpoint, n, concurrency, stream_every, after, then))


async def _burst(
    server: Server, endpoint: str, n: int, concurrency: int, stream_every: int,
    after: int | None, then: Any,
) -> list[Outcome]:  # fmt: skip
    url = f"{server.url}/serving-endpoints/{endpoint}/invocations"
    gate = asyncio.Semaphore(concurrency)
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def one(i: int, http: aiohttp.ClientSession) -> Outcome:
        nonlocal done
        request_id = f"burst-{uuid.uuid4().hex}"
        stream = i % stream_every == 0
        body = {"messages": [{"role": "user", "content": f"hello {i}"}], "stream": stream}
        headers = {**server.headers, "x-request-id": request_id}
        async with gate:
            try:
                async with http.post(url, json=body, headers=headers) as r:
                    raw = await r.read()
                    complete = r.status == 200 and (
                        raw.rstrip().endswith(b"data: [DONE]") if stream else b"choices" in raw
                    )
                    outcome = Outcome(request_id, r.status, complete)
            except (TimeoutError, aiohttp.ClientError):
                outcome = Outcome(request_id, 0, False)
        done += 1
        if after is not None and done == after:
            then()
        return outcome

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        return await asyncio.gather(*(one(i, http) for i in range(n)))


def query_rows(database_url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of `sql`, read the way a user would: plain SQL on the server's database."""
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def wait_rows(database_url: str, sql: str, count: int, timeout: float = 20, **params: Any) -> int:
    """Poll `SELECT count(*) ...` until it reaches `count` (the writer is asynchronous)."""
    end = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < end:
        seen = query_rows(database_url, sql, **params)[0]["n"]
        if seen >= count:
            return seen
        time.sleep(0.2)
    return seen


def metrics_text(
    server: Server, endpoint: str | None = None, auth: bool = True
) -> requests.Response:
    path = "/metrics" if endpoint is None else f"/api/2.0/serving-endpoints/{endpoint}/metrics"
    return requests.get(server.url + path, headers=server.headers if auth else {}, timeout=10)


def sample(text_: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text, 0 when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text_):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value

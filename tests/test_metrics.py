"""`/metrics` and `/api/2.0/serving-endpoints/{name}/metrics`: requests, latency, tokens,
rate-limit refusals and the recorder's queue, in Prometheus text."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from tests import provider_kit as kit
from tests import recording_kit as rk
from tests.conftest import Server, start_server
from tests.fakes.openai import FakeOpenAI

from modelyard.errors import RateLimited
from modelyard.gateway.auth import Authenticator, hash_token
from modelyard.gateway.endpoints import EndpointRegistry, LiveEndpoint
from modelyard.gateway.metrics import Metrics
from modelyard.gateway.recording import QueryRecord, Recorder
from modelyard.gateway.service import QueryService
from modelyard.store import EndpointRecord, TokenRecord

fake, clean_fake = kit.fake_fixtures(lambda: FakeOpenAI(rk.KEY))


def ask(server: Server, endpoint: str, **body: Any) -> requests.Response:
    return requests.post(
        f"{server.url}/serving-endpoints/{endpoint}/invocations",
        json={"messages": [{"role": "user", "content": "hello there"}], **body},
        headers=server.headers,
        timeout=30,
    )


def test_metrics_count_requests_latency_and_tokens_by_endpoint(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str
):
    # Metrics need no usage tracking: every query on every endpoint is counted.
    rk.recorded_endpoint(gateway, endpoint_name, fake, usage=False, tables=False)
    answers = [ask(gateway, endpoint_name) for _ in range(5)]
    answers += [ask(gateway, endpoint_name, stream=True) for _ in range(2)]
    fake.fail_next("status:500")
    answers.append(ask(gateway, endpoint_name))
    assert [a.status_code for a in answers] == [200] * 7 + [502]

    r = rk.metrics_text(gateway, auth=False)  # scrapers carry no token
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    on = {"endpoint": endpoint_name}
    assert rk.sample(text, "modelyard_requests_total", **on, status="200") == 7
    assert rk.sample(text, "modelyard_requests_total", **on, status="502") == 1
    assert rk.sample(text, "modelyard_request_latency_seconds_count", **on) == 8
    # The fake counts words: "hello there" is 2, "You said: hello there" is 4.
    assert rk.sample(text, "modelyard_prompt_tokens_total", **on) == 7 * 2
    assert rk.sample(text, "modelyard_completion_tokens_total", **on) == 7 * 4
    assert rk.sample(text, "modelyard_rate_limited_total", **on) == 0
    assert "modelyard_recorder_queue_depth" in text
    assert rk.sample(text, "modelyard_recorder_queue_capacity") == 10_000
    assert rk.sample(text, "modelyard_recorder_queue_full_policy", policy="wait") == 1


def test_an_endpoints_metrics_route_needs_a_token_and_shows_only_that_endpoint(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str
):
    rk.recorded_endpoint(gateway, endpoint_name, fake, usage=False, tables=False)
    other = f"{endpoint_name}-other"
    rk.recorded_endpoint(gateway, other, fake, usage=False, tables=False)
    try:
        assert ask(gateway, endpoint_name).status_code == 200
        assert ask(gateway, other).status_code == 200
        unauthenticated = rk.metrics_text(gateway, endpoint_name, auth=False)
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error_code"] == "UNAUTHENTICATED"
        r = rk.metrics_text(gateway, endpoint_name)
        assert r.status_code == 200, r.text
        on = {"endpoint": endpoint_name}
        assert rk.sample(r.text, "modelyard_requests_total", **on, status="200") == 1
        assert other not in r.text and "modelyard_recorder" not in r.text
        missing = rk.metrics_text(gateway, "no-such-endpoint")
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    finally:
        requests.delete(
            f"{gateway.url}/api/2.0/serving-endpoints/{other}", headers=gateway.headers, timeout=10
        )


def test_a_full_queue_with_drop_counts_every_dropped_row(tmp_path: Path, fake: FakeOpenAI):
    server = start_server(
        tmp_path / "drop", *rk.server_args(None),
        "--record-queue-size", "1", "--record-queue-full", "drop",
    )  # fmt: skip
    try:
        rk.recorded_endpoint(server, "dropping", fake)
        outcomes = rk.burst(server, "dropping", 400, concurrency=100)
        assert all(o.complete for o in outcomes)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = rk.metrics_text(server).text
            totals = {
                kind: rk.sample(text, "modelyard_recorder_written_rows_total", table=kind)
                + rk.sample(text, "modelyard_recorder_dropped_rows_total", table=kind)
                for kind in ("usage", "payload")
            }
            if totals == {"usage": 400, "payload": 400}:
                break
            time.sleep(0.2)
        assert totals == {"usage": 400, "payload": 400}
        assert rk.sample(text, "modelyard_recorder_queue_capacity") == 1
        assert rk.sample(text, "modelyard_recorder_queue_full_policy", policy="drop") == 1
    finally:
        server.stop()
    dropped = rk.sample(text, "modelyard_recorder_dropped_rows_total", table="usage")
    written = rk.sample(text, "modelyard_recorder_written_rows_total", table="usage")
    print(f"queue of 1, 400 requests 100 at a time: {dropped:.0f} usage rows dropped")
    assert dropped > 0
    # What /metrics says was written is what the table holds: drops are the only loss.
    count = "SELECT count(*) AS n FROM usage_records WHERE endpoint_name = 'dropping'"
    assert rk.query_rows(rk.database_url_of(server), count) == [{"n": written}]


# -- in process: the service and the recorder without a server ---------------------------------


class _Refusing:
    """A rate limiter that refuses everything, as the real one does when a limit is spent."""

    async def reserve(self, *_: object) -> None:
        raise RateLimited("Rate limit of 1 call per minute reached.", retry_after=7)


class _Allowing:
    def require(self, *_: object) -> None:
        return None

    async def screen_input(self, _endpoint: object, request: Any) -> Any:
        return request


def _endpoint(name: str) -> LiveEndpoint:
    record = EndpointRecord(
        id="e" * 32, name=name, creator="admin", created_ms=0, updated_ms=0, config_version=1,
        task="llm/v1/chat", endpoint_type="EXTERNAL_MODEL", config={}, ai_gateway=None,
        tags=[], description=None, route_optimized=False,
    )  # fmt: skip
    return LiveEndpoint(record, ())


async def test_rate_limit_refusals_are_counted_by_endpoint():
    registry = EndpointRegistry()
    registry.put(_endpoint("limited"))
    auth = Authenticator([TokenRecord("t" * 32, hash_token("secret"), "alice", None, 0, -1)])
    recorder = Recorder(None, Metrics())
    allow = _Allowing()
    service = QueryService(
        registry, auth, access=allow, guardrails=allow, limits=_Refusing(), recorder=recorder
    )  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(RateLimited):
            await service.query(
                authorization="Bearer secret",
                body=b'{"messages": [{"role": "user", "content": "hi"}]}',
                endpoint_name="limited",
                request_id="r",
            )
    text = recorder.metrics.render("limited").decode()
    assert rk.sample(text, "modelyard_rate_limited_total", endpoint="limited") == 3
    assert rk.sample(text, "modelyard_requests_total", endpoint="limited", status="429") == 3


class _SlowSink:
    """A database that takes its time and remembers every batch."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches: list[tuple[list, dict]] = []

    def write(self, usage: list, payloads: dict) -> None:
        time.sleep(self.delay)
        self.batches.append((usage, payloads))


def _record(i: int) -> QueryRecord:
    return QueryRecord(f"r{i}", "ep", "e" * 32, "alice", 1_700_000_000_000, {"messages": []})


ON = {
    "usage_tracking_config": {"enabled": True},
    "inference_table_config": {"enabled": True, "catalog_name": "c", "schema_name": "s"},
}


async def test_close_writes_everything_still_queued_in_batches():
    sink = _SlowSink(0.05)
    recorder = Recorder(sink, Metrics(), queue_size=10_000)
    recorder.start()
    for i in range(1200):
        await recorder.record(ON, _record(i))
    await recorder.close()
    usage = [row["request_id"] for batch, _ in sink.batches for row in batch]
    payload = [
        row["databricks_request_id"] for _, p in sink.batches for row in p["c__s__ep_payload"]
    ]
    assert sorted(usage) == sorted(payload) == sorted(f"r{i}" for i in range(1200))
    # Batched: far fewer transactions than rows, at most 500 rows in each.
    assert 3 <= len(sink.batches) < 50 and max(len(b) for b, _ in sink.batches) <= 500


async def test_wait_policy_makes_the_request_wait_for_room_and_loses_nothing():
    sink = _SlowSink(0.02)
    recorder = Recorder(sink, Metrics(), queue_size=2, when_full="wait")
    recorder.start()
    await asyncio.gather(*(recorder.record(ON, _record(i)) for i in range(50)))
    await recorder.close()
    assert sum(len(b) for b, _ in sink.batches) == 50
    text = recorder.metrics.render().decode()
    assert rk.sample(text, "modelyard_recorder_dropped_rows_total", table="usage") == 0
    assert rk.sample(text, "modelyard_recorder_written_rows_total", table="usage") == 50

"""Inference (payload) tables and usage rows under load, on SQLite and PostgreSQL: one row of
each per request, none lost, not even when the server is stopped in the middle of a burst."""

from __future__ import annotations

import collections
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tests import provider_kit as kit
from tests import recording_kit as rk
from tests.conftest import Server, pg_database, start_server
from tests.fakes.openai import FakeOpenAI

fake, clean_fake = kit.fake_fixtures(lambda: FakeOpenAI(rk.KEY))

USAGE_COUNT = "SELECT count(*) AS n FROM usage_records WHERE endpoint_name = :e"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the server's own SQLite; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with pg_database() as url:
        yield url


@contextlib.contextmanager
def serving(tmp_path: Path, database_url: str | None, *args: str) -> Iterator[Server]:
    server = start_server(tmp_path / "server", *rk.server_args(database_url), *args)
    try:
        yield server
    finally:
        server.stop()


def rows_by_request(database_url: str, endpoint: str) -> tuple[collections.Counter, ...]:
    usage = rk.query_rows(
        database_url, "SELECT request_id FROM usage_records WHERE endpoint_name = :e", e=endpoint
    )
    payload = rk.query_rows(
        database_url, f"SELECT databricks_request_id FROM {rk.payload_table_of(endpoint)}"
    )
    return (
        collections.Counter(r["request_id"] for r in usage),
        collections.Counter(r["databricks_request_id"] for r in payload),
    )


def test_2000_concurrent_requests_have_one_usage_and_one_payload_row_each(
    tmp_path: Path, fake: FakeOpenAI, database_url: str | None
):
    with serving(tmp_path, database_url) as server:
        rk.recorded_endpoint(server, "burst", fake)
        started = time.monotonic()
        outcomes = rk.burst(server, "burst", 2000, concurrency=100)
        elapsed = time.monotonic() - started
        assert [o for o in outcomes if not o.complete] == []
        url = rk.database_url_of(server, database_url)
        assert rk.wait_rows(url, USAGE_COUNT, 2000, e="burst") == 2000
        metrics = rk.metrics_text(server).text
    print(f"2000 requests, 100 at a time, in {elapsed:.1f}s")
    usage, payload = rows_by_request(url, "burst")
    sent = collections.Counter(o.request_id for o in outcomes)
    assert usage == sent
    assert payload == sent
    assert rk.sample(metrics, "modelyard_requests_total", endpoint="burst", status="200") == 2000
    assert rk.sample(metrics, "modelyard_recorder_dropped_rows_total", table="usage") == 0


def test_sigterm_in_the_middle_of_a_burst_loses_no_row(
    tmp_path: Path, fake: FakeOpenAI, database_url: str | None
):
    with serving(tmp_path, database_url) as server:
        rk.recorded_endpoint(server, "stopped", fake)
        outcomes = rk.burst(
            server, "stopped", 1500, concurrency=100, after=400,
            then=lambda: server.process.send_signal(signal.SIGTERM),
        )  # fmt: skip
        # uvicorn re-raises the SIGTERM once it has shut down cleanly.
        assert server.process.wait(60) in (0, -signal.SIGTERM), server.log()
        assert "Application shutdown complete" in server.log()
    url = rk.database_url_of(server, database_url)
    answered = [o.request_id for o in outcomes if o.complete]
    assert 400 <= len(answered) < 1500, "the SIGTERM came too late to test anything"
    usage, payload = rows_by_request(url, "stopped")
    missing = [r for r in answered if usage[r] != 1 or payload[r] != 1]
    assert missing == [], f"{len(missing)} answered requests without exactly one row of each"
    # Nothing is recorded twice, and nothing is recorded that was never sent.
    assert max(usage.values()) == max(payload.values()) == 1
    assert set(usage) <= {o.request_id for o in outcomes}


def test_payload_rows_have_databricks_columns_and_assembled_streams(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str
):
    rk.recorded_endpoint(gateway, endpoint_name, fake, usage=False, prefix="Chat.V1")
    url = rk.database_url_of(gateway)
    invocations = f"{gateway.url}/serving-endpoints/{endpoint_name}/invocations"
    bodies = [
        {"messages": [{"role": "user", "content": "hello"}], "client_request_id": "plain-1"},
        {"messages": [{"role": "user", "content": "hello"}], "stream": True},
    ]
    ids = []
    for body in bodies:
        r = requests.post(invocations, json=body, headers=gateway.headers, timeout=30)
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-request-id"])
    fake.fail_next("status:400")
    r = requests.post(invocations, json=bodies[0], headers=gateway.headers, timeout=30)
    assert r.status_code == 400
    ids.append(r.headers["x-request-id"])

    table = "main__serving__chat_v1_payload"  # sanitised: lower case, '.' → '_'
    sql = f"SELECT * FROM {table} WHERE databricks_request_id = :i"
    rk.wait_rows(url, f"SELECT count(*) AS n FROM {table} WHERE databricks_request_id = :i", 1,
                 i=ids[-1])  # fmt: skip
    plain, streamed, failed = (rk.query_rows(url, sql, i=i)[0] for i in ids)
    assert set(plain) >= {
        "request_date", "databricks_request_id", "client_request_id", "request_time",
        "status_code", "sampling_fraction", "execution_duration_ms", "request", "response",
        "served_entity_id", "logging_error_codes", "requester",
    }  # fmt: skip
    assert plain["client_request_id"] == "plain-1"
    assert (plain["status_code"], plain["requester"], plain["served_entity_id"]) == (
        200, "admin", "fake",
    )  # fmt: skip
    assert rk.loads(plain["request"])["messages"] == bodies[0]["messages"]
    assert rk.loads(plain["response"])["choices"][0]["message"]["content"] == "You said: hello"
    assert str(plain["request_date"]) == time.strftime("%Y-%m-%d", time.gmtime())
    # The stream is stored as one assembled answer, with the usage it reported.
    answer = rk.loads(streamed["response"])
    assert answer["choices"][0]["message"]["content"] == "You said: hello"
    assert answer["usage"]["completion_tokens"] > 0
    assert failed["status_code"] == 400
    assert "injected failure" in rk.loads(failed["response"])["message"]
    # Usage tracking is off on this endpoint: no usage rows.
    assert rk.query_rows(url, USAGE_COUNT, e=endpoint_name) == [{"n": 0}]


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"inference_table_config": {"enabled": True}}, "inference_table_config"),
        ({"inference_table_config": {"enabled": "yes"}}, "inference_table_config.enabled"),
        ({"usage_tracking_config": {"enabled": 1}}, "usage_tracking_config.enabled"),
        ({"usage_tracking_config": "on"}, "usage_tracking_config"),
    ],
)
def test_bad_recording_config_is_a_400_naming_the_field(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str, block: dict, field: str
):
    rk.recorded_endpoint(gateway, endpoint_name, fake, usage=False, tables=False)
    r = requests.put(
        f"{gateway.url}/api/2.0/serving-endpoints/{endpoint_name}/ai-gateway",
        json=block, headers=gateway.headers, timeout=10,
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"{field}:" in r.json()["message"]

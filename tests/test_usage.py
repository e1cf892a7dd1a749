"""Usage tracking: one row per request in `usage_records`, and `modelyard usage` reading it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from tests import provider_kit as kit
from tests import recording_kit as rk
from tests.conftest import Server, pg_database, start_server
from tests.fakes.openai import FakeOpenAI

from modelyard.commands.usage import parse_time

fake, clean_fake = kit.fake_fixtures(lambda: FakeOpenAI(rk.KEY))

ROWS = "SELECT * FROM usage_records WHERE request_id = :i"


def ask(server: Server, endpoint: str, body: dict) -> requests.Response:
    return requests.post(
        f"{server.url}/serving-endpoints/{endpoint}/invocations",
        json={"messages": [{"role": "user", "content": "hello there"}], **body},
        headers={**server.headers, "x-request-id": f"usage-{uuid.uuid4().hex}"},
        timeout=30,
    )


def row_of(server: Server, response: requests.Response) -> dict:
    url = rk.database_url_of(server)
    request_id = response.headers["x-request-id"]
    count = ROWS.replace("*", "count(*) AS n")
    assert rk.wait_rows(url, count, 1, i=request_id) == 1
    return rk.query_rows(url, ROWS, i=request_id)[0]


def usage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "usage", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def table(output: str) -> list[list[str]]:
    """The printed table's rows (header first), split on runs of spaces."""
    return [line.split() for line in output.strip().splitlines()]


def test_a_usage_row_says_who_used_what_and_how_much(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str
):
    endpoint = rk.recorded_endpoint(gateway, endpoint_name, fake, tables=False)
    plain = ask(gateway, endpoint_name, {
        "client_request_id": "order-42", "usage_context": {"team": "risk", "app": "bot"},
    })  # fmt: skip
    streamed = ask(
        gateway, endpoint_name, {"stream": True, "stream_options": {"include_usage": True}}
    )
    fake.fail_next("status:500")
    failed = ask(gateway, endpoint_name, {})
    assert (plain.status_code, streamed.status_code, failed.status_code) == (200, 200, 502)

    row = row_of(gateway, plain)
    assert row["client_request_id"] == "order-42"
    assert rk.loads(row["usage_context"]) == {"team": "risk", "app": "bot"}
    assert (row["endpoint_name"], row["endpoint_id"]) == (endpoint_name, endpoint["id"])
    assert (row["served_entity"], row["requester"], row["status_code"]) == ("fake", "admin", 200)
    used = plain.json()["usage"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        used["prompt_tokens"], used["completion_tokens"],
    )  # fmt: skip
    assert abs(row["request_time_ms"] - time.time() * 1000) < 60_000
    assert row["latency_ms"] >= 0 and row["error_code"] is None

    # A stream's tokens are counted from its usage chunk, when the stream is over.
    last = [line for line in streamed.text.splitlines() if '"usage"' in line][-1]
    stream_usage = rk.loads(last.removeprefix("data: "))["usage"]
    row = row_of(gateway, streamed)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        stream_usage["prompt_tokens"], stream_usage["completion_tokens"],
    )  # fmt: skip
    row = row_of(gateway, failed)
    assert (row["status_code"], row["error_code"], row["completion_tokens"]) == (
        502, "BAD_GATEWAY", 0,
    )  # fmt: skip


def test_refused_requests_are_rows_too_without_what_was_refused(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str
):
    rk.recorded_endpoint(gateway, endpoint_name, fake)
    requests.put(
        f"{gateway.url}/api/2.0/serving-endpoints/{endpoint_name}/ai-gateway",
        json={
            "usage_tracking_config": {"enabled": True},
            "inference_table_config": {"enabled": True, **rk.TABLES},
            "guardrails": {"input": {"pii": {"behavior": "BLOCK"}}},
        },
        headers=gateway.headers,
        timeout=30,
    ).raise_for_status()
    secret = "jane.doe@example.com"
    blocked = ask(gateway, endpoint_name, {
        "messages": [{"role": "user", "content": f"Mail {secret} the report"}],
    })  # fmt: skip
    assert blocked.status_code == 400
    row = row_of(gateway, blocked)
    assert (row["status_code"], row["error_code"], row["prompt_tokens"]) == (400, "BAD_REQUEST", 0)

    url, table = rk.database_url_of(gateway), rk.payload_table_of(endpoint_name)
    sql = f"SELECT request, response FROM {table} WHERE databricks_request_id = :i"
    assert rk.wait_rows(url, sql.replace("request, response", "count(*) AS n"), 1,
                        i=blocked.headers["x-request-id"]) == 1  # fmt: skip
    payload = rk.query_rows(url, sql, i=blocked.headers["x-request-id"])[0]
    assert secret not in payload["request"] and secret not in payload["response"]
    assert "PII guardrail" in payload["response"]


def test_no_usage_rows_without_usage_tracking(
    gateway: Server, fake: FakeOpenAI, endpoint_name: str
):
    rk.recorded_endpoint(gateway, endpoint_name, fake, usage=False, tables=False)
    assert ask(gateway, endpoint_name, {}).status_code == 200
    marker = ask(gateway, endpoint_name, {})
    time.sleep(1)  # the writer runs every time something is queued; give it the chance
    count = "SELECT count(*) AS n FROM usage_records WHERE endpoint_name = :e"
    assert marker.status_code == 200
    assert rk.query_rows(rk.database_url_of(gateway), count, e=endpoint_name) == [{"n": 0}]


def _insert(server: Server, rows: list[dict]) -> None:
    """Usage rows of other users and other times, as a server would have written them."""
    from sqlalchemy import create_engine, insert

    from modelyard.store.models import UsageRow

    engine = create_engine(rk.database_url_of(server))
    with engine.begin() as conn:
        conn.execute(insert(UsageRow.__table__), rows)
    engine.dispose()


def _row(endpoint: str, user: str, when: str, prompt: int, completion: int, **extra) -> dict:
    at = int(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp() * 1000)
    return {
        "request_id": f"r-{uuid.uuid4().hex}", "client_request_id": None, "usage_context": None,
        "endpoint_name": endpoint, "endpoint_id": "0" * 32, "served_entity": "fake",
        "requester": user, "request_time_ms": at, "status_code": 200, "error_code": None,
        "prompt_tokens": prompt, "completion_tokens": completion, "latency_ms": 100, **extra,
    }  # fmt: skip


def test_usage_command_prints_totals_with_filters(gateway: Server, endpoint_name: str):
    rows = [
        _row(endpoint_name, "alice", "2026-01-01T10:00", 10, 20, latency_ms=100),
        _row(endpoint_name, "alice", "2026-01-01T11:00", 30, 40, latency_ms=300),
        _row(endpoint_name, "alice", "2026-01-02T09:00", 1, 2, status_code=429,
             error_code="REQUEST_LIMIT_EXCEEDED", latency_ms=200),
        _row(endpoint_name, "bob", "2026-01-01T12:00", 5, 6, latency_ms=50),
        _row("elsewhere-" + endpoint_name, "alice", "2026-01-01T10:00", 1000, 1000),
    ]  # fmt: skip
    _insert(gateway, rows)
    data = ["--data-dir", str(gateway.data_dir), "--endpoint", endpoint_name]

    result = usage(*data)
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [
        ["ENDPOINT", "USER", "REQUESTS", "ERRORS", "PROMPT_TOKENS", "COMPLETION_TOKENS",
         "P50_MS", "MEAN_MS"],
        [endpoint_name, "alice", "3", "1", "41", "62", "200", "200"],
        [endpoint_name, "bob", "1", "0", "5", "6", "50", "50"],
        ["TOTAL", "4", "1", "46", "68", "162"],
    ]  # fmt: skip

    result = usage(*data, "--user", "alice", "--since", "2026-01-01T10:30", "--until", "2026-01-02")
    assert table(result.stdout)[1:] == [
        [endpoint_name, "alice", "1", "0", "30", "40", "300", "300"]
    ]

    result = usage(*data, "--user", "bob", "--raw")
    lines = table(result.stdout)
    assert lines[0][:3] == ["TIME", "REQUEST_ID", "ENDPOINT"]
    assert lines[1][:4] == ["2026-01-01T12:00:00.000Z", rows[3]["request_id"], endpoint_name, "bob"]
    assert len(lines) == 2

    # An age: only what happened in the last hour (nothing of 2026-01).
    result = usage(*data, "--since", "1h")
    assert result.returncode == 0 and table(result.stdout)[1:] == []


def test_usage_command_reads_postgresql(tmp_path: Path, fake: FakeOpenAI):
    with pg_database() as url:
        server = start_server(tmp_path / "pg", *rk.server_args(url))
        try:
            rk.recorded_endpoint(server, "pg-usage", fake, tables=False)
            outcomes = rk.burst(server, "pg-usage", 30, concurrency=10)
            assert all(o.complete for o in outcomes)
        finally:
            server.stop()  # SIGTERM: the queued rows are written before it exits
        result = usage("--database-url", url, "--endpoint", "pg-usage", "--user", "admin")
    assert result.returncode == 0, result.stderr
    lines = table(result.stdout)
    assert lines[1][:4] == ["pg-usage", "admin", "30", "0"]
    # "hello <i>" is two words and "You said: hello <i>" four: the fake counts words.
    assert lines[1][4:6] == ["60", "120"]


def test_usage_command_explains_a_missing_database(tmp_path: Path):
    result = usage("--data-dir", str(tmp_path / "nothing-here"))
    assert result.returncode == 1
    assert "No database in" in result.stderr and "--database-url" in result.stderr


def test_times_are_iso_or_ages():
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    noon = int(now.timestamp() * 1000)
    assert parse_time("2026-11-26T12:00", now=now) == noon
    assert parse_time("2026-11-26T13:00+01:00", now=now) == noon
    assert parse_time("90m", now=now) == noon - 90 * 60_000
    assert parse_time("2d", now=now) == noon - 2 * 86_400_000
    with pytest.raises(Exception, match="neither a time"):
        parse_time("yesterday")

"""What happened to each query, for metrics, usage tracking and inference tables.

`record()` counts the query in the metrics and queues its rows; ONE writer task takes what is
queued and inserts it in batches (a transaction each, off the event loop). Nothing on the
request path waits for the database; only a full queue with policy `wait` makes it wait for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

from modelyard.gateway.metrics import Metrics
from modelyard.store.usage import payload_table_name

log = logging.getLogger("modelyard.recorder")

WhenFull = Literal["wait", "drop"]
BATCH_ROWS = 500
_RETRY_DELAYS = (0.2, 1.0, 3.0)  # seconds before the 2nd, 3rd and 4th attempt at a batch


@dataclass
class QueryRecord:
    """One request, filled in as it goes and handed to the recorder when it is over."""

    request_id: str
    endpoint_name: str
    endpoint_id: str
    requester: str
    started_ms: int
    request: dict[str, Any]  # the request as the client sent it (after input guardrails)
    client_request_id: str | None = None
    usage_context: dict[str, Any] | None = None
    served_entity: str | None = None
    status: int = 200
    error: str | None = None
    error_code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    response: dict[str, Any] | None = None  # a streamed answer assembled into one body
    extra: dict[str, Any] = field(default_factory=dict)


class RecordSink(Protocol):
    """Where batches go (store/usage.py `RecordWriter`); called in a worker thread."""

    def write(self, usage: list[dict[str, Any]], payloads: dict[str, list[dict]]) -> None: ...


@dataclass(frozen=True)
class _Rows:
    """One query's rows: its usage row and/or (payload table, payload row)."""

    usage: dict[str, Any] | None
    payload: tuple[str, dict[str, Any]] | None

    def kinds(self) -> list[str]:
        return [k for k, v in (("usage", self.usage), ("payload", self.payload)) if v]


class Recorder:
    """Metrics for every query; usage and payload rows for endpoints that turned them on."""

    def __init__(
        self,
        sink: RecordSink | None = None,
        metrics: Metrics | None = None,
        *,
        queue_size: int = 10_000,
        when_full: WhenFull = "wait",
    ) -> None:
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.when_full = when_full
        self._queue: asyncio.Queue[_Rows] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.metrics.watch_queue(self._queue.qsize, queue_size, when_full)

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        if self.sink is not None and self._writer is None:
            self._writer = asyncio.create_task(self._write_forever(), name="modelyard-recorder")

    def keeps_payloads(self, ai_gateway: dict[str, Any] | None) -> bool:
        """Whether the endpoint's answers are written to an inference table (so worth keeping)."""
        return self.sink is not None and _tables_on(ai_gateway or {})

    async def record(self, ai_gateway: dict[str, Any] | None, record: QueryRecord) -> None:
        """Count `record` and queue its rows; waits only if the queue is full and policy is wait."""
        self.metrics.observe(record)
        rows = rows_for(ai_gateway or {}, record)
        if rows is None or self.sink is None:
            return
        if self._closed:
            # After close nothing drains the queue: a late query must not wait on it forever.
            log.warning(
                "query %s ended after the recorder closed; its rows are dropped", record.request_id
            )
            for kind in rows.kinds():
                self.metrics.dropped.labels(kind).inc()
            return
        if self.when_full == "wait":
            await self._queue.put(rows)
            return
        try:
            self._queue.put_nowait(rows)
        except asyncio.QueueFull:
            for kind in rows.kinds():
                self.metrics.dropped.labels(kind).inc()

    async def close(self) -> None:
        """Write everything still queued (SIGTERM), then stop the writer."""
        if self._writer is None:
            return
        if self._queue.qsize():
            log.info("writing %d queued usage/payload records before exit", self._queue.qsize())
        await self._queue.join()  # rows queued meanwhile are waited for too
        self._closed = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_ROWS:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Rows]) -> None:
        assert self.sink is not None
        usage = [rows.usage for rows in batch if rows.usage]
        payloads: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rows in batch:
            if rows.payload:
                payloads[rows.payload[0]].append(rows.payload[1])
        counts = {"usage": len(usage), "payload": sum(map(len, payloads.values()))}
        for delay in (*_RETRY_DELAYS, None):
            try:
                await asyncio.to_thread(self.sink.write, usage, dict(payloads))
            except Exception:
                if delay is None:
                    log.exception("lost %s usage/payload rows: the database refused them", counts)
                    _count(self.metrics.failed, counts)
                    return
                log.warning("writing usage/payload rows failed; retrying in %gs", delay)
                await asyncio.sleep(delay)
            else:
                _count(self.metrics.written, counts)
                return


def _count(counter: Any, counts: dict[str, int]) -> None:
    for kind, n in counts.items():
        if n:
            counter.labels(kind).inc(n)


def rows_for(ai_gateway: dict[str, Any], record: QueryRecord) -> _Rows | None:
    """The rows `record` needs under the endpoint's `ai_gateway` config; None for none."""
    usage = payload = None
    if (ai_gateway.get("usage_tracking_config") or {}).get("enabled"):
        usage = usage_row(record)
    if _tables_on(ai_gateway):
        tables = ai_gateway["inference_table_config"]
        name = payload_table_name(
            tables.get("catalog_name") or "main",
            tables.get("schema_name") or "default",
            tables.get("table_name_prefix") or record.endpoint_name,
        )
        payload = (name, payload_row(record))
    return None if usage is None and payload is None else _Rows(usage, payload)


def _tables_on(ai_gateway: dict[str, Any]) -> bool:
    return bool((ai_gateway.get("inference_table_config") or {}).get("enabled"))


def usage_row(record: QueryRecord) -> dict[str, Any]:
    """The `usage_records` row of one query."""
    return {
        "request_id": record.request_id,
        "client_request_id": record.client_request_id,
        "usage_context": record.usage_context,
        "endpoint_name": record.endpoint_name,
        "endpoint_id": record.endpoint_id,
        "served_entity": record.served_entity,
        "requester": record.requester,
        "request_time_ms": record.started_ms,
        "status_code": record.status,
        "error_code": record.error_code,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "latency_ms": record.latency_ms,
    }


def payload_row(record: QueryRecord) -> dict[str, Any]:
    """The inference-table row of one query, in Databricks' column names."""
    when = datetime.fromtimestamp(record.started_ms / 1000, tz=UTC)
    if record.error is not None:
        response: dict[str, Any] | None = {
            "error_code": record.error_code,
            "message": record.error,
        }
    else:
        response = record.response
    return {
        "request_date": when.date(),
        "databricks_request_id": record.request_id,
        "client_request_id": record.client_request_id,
        "request_time": when,
        "status_code": record.status,
        "sampling_fraction": 1.0,
        "execution_duration_ms": record.latency_ms,
        "request": orjson.dumps(record.request).decode(),
        "response": None if response is None else orjson.dumps(response).decode(),
        "served_entity_id": record.served_entity,
        "logging_error_codes": [],
        "requester": record.requester,
    }

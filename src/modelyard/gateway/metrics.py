"""Prometheus metrics of one server: requests, latency, tokens, rate-limit refusals, recorder."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from modelyard.gateway.limits import LimiterStats
    from modelyard.gateway.recording import QueryRecord

# The `_created` timestamp series double every counter's lines and tell a scraper nothing.
disable_created_metrics()

RATE_LIMITED = "REQUEST_LIMIT_EXCEEDED"
# LLM calls take from milliseconds (a cache, a fake) to minutes (a long generation).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The server's own registry (not prometheus_client's global one): state passed in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelyard_requests", "Queries answered, by endpoint and HTTP status.",
            ["endpoint", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "modelyard_request_latency_seconds", "Time to answer a query (a stream: to its end).",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "modelyard_prompt_tokens", "Prompt tokens, by endpoint.", ["endpoint"], registry=r
        )
        self.completion_tokens = Counter(
            "modelyard_completion_tokens", "Completion tokens, by endpoint.", ["endpoint"],
            registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "modelyard_rate_limited", "Queries refused by a rate limit (429), by endpoint.",
            ["endpoint"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "modelyard_recorder_queue_depth", "Queries waiting to be written to usage and "
            "payload tables.", registry=r,
        )  # fmt: skip
        self.queue_capacity = Gauge(
            "modelyard_recorder_queue_capacity", "Size of the recorder's queue.", registry=r
        )
        self.queue_policy = Gauge(
            "modelyard_recorder_queue_full_policy", "1 for what a full queue does: wait for "
            "room or drop rows (--record-queue-full).", ["policy"], registry=r,
        )  # fmt: skip
        self.dropped = Counter(
            "modelyard_recorder_dropped_rows", "Rows dropped because the recorder's queue was "
            "full (--record-queue-full drop), by table kind.", ["table"], registry=r,
        )  # fmt: skip
        self.written = Counter(
            "modelyard_recorder_written_rows", "Rows written, by table kind.", ["table"],
            registry=r,
        )  # fmt: skip
        self.failed = Counter(
            "modelyard_recorder_failed_rows", "Rows lost because the database refused them "
            "(after retries), by table kind.", ["table"], registry=r,
        )  # fmt: skip

    def observe(self, record: QueryRecord) -> None:
        """Count one finished query."""
        endpoint = record.endpoint_name
        self.requests.labels(endpoint, str(record.status)).inc()
        self.latency.labels(endpoint).observe(record.latency_ms / 1000)
        if record.prompt_tokens:
            self.prompt_tokens.labels(endpoint).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(endpoint).inc(record.completion_tokens)
        if record.status == 429 and record.error_code == RATE_LIMITED:
            self.rate_limited.labels(endpoint).inc()

    def watch_queue(self, depth: Callable[[], int], capacity: int, policy: str) -> None:
        """Report the recorder's queue depth at each scrape, its size and its policy."""
        self.queue_depth.set_function(lambda: float(depth()))
        self.queue_capacity.set(capacity)
        self.queue_policy.labels(policy).set(1)

    def watch_limiter(self, stats: LimiterStats) -> None:
        """Export the rate limiter's Redis state, read from `stats` at each scrape."""
        self.registry.register(_LimiterCollector(stats))

    def render(self, endpoint: str | None = None) -> bytes:
        """Prometheus text: everything, or only the series labelled with `endpoint`."""
        if endpoint is None:
            return generate_latest(self.registry)
        return generate_latest(_EndpointView(self.registry, endpoint))  # type: ignore[arg-type]


class _EndpointView:
    """A collector of another registry's series for one endpoint label."""

    def __init__(self, registry: CollectorRegistry, endpoint: str) -> None:
        self.registry = registry
        self.endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = _of_endpoint(family.samples, self.endpoint)
            if samples:
                view = Metric(family.name, family.documentation, family.type, family.unit)
                view.samples = samples
                yield view


def _of_endpoint(samples: Iterable[Sample], endpoint: str) -> list[Sample]:
    return [s for s in samples if s.labels.get("endpoint") == endpoint]


class _LimiterCollector:
    """The rate limiter's counts, which it keeps as plain ints, as Prometheus series."""

    def __init__(self, stats: LimiterStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily(
            "modelyard_rate_limit_redis_down",
            "1 while Redis, which holds the rate-limit counters, is unreachable.",
            value=int(s.redis_down),
        )
        yield CounterMetricFamily(
            "modelyard_rate_limit_redis_errors",
            "Rate-limit checks and settlements that failed because Redis was unreachable.",
            value=s.redis_errors,
        )
        yield CounterMetricFamily(
            "modelyard_rate_limit_unchecked",
            "Requests let through unchecked while Redis was down (fail open).",
            value=s.unchecked,
        )

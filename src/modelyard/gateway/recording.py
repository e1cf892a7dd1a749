"""What happened to each query, for usage tracking and inference tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    response: dict[str, Any] | None = None  # a streamed answer assembled into one body
    extra: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Until usage tracking exists, records go nowhere."""

    def record(self, endpoint_ai_gateway: dict[str, Any] | None, record: QueryRecord) -> None:
        """Queue `record` for the endpoint's usage and payload tables; never blocks a request."""

    async def close(self) -> None:
        """Write everything still queued (SIGTERM)."""

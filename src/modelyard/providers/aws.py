"""AWS plumbing for Bedrock, all of it botocore's: SigV4 signing and the event-stream decoder.

Nothing here is written by hand: a signature or a frame parser that is almost right fails
only against the real service, so both come from the library AWS maintains.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from modelyard.errors import UpstreamError
from modelyard.providers import http

SIGNING_NAME = "bedrock"  # Bedrock Runtime signs as `bedrock`, not `bedrock-runtime`
# The HTTP status each exception that ConverseStream can send inside a stream stands for
# (the statuses its non-streamed twin answers with).
_STREAM_EXCEPTION_STATUS = {
    "validationException": 400,
    "throttlingException": 429,
    "modelStreamErrorException": 424,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}


def path_label(value: str) -> str:
    """A URI path label as the AWS SDKs encode it: everything but `-._~` percent-encoded."""
    return quote(value, safe="-._~")


def signed_headers(
    url: str, body: bytes, headers: Mapping[str, str], *, key_id: str, secret: str, region: str
) -> dict[str, str]:
    """`headers` plus `X-Amz-Date` and the SigV4 `Authorization` for a POST of `body` to `url`."""
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials(key_id, secret), SIGNING_NAME, region).add_auth(request)
    return dict(request.headers.items())


@dataclass(frozen=True)
class StreamMessage:
    """One event-stream message: `:message-type` (event, exception or error) and its payload."""

    kind: str
    name: str  # the event type, the exception type, or the error code
    payload: Any


async def stream_messages(
    chunks: AsyncIterator[bytes], upstream: str
) -> AsyncIterator[StreamMessage]:
    """The messages of an `application/vnd.amazon.eventstream` body, as they arrive."""
    buffer = EventStreamBuffer()
    async with aclosing(chunks):
        async for chunk in chunks:
            buffer.add_data(chunk)
            for message in _complete(buffer, upstream):
                yield _message(message, upstream)


def _complete(buffer: EventStreamBuffer, upstream: str) -> list[EventStreamMessage]:
    try:
        return list(buffer)
    except ParserError as exc:  # a bad CRC or length: the stream is corrupt, not an answer
        raise UpstreamError(f"{upstream} sent a malformed event stream ({exc}).") from exc


def _message(message: EventStreamMessage, upstream: str) -> StreamMessage:
    headers = message.headers
    kind = str(headers.get(":message-type", "event"))
    if kind == "error":  # a service-level error: the details are in headers, not the payload
        return StreamMessage(
            kind, str(headers.get(":error-code", "")), headers.get(":error-message", "")
        )
    name = str(headers.get(":event-type" if kind == "event" else ":exception-type", ""))
    try:
        payload = orjson.loads(message.payload) if message.payload else {}
    except orjson.JSONDecodeError as exc:
        raise http.connection_error(upstream, exc) from exc
    return StreamMessage(kind, name, payload)


def stream_failure(upstream: str, message: StreamMessage) -> UpstreamError:
    """An exception or error message as the error its status stands for (throttling → 429)."""
    # Exception types are camelCase (`throttlingException`); error codes may be capitalised.
    status = _STREAM_EXCEPTION_STATUS.get(message.name[:1].lower() + message.name[1:], 500)
    text = message.payload if isinstance(message.payload, str) else ""
    if isinstance(message.payload, dict):
        text = str(message.payload.get("message") or message.payload.get("Message") or "")
    like = http.status_error(upstream, status, b"")
    return UpstreamError(
        f"{upstream} failed mid-stream with {message.name or 'an error'}: {text or '(no message)'}",
        status=like.status,
        error_code=like.error_code,
        retryable=like.retryable,
    )

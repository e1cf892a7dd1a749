"""HTTP to upstreams: one pooled session per origin, JSON calls, byte streams, SSE, error mapping.

Every provider goes through here, so a timeout, a reset or an error status means the same
thing whichever upstream it came from, and fallback can rely on `UpstreamError.retryable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import yarl

from modelyard.errors import UpstreamError, UpstreamTimeout

Json = dict[str, Any]
IDLE_KEEPALIVE_S = 4.0
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# An upstream's 4xx is passed on with its status; these are the envelope codes that go with it.
_CLIENT_ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    408: "DEADLINE_EXCEEDED",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
}


def new_session(
    *, connect_timeout: float = 10.0, limit: int = 256, keep_alive: bool = True
) -> aiohttp.ClientSession:
    """A session for one upstream, created once and kept for the life of the server.

    `keep_alive=False` opens a connection per request: for loopback upstreams, where that costs
    a fraction of a millisecond and no request can go out on a socket the server is closing.
    """
    if keep_alive:
        # Idle connections are dropped before the 5 s after which llama.cpp's server (and
        # uvicorn) close them, so a request rarely goes out on a socket being closed under it.
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=IDLE_KEEPALIVE_S)
    else:
        connector = aiohttp.TCPConnector(limit=limit, force_close=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


class SessionPool:
    """One pooled session per upstream origin (scheme, host, port), shared by every entity."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def for_url(self, url: str) -> aiohttp.ClientSession:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            session = self._sessions[origin] = new_session()
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


@dataclass(frozen=True)
class Call:
    """One upstream request: where, what, and how long to wait for it."""

    url: str
    body: Json | bytes
    headers: Mapping[str, str]
    upstream: str  # names the provider in error messages
    timeout_s: float | None = None
    # The URL is already percent-encoded and goes out byte for byte (aiohttp would otherwise
    # decode `%3A` to `:`): a signed request must send exactly the path it signed.
    encoded_url: bool = False


def _request(session: aiohttp.ClientSession, call: Call, *, streaming: bool) -> Any:
    data = call.body if isinstance(call.body, bytes) else orjson.dumps(call.body)
    # A stream may run long: the timeout bounds the wait for each piece, not the whole answer.
    timeout = (
        aiohttp.ClientTimeout(total=None, sock_read=call.timeout_s)
        if streaming
        else aiohttp.ClientTimeout(total=call.timeout_s)
    )
    headers = {"Content-Type": "application/json", **call.headers}
    url = yarl.URL(call.url, encoded=True) if call.encoded_url else call.url
    return session.post(url, data=data, headers=headers, timeout=timeout)


async def post_json(session: aiohttp.ClientSession, call: Call) -> Json:
    """POST and return the JSON answer, or raise the mapped error."""
    try:
        async with _request(session, call, streaming=False) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise status_error(call.upstream, resp.status, body)
            answer = orjson.loads(body)
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
        raise connection_error(call.upstream, exc) from exc
    if not isinstance(answer, dict):
        raise UpstreamError(f"{call.upstream} answered with JSON that is not an object.")
    return answer


async def post_stream(session: aiohttp.ClientSession, call: Call) -> AsyncIterator[bytes]:
    """POST and yield the answer's bytes as they arrive, or raise the mapped error.

    Closing the generator early closes the upstream connection, which makes the upstream stop
    generating: a client that goes away costs nothing more.
    """
    try:
        async with _request(session, call, streaming=True) as resp:
            if resp.status >= 400:
                raise status_error(call.upstream, resp.status, await resp.read())
            async for chunk in resp.content.iter_any():
                yield chunk
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise connection_error(call.upstream, exc) from exc


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: bytes

    def json(self, upstream: str) -> Any:
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError as exc:
            raise connection_error(upstream, exc) from exc


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """Server-sent events parsed from a byte stream (event name and joined data lines)."""
    async with aclosing(chunks):
        buffer = b""
        event: str | None = None
        data: list[bytes] = []
        async for chunk in chunks:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.rstrip(b"\r")
                if not line:
                    if data:
                        yield SseEvent(event, b"\n".join(data))
                    event, data = None, []
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode()
        if data:
            yield SseEvent(event, b"\n".join(data))


def upstream_message(body: bytes) -> str:
    """The most useful text of an upstream error body, whatever its shape."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]  # Google's APIs sometimes wrap the error in a list
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed.get("detail", parsed))  # `detail`: FastAPI servers
        if isinstance(err, dict):
            return str(err.get("message") or err.get("Message") or err)[:500]
        return str(err)[:500]
    return str(parsed)[:500]


def status_error(upstream: str, status: int, body: bytes) -> UpstreamError:
    """An upstream error status as ours: a 4xx keeps its status, a 5xx becomes a 502."""
    message = f"{upstream} returned HTTP {status}: {upstream_message(body)}"
    if 400 <= status < 500:
        code = _CLIENT_ERROR_CODES.get(status, "BAD_REQUEST")
        return UpstreamError(
            message, status=status, error_code=code, retryable=status in RETRYABLE_STATUSES
        )
    return UpstreamError(message, status=502, retryable=True)


def stream_error(upstream: str, error: Any) -> UpstreamError:
    """An error sent inside a stream after it started."""
    message = error.get("message", error) if isinstance(error, dict) else error
    return UpstreamError(f"{upstream} failed mid-stream: {message}")


def connection_error(upstream: str, exc: BaseException) -> UpstreamError:
    """Timeouts, resets and garbage from the upstream, as retryable gateway errors."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{upstream} did not answer in time.")
    if isinstance(exc, orjson.JSONDecodeError):
        return UpstreamError(f"{upstream} sent a response that is not valid JSON.")
    reason = type(exc).__name__
    return UpstreamError(f"Connection to {upstream} failed ({reason}).", retryable=True)

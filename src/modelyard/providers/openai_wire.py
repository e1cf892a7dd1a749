"""HTTP to any OpenAI-compatible server: JSON calls, SSE streams, and error mapping.

Shared by every provider whose upstream speaks the OpenAI wire format (the local engine,
`custom`, `openai`, ...), so each of them only says where to send and how to authenticate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import orjson

from modelyard.errors import BadRequest, UpstreamError, UpstreamTimeout

Json = dict[str, Any]
IDLE_KEEPALIVE_S = 4.0
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def new_session(
    *, connect_timeout: float = 10.0, limit: int = 256, keep_alive: bool = True
) -> aiohttp.ClientSession:
    """One session per upstream, created once and kept for the life of the provider.

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


def _post(
    session: aiohttp.ClientSession,
    url: str,
    payload: Json,
    headers: Mapping[str, str],
    timeout_s: float | None,
) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
    return session.post(
        url,
        data=orjson.dumps(payload),
        headers={**headers, "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Json,
    *,
    headers: Mapping[str, str],
    upstream: str,
    timeout_s: float | None = None,
) -> Json:
    """POST a JSON body and return the JSON answer, or raise the mapped error."""
    try:
        async with _post(session, url, payload, headers, timeout_s) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise upstream_status_error(upstream, resp.status, body)
            return orjson.loads(body)
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
        raise upstream_connection_error(upstream, exc) from exc


async def stream_sse(
    session: aiohttp.ClientSession,
    url: str,
    payload: Json,
    *,
    headers: Mapping[str, str],
    upstream: str,
    timeout_s: float | None = None,
) -> AsyncIterator[Json]:
    """POST a streaming request and yield each `data:` event as a dict until `[DONE]`.

    Leaving the generator early closes the upstream connection, which makes the upstream
    stop generating: a client that goes away costs nothing more.
    """
    try:
        async with _post(session, url, payload, headers, timeout_s) as resp:
            if resp.status >= 400:
                raise upstream_status_error(upstream, resp.status, await resp.read())
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    # Read to the end of the body so the connection goes back to the pool.
                    await resp.content.read()
                    return
                event = orjson.loads(data)
                if isinstance(event, dict) and "error" in event and "choices" not in event:
                    raise upstream_error_event(upstream, event["error"])
                yield event
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
        raise upstream_connection_error(upstream, exc) from exc


def upstream_message(body: bytes) -> str:
    """The most useful text of an upstream error body, whatever its shape."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:500]
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        return str(err)[:500]
    return str(parsed)[:500]


def upstream_status_error(upstream: str, status: int, body: bytes) -> Exception:
    """Map an upstream HTTP error to ours: its 4xx are the caller's fault, the rest are ours."""
    message = upstream_message(body)
    if status in (400, 404, 413, 422):
        return BadRequest(f"{upstream} rejected the request: {message}")
    return UpstreamError(
        f"{upstream} returned HTTP {status}: {message}",
        status=429 if status == 429 else 502,
        error_code="REQUEST_LIMIT_EXCEEDED" if status == 429 else "BAD_GATEWAY",
        retryable=status in RETRYABLE_STATUSES,
    )


def upstream_error_event(upstream: str, error: Any) -> UpstreamError:
    """An error sent inside a stream after it started."""
    message = error.get("message", error) if isinstance(error, dict) else error
    return UpstreamError(f"{upstream} failed mid-stream: {message}")


def upstream_connection_error(upstream: str, exc: BaseException) -> UpstreamError:
    """Timeouts, resets and garbage from the upstream, as retryable gateway errors."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{upstream} did not answer in time.")
    if isinstance(exc, orjson.JSONDecodeError):
        return UpstreamError(f"{upstream} sent a response that is not valid JSON.")
    reason = type(exc).__name__
    return UpstreamError(f"Connection to {upstream} failed ({reason}).", retryable=True)

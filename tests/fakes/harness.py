"""`FakeUpstream`: an aiohttp server in a background thread, for one provider's wire format.

Subclasses add the provider's routes. Each handler checks the request against the provider's
API reference with `expect`, which answers the provider's own 400 and records the violation so
the test fails even when the gateway would hide the error (`assert_clean`). `fail_next` makes
the next calls fail the ways fallback must survive: an error status, a hang, a reset.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Violation(Exception):
    """A request that does not follow the provider's API reference."""


class Refusal(Exception):
    """A valid request the provider refuses (a wrong key, say): its error, not a violation."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class FakeUpstream:
    """Subclasses implement `routes()` and `error_response(status, message)`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self._failures: deque[str] = deque()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    # -- what subclasses define -------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> web.Response:
        """The provider's own error body for `status`."""
        raise NotImplementedError

    # -- checks ---------------------------------------------------------------------------------

    def expect(self, condition: Any, message: str) -> None:
        """Record and refuse a request that breaks the API reference."""
        if not condition:
            raise Violation(message)

    async def json_body(self, request: web.Request) -> Json:
        """The request's body as the JSON object every one of these APIs wants.

        Read from the request itself, not from `requests[-1]`: calls may overlap.
        """
        self.expect(
            request.headers.get("Content-Type", "").startswith("application/json"),
            "Content-Type must be application/json",
        )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise Violation("the body is not valid JSON") from None
        self.expect(isinstance(body, dict), "the body must be a JSON object")
        return body

    def expect_fields(self, obj: Any, allowed: set[str], where: str) -> None:
        """Every key of `obj` is one the API reference documents."""
        self.expect(isinstance(obj, dict), f"{where} must be an object")
        unknown = set(obj) - allowed
        self.expect(not unknown, f"{where} has fields the API does not document: {sorted(unknown)}")

    def assert_clean(self) -> None:
        assert not self.violations, f"requests strayed from the API reference: {self.violations}"

    def fail_next(self, mode: str, times: int = 1) -> None:
        """`status:<code>`, `hang` (answer after 30 s) or `reset` (drop the connection)."""
        self._failures.extend([mode] * times)

    def reset(self) -> None:
        self.requests.clear()
        self.violations.clear()
        self._failures.clear()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(_cancel_pending(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        if self._failures:
            mode = self._failures.popleft()
            if mode.startswith("status:"):
                status = int(mode.split(":")[1])
                return self.error_response(status, f"injected failure with status {status}")
            if mode == "hang":
                await asyncio.sleep(30)
            elif mode == "reset":
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
        try:
            return await handler(request)
        except Violation as exc:
            self.violations.append(f"{request.method} {request.path}: {exc}")
            return self.error_response(400, str(exc))
        except Refusal as exc:
            return self.error_response(exc.status, str(exc))


async def _cancel_pending() -> None:
    """End handlers still running (a `hang`), so the loop closes with nothing pending."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def sse(request: web.Request, events: Iterator[tuple[str | None, Any]]) -> web.StreamResponse:
    """Stream `(event name or None, JSON data or raw str)` as server-sent events."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for event, data in events:
        payload = data if isinstance(data, str) else orjson.dumps(data).decode()
        text = (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
        await resp.write(text.encode())
    await resp.write_eof()
    return resp


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )

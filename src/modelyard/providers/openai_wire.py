"""OpenAI's streaming format: `data:` events of chunk objects, ended by `data: [DONE]`.

Shared by every provider whose upstream speaks it (the local engine, `openai`, `custom`, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from modelyard.providers.http import Json, sse_events, stream_error


async def stream_chunks(raw: AsyncIterator[bytes], upstream: str) -> AsyncIterator[Json]:
    """The chunk objects of a streamed answer's bytes (`http.post_stream`), until `[DONE]`."""
    async with aclosing(sse_events(raw)) as events:
        async for event in events:
            if event.data == b"[DONE]":
                # Read to the end of the body so the connection goes back to the pool.
                async for _ in events:
                    pass
                return
            chunk = event.json(upstream)
            if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                raise stream_error(upstream, chunk["error"])
            if isinstance(chunk, dict):
                yield chunk


async def usage_apart(chunks: AsyncIterator[Json]) -> AsyncIterator[Json]:
    """Chunks with usage moved off the last content chunk into a final chunk of its own.

    For upstreams that put `usage` on the chunk with the finish reason (and `null` on the
    others) instead of OpenAI's separate usage chunk with empty `choices`.
    """
    usage: Json | None = None
    last: Json = {}
    async with aclosing(chunks):  # a client that leaves closes the upstream stream at once
        async for chunk in chunks:
            found = chunk.pop("usage", None)
            if isinstance(found, dict):
                usage = found
            if chunk.get("choices"):
                last = chunk
                yield chunk
    if usage is not None:
        keep = {k: last[k] for k in ("id", "object", "created", "model") if k in last}
        yield {**keep, "object": "chat.completion.chunk", "choices": [], "usage": usage}

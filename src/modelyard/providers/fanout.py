"""`n` > 1 as `n` single-choice upstream calls, merged into one answer.

llama.cpp generates several choices but counts the usage of only one of them, and streams a
usage chunk per choice in the middle of the stream. Asking `n` times with `n=1` costs the same
under continuous batching (the shared prompt is cached) and gives exact usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Json = dict[str, Any]


def single_choice_payloads(payload: Json, n: int) -> list[Json]:
    """`n` copies of `payload` asking for one choice each, with distinct seeds if one was set."""
    copies = []
    for i in range(n):
        copy = {**payload, "n": 1}
        if "seed" in payload:
            copy["seed"] = payload["seed"] + i
        copies.append(copy)
    return copies


async def merged_answer(calls: list[Awaitable[Json]]) -> Json:
    """One response whose choices are the calls' choices, and whose usage adds theirs up."""
    bodies = await asyncio.gather(*calls)
    merged = bodies[0]
    merged["choices"] = [{**body["choices"][0], "index": i} for i, body in enumerate(bodies)]
    completion = sum(body.get("usage", {}).get("completion_tokens", 0) for body in bodies)
    merged["usage"] = _usage(bodies[0].get("usage", {}), completion)
    return merged


async def merged_stream(streams: list[AsyncIterator[Json]]) -> AsyncIterator[Json]:
    """Interleave the streams' chunks as they come, renumbering choices; one final usage chunk."""
    queue: asyncio.Queue[tuple[int, Json | BaseException | None]] = asyncio.Queue()
    pumps = [asyncio.create_task(_pump(i, s, queue.put)) for i, s in enumerate(streams)]
    usage: Json = {}
    completion = 0
    last: Json = {}
    try:
        running = len(streams)
        while running:
            index, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                running -= 1
                continue
            if item.get("usage"):
                usage = usage or item["usage"]
                completion += item["usage"].get("completion_tokens", 0)
            if not item.get("choices"):
                continue
            for choice in item["choices"]:
                choice["index"] = index
            item.pop("usage", None)
            last = item
            yield item
        yield {**last, "choices": [], "usage": _usage(usage, completion)}
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(
    index: int,
    stream: AsyncIterator[Json],
    put: Callable[[tuple[int, Json | BaseException | None]], Awaitable[None]],
) -> None:
    try:
        async for chunk in stream:
            await put((index, chunk))
    except Exception as exc:  # handed to the consumer, which raises it in its own task
        await put((index, exc))
        return
    await put((index, None))


def _usage(first: Json, completion_tokens: int) -> Json:
    prompt = first.get("prompt_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }

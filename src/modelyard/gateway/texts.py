"""Where the text is in requests, answers and streams, and a screen mapped over all of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from modelyard.providers.base import Json
from modelyard.schemas.query import ChatRequest, CompletionRequest, Message, QueryRequest

Screen = Callable[[str], str]


def map_request(request: QueryRequest, screen: Screen) -> QueryRequest:
    """`request` with `screen` applied to every text in it (messages, prompt or input)."""
    if isinstance(request, ChatRequest):
        return request.model_copy(
            update={"messages": [_map_message(m, screen) for m in request.messages]}
        )
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        mapped = screen(prompt) if isinstance(prompt, str) else [screen(p) for p in prompt]
        return request.model_copy(update={"prompt": mapped})
    given = request.input
    return request.model_copy(
        update={"input": screen(given) if isinstance(given, str) else [screen(t) for t in given]}
    )


def _map_message(message: Message, screen: Screen) -> Message:
    update: dict[str, Any] = {}
    if isinstance(message.content, str):
        update["content"] = screen(message.content)
    elif message.content is not None:
        update["content"] = [p.model_copy(update={"text": screen(p.text)}) for p in message.content]
    if message.tool_calls:
        update["tool_calls"] = [
            call.model_copy(
                update={
                    "function": call.function.model_copy(
                        update={"arguments": map_arguments(call.function.arguments, screen)}
                    )
                }
            )
            for call in message.tool_calls
        ]
    return message.model_copy(update=update)


def request_texts(request: QueryRequest) -> tuple[str, str]:
    """(what the safety judge reads, what the topic judge reads)."""
    if isinstance(request, ChatRequest):
        safety = [m.text() for m in request.messages if m.role != "assistant"]
        topics = [m.text() for m in request.messages if m.role == "user"]
        return "\n\n".join(safety), "\n\n".join(topics)
    if isinstance(request, CompletionRequest):
        prompt = request.prompt if isinstance(request.prompt, str) else "\n\n".join(request.prompt)
        return prompt, prompt
    return "", ""  # embeddings: nothing is asked of a model, so nothing to judge


def map_arguments(arguments: str, screen: Screen) -> str:
    """Tool-call arguments with each JSON string (and integer) value screened on its own."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return screen(arguments)
    mapped = _map_json(value, screen)
    return arguments if mapped == value else orjson.dumps(mapped).decode()


def _map_json(value: Any, screen: Screen) -> Any:
    if isinstance(value, str):
        return screen(value)
    if isinstance(value, dict):
        return {key: _map_json(item, screen) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_json(item, screen) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        screened = screen(str(value))  # a card number sent as a JSON number
        return value if screened == str(value) else screened
    return value


def map_body(body: Json, screen: Screen) -> Json:
    """An answer with `screen` applied to each choice's content, text and tool-call arguments."""
    choices = []
    for choice in body.get("choices") or ():
        choice = dict(choice)
        if isinstance(choice.get("text"), str):
            choice["text"] = screen(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            message = dict(message)
            if isinstance(message.get("content"), str):
                message["content"] = screen(message["content"])
            if message.get("tool_calls"):
                message["tool_calls"] = [_map_call(c, screen) for c in message["tool_calls"]]
            choice["message"] = message
        choices.append(choice)
    return {**body, "choices": choices} if "choices" in body else body


def _map_call(call: Json, screen: Screen) -> Json:
    function = call.get("function") or {}
    arguments = map_arguments(function.get("arguments") or "", screen)
    return {**call, "function": {**function, "arguments": arguments}}


def body_texts(body: Json) -> list[str]:
    """Each choice's content (or completions text): what output judges read."""
    texts = []
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        text = choice.get("text") if "text" in choice else message.get("content")
        if isinstance(text, str) and text:
            texts.append(text)
    return texts


def rechunk(body: Json, first: Json) -> list[Json]:
    """The chunks of a stream that answers `body`, stamped like the stream's `first` chunk."""
    base = {k: v for k, v in first.items() if k not in ("choices", "usage")}

    def chunk(part: Json) -> Json:
        return {**base, "choices": [part]}

    chunks: list[Json] = []
    for choice in body.get("choices") or ():
        index, finish = choice.get("index", 0), choice.get("finish_reason")
        if "message" not in choice:  # completions
            text = choice.get("text") or ""
            chunks.append(chunk({"index": index, "text": text, "finish_reason": finish}))
            continue
        message = choice["message"]
        delta: Json = {"role": "assistant", "content": message.get("content") or ""}
        chunks.append(chunk({"index": index, "delta": delta, "finish_reason": None}))
        calls = [{"index": i, **call} for i, call in enumerate(message.get("tool_calls") or ())]
        if calls:
            delta = {"tool_calls": calls}
            chunks.append(chunk({"index": index, "delta": delta, "finish_reason": None}))
        chunks.append(chunk({"index": index, "delta": {}, "finish_reason": finish}))
    if body.get("usage"):
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks

"""One query, top to bottom: authenticate, parse, find the endpoint, route, call the provider."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from modelyard.errors import BadRequest, ModelyardError, Unavailable, UpstreamError
from modelyard.gateway.auth import Authenticator
from modelyard.gateway.endpoints import EndpointRegistry, LiveEntity
from modelyard.providers.base import Json
from modelyard.schemas.query import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    QueryRequest,
    Task,
)
from modelyard.schemas.validation import describe_validation_error

log = logging.getLogger("modelyard.gateway")

_REQUEST_MODELS: dict[Task, type[QueryRequest]] = {
    Task.CHAT: ChatRequest,
    Task.COMPLETIONS: CompletionRequest,
    Task.EMBEDDINGS: EmbeddingRequest,
}


@dataclass
class Answer:
    """What the HTTP layer renders: a JSON body, or a stream of chunks."""

    served_entity: str
    body: Json | None = None
    stream: AsyncIterator[Json] | None = None


class QueryService:
    """Serves queries from the in-memory endpoint registry and token cache."""

    def __init__(self, endpoints: EndpointRegistry, auth: Authenticator) -> None:
        self.endpoints = endpoints
        self.auth = auth

    async def query(
        self,
        *,
        authorization: str | None,
        body: bytes,
        endpoint_name: str | None = None,
        task: Task | None = None,
    ) -> Answer:
        """Answer one request; `endpoint_name` comes from the path, or else from `model`."""
        self.auth.authenticate(authorization)
        payload = parse_json_object(body)
        task = task or detect_task(payload)
        request = parse_request(task, payload)
        name = endpoint_name or request.model
        if not name:
            raise BadRequest("Missing 'model': set it to the name of the serving endpoint.")
        endpoint = self.endpoints.get(name)
        if not endpoint.accepts(task):
            raise BadRequest(
                f"Endpoint '{name}' serves {endpoint.task} requests; this is a {task} request."
            )
        failure: ModelyardError | None = None
        for entity in endpoint.attempts():
            readiness = entity.readiness()
            if not readiness.ready:
                failure = Unavailable(
                    f"Endpoint '{name}' is not ready: "
                    f"{readiness.message or readiness.deployment}. Retry in a few seconds."
                )
                continue
            try:
                return await _call(entity, task, request)
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                # Fallback: the next entity gets the request; the last failure is the answer.
                log.warning("served entity %s of %s failed: %s", entity.name, name, exc.message)
                failure = exc
        assert failure is not None
        raise failure


async def _call(entity: LiveEntity, task: Task, request: QueryRequest) -> Answer:
    provider = entity.provider
    if isinstance(request, EmbeddingRequest):
        return Answer(entity.name, body=await provider.embeddings(request))
    if isinstance(request, ChatRequest):
        if request.stream:
            return Answer(
                entity.name, stream=await _started(provider.stream_chat(request), request)
            )
        return Answer(entity.name, body=await provider.chat(request))
    if request.stream:
        return Answer(
            entity.name, stream=await _started(provider.stream_completions(request), request)
        )
    return Answer(entity.name, body=await provider.completions(request))


async def _started(
    chunks: AsyncIterator[Json],
    request: ChatRequest | CompletionRequest,
) -> AsyncIterator[Json]:
    """Wait for the first chunk, so failures before the stream starts are plain HTTP errors."""
    first = await anext(chunks)
    return _client_view(first, chunks, include_usage=request.include_usage)


async def _client_view(
    first: Json,
    rest: AsyncIterator[Json],
    *,
    include_usage: bool,
) -> AsyncIterator[Json]:
    # Providers are always asked for usage (for accounting); the client sees it only if asked.
    # One `id` and `created` for the whole stream (llama.cpp stamps each chunk with its time).
    pinned = {key: first[key] for key in ("id", "created") if key in first}
    try:
        chunk: Json | None = first
        while chunk is not None:
            chunk.update(pinned)
            if include_usage or chunk.get("choices") or "usage" not in chunk:
                if not include_usage:
                    chunk.pop("usage", None)
                yield chunk
            chunk = await anext(rest, None)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    if not body.strip():
        raise BadRequest("The request body is empty; send a JSON object.", error_code="BAD_REQUEST")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"Malformed JSON in request body: {exc}", error_code="BAD_REQUEST"
        ) from exc
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.", error_code="BAD_REQUEST")
    return payload


def detect_task(payload: dict[str, Any]) -> Task:
    """Which kind of request an invocations body is, by its defining field."""
    if "messages" in payload:
        return Task.CHAT
    if "prompt" in payload:
        return Task.COMPLETIONS
    if "input" in payload:
        return Task.EMBEDDINGS
    raise BadRequest(
        "Cannot tell the kind of request: a chat request needs 'messages', a completions "
        "request 'prompt', an embeddings request 'input'."
    )


def parse_request(task: Task, payload: dict[str, Any]) -> QueryRequest:
    """Validate once at the edge; everything downstream receives a valid request."""
    try:
        return _REQUEST_MODELS[task].model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from exc

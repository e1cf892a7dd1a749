"""One query, top to bottom: authenticate, parse, find the endpoint, route, call the provider."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from modelyard.errors import BadRequest, ModelyardError, Unavailable, UpstreamError
from modelyard.gateway.access import AccessControl, Level
from modelyard.gateway.assemble import assemble_stream
from modelyard.gateway.auth import Authenticator
from modelyard.gateway.endpoints import EndpointRegistry, LiveEndpoint, LiveEntity
from modelyard.gateway.guardrails import Guardrails
from modelyard.gateway.limits import RateLimiter, Reservation
from modelyard.gateway.recording import QueryRecord, Recorder
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
    """Serves queries from memory: endpoints, tokens, permissions and limits are all cached."""

    def __init__(
        self,
        endpoints: EndpointRegistry,
        auth: Authenticator,
        *,
        access: AccessControl | None = None,
        limits: RateLimiter | None = None,
        guardrails: Guardrails | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.auth = auth
        self.access = access or AccessControl()
        self.limits = limits or RateLimiter()
        self.guardrails = guardrails or Guardrails()
        self.recorder = recorder or Recorder()

    async def query(
        self,
        *,
        authorization: str | None,
        body: bytes,
        endpoint_name: str | None = None,
        task: Task | None = None,
        request_id: str = "",
    ) -> Answer:
        """Answer one request; `endpoint_name` comes from the path, or else from `model`."""
        started = time.time()
        principal = self.auth.authenticate(authorization)
        payload = parse_json_object(body)
        task = task or detect_task(payload)
        request = parse_request(task, payload)
        name = endpoint_name or request.model
        if not name:
            raise BadRequest("Missing 'model': set it to the name of the serving endpoint.")
        endpoint = self.endpoints.get(name)
        record = QueryRecord(
            request_id=request_id,
            endpoint_name=endpoint.name,
            endpoint_id=endpoint.record.id,
            requester=principal.user_name,
            started_ms=int(started * 1000),
            request={},  # filled once the input guardrails let it through: never what they stop
            client_request_id=request.client_request_id,
            usage_context=request.usage_context,
        )
        try:
            self.access.require(principal, endpoint, Level.CAN_QUERY)
            if not endpoint.accepts(task):
                raise BadRequest(
                    f"Endpoint '{name}' serves {endpoint.task} requests; this is a {task} request."
                )
            reservation = await self.limits.reserve(principal, endpoint, request)
        except ModelyardError as exc:
            # Refusals are requests too: usage rows and /metrics count them.
            await self._record(endpoint, record, started, exc)
            raise
        # A copy of the request and answer only where an inference table wants them.
        keep_payload = self.recorder.keeps_payloads(endpoint.record.ai_gateway)
        try:
            request = await self.guardrails.screen_input(endpoint, request)
            if keep_payload:
                record.request = request.model_dump(exclude_none=True)
            answer = await self._route(endpoint, task, request)
            record.served_entity = answer.served_entity
            if answer.body is not None:
                answer.body = await self.guardrails.screen_output(endpoint, answer.body)
            elif answer.stream is not None:
                # Waiting for the first screened chunk makes an output block a plain 400.
                screened = self.guardrails.screen_stream(endpoint, answer.stream)
                answer.stream = await _started(screened)
        except Exception as exc:
            # Whatever went wrong, the reservation is settled and the request recorded.
            error = exc if isinstance(exc, ModelyardError) else _internal_error()
            await self._finish(endpoint, reservation, record, started, error=error)
            raise
        if answer.stream is not None:
            recorded = self._recorded(
                endpoint, answer.stream, reservation, record, started, keep=keep_payload
            )
            include_usage = isinstance(request, ChatRequest | CompletionRequest) and (
                request.include_usage
            )
            answer.stream = _client_view(recorded, include_usage=include_usage)
        else:
            record.response = answer.body
            _count_usage(record, answer.body.get("usage") if answer.body else None)
            await self._finish(endpoint, reservation, record, started)
        return answer

    async def _route(self, endpoint: LiveEndpoint, task: Task, request: QueryRequest) -> Answer:
        """The traffic split's entity answers; with fallback on, the others in turn if it fails."""
        failure: ModelyardError | None = None
        for entity in endpoint.attempts():
            readiness = entity.readiness()
            if not readiness.ready:
                failure = Unavailable(
                    f"Endpoint '{endpoint.name}' is not ready: "
                    f"{readiness.message or readiness.deployment}. Retry in a few seconds."
                )
                continue
            try:
                return await _call(entity, task, request)
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                # Fallback: the next entity gets the request; the last failure is the answer.
                log.warning(
                    "served entity %s of %s failed: %s", entity.name, endpoint.name, exc.message
                )
                failure = exc
        assert failure is not None
        raise failure

    async def _recorded(
        self,
        endpoint: LiveEndpoint,
        chunks: AsyncIterator[Json],
        reservation: Reservation,
        record: QueryRecord,
        started: float,
        *,
        keep: bool,
    ) -> AsyncIterator[Json]:
        """The stream as the client gets it; settled and recorded when it ends, however.
        Chunks are kept (to store the answer assembled) only when `keep` says an inference
        table wants them; otherwise only the usage is read on the way."""
        seen: list[Json] = []
        usage: Json | None = None
        error: ModelyardError | None = None
        try:
            async for chunk in chunks:
                usage = chunk.get("usage") or usage
                if keep:
                    seen.append(chunk)
                yield chunk
        except ModelyardError as exc:
            error = exc
            raise
        finally:
            if keep:
                record.response = assemble_stream(seen)
            _count_usage(record, usage)
            await self._finish(endpoint, reservation, record, started, error=error)

    async def _finish(
        self,
        endpoint: LiveEndpoint,
        reservation: Reservation,
        record: QueryRecord,
        started: float,
        *,
        error: ModelyardError | None = None,
    ) -> None:
        ended = time.time()  # the answer's latency, not the settling's
        await reservation.settle(record.prompt_tokens + record.completion_tokens)
        await self._record(endpoint, record, started, error, ended=ended)

    async def _record(
        self,
        endpoint: LiveEndpoint,
        record: QueryRecord,
        started: float,
        error: ModelyardError | None,
        *,
        ended: float | None = None,
    ) -> None:
        record.latency_ms = int(((ended or time.time()) - started) * 1000)
        if error is not None:
            record.status, record.error = error.status, error.message
            record.error_code = error.error_code
        await self.recorder.record(endpoint.record.ai_gateway, record)


def _internal_error() -> ModelyardError:
    return ModelyardError("The server failed to handle this request; details are in its log.")


def _count_usage(record: QueryRecord, usage: Json | None) -> None:
    usage = usage or {}
    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    record.completion_tokens = int(usage.get("completion_tokens") or 0)


async def _call(entity: LiveEntity, task: Task, request: QueryRequest) -> Answer:
    provider = entity.provider
    if isinstance(request, EmbeddingRequest):
        return Answer(entity.name, body=await provider.embeddings(request))
    if isinstance(request, ChatRequest):
        if request.stream:
            return Answer(entity.name, stream=await _started(provider.stream_chat(request)))
        return Answer(entity.name, body=await provider.chat(request))
    if request.stream:
        return Answer(entity.name, stream=await _started(provider.stream_completions(request)))
    return Answer(entity.name, body=await provider.completions(request))


async def _started(chunks: AsyncIterator[Json]) -> AsyncIterator[Json]:
    """Wait for the first chunk, so failures before the stream starts are plain HTTP errors."""
    first = await anext(chunks)
    return _pinned(first, chunks)


async def _pinned(first: Json, rest: AsyncIterator[Json]) -> AsyncIterator[Json]:
    # One `id` and `created` for the whole stream (llama.cpp stamps each chunk with its time).
    pinned = {key: first[key] for key in ("id", "created") if key in first}
    try:
        chunk: Json | None = first
        while chunk is not None:
            chunk.update(pinned)
            yield chunk
            chunk = await anext(rest, None)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def _client_view(chunks: AsyncIterator[Json], *, include_usage: bool) -> AsyncIterator[Json]:
    """Providers are always asked for usage (for accounting); the client sees it only if asked."""
    async with aclosing(chunks):
        async for chunk in chunks:
            if include_usage or "usage" not in chunk:
                yield chunk
            elif chunk.get("choices"):
                yield {k: v for k, v in chunk.items() if k != "usage"}


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

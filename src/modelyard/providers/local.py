"""The local model: a llama.cpp engine in a supervised worker process, spoken to over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

import aiohttp

from modelyard.engine.catalog import CATALOG
from modelyard.engine.model_store import ModelStore
from modelyard.engine.supervisor import EngineSpec, EngineSupervisor, EngineWorker
from modelyard.errors import BadRequest, Unavailable
from modelyard.providers import fanout, http, openai_wire
from modelyard.providers.base import Json, Provider, Readiness
from modelyard.schemas.endpoints import ServedEntityInput
from modelyard.schemas.query import GATEWAY_ONLY_FIELDS, ChatRequest, CompletionRequest, Task
from modelyard.settings import Settings

# Engine bookkeeping that is no business of the client.
_ENGINE_ONLY_KEYS = ("timings", "system_fingerprint")


class LocalProvider(Provider):
    """Forwards OpenAI-shaped requests to the model's worker; its state is the entity's state."""

    tasks: ClassVar[frozenset[Task]] = frozenset({Task.CHAT, Task.COMPLETIONS})

    def __init__(
        self, worker: EngineWorker, session: aiohttp.ClientSession, foundation_model: dict[str, str]
    ) -> None:
        self.worker = worker
        self.model_name = worker.spec.model_name
        self._session = session
        self._foundation_model = foundation_model
        self._upstream = f"local model '{self.model_name}'"

    def readiness(self) -> Readiness:
        w = self.worker
        return Readiness(w.state.value, w.message, settled=w.ever_ready)

    def entity_fields(self) -> Json:
        return {"foundation_model": self._foundation_model}

    async def chat(self, request: ChatRequest) -> Json:
        return await self._answer("/v1/chat/completions", self._chat_payload(request))

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Json]:
        # llama.cpp sends the role only with the first token's chunk, and drops it when that
        # token is half a UTF-8 character (an emoji): add it to each choice's first delta.
        roled: set[int] = set()
        async for chunk in self._stream("/v1/chat/completions", self._chat_payload(request)):
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) not in roled:
                    roled.add(choice.get("index", 0))
                    choice.setdefault("delta", {}).setdefault("role", "assistant")
            yield chunk

    async def completions(self, request: CompletionRequest) -> Json:
        return await self._answer("/v1/completions", self._payload(request))

    def stream_completions(self, request: CompletionRequest) -> AsyncIterator[Json]:
        return self._stream("/v1/completions", self._payload(request))

    async def _answer(self, path: str, payload: Json) -> Json:
        n = payload.get("n", 1)
        if n > 1:
            return await fanout.merged_answer(
                [self._post(path, p) for p in fanout.single_choice_payloads(payload, n)]
            )
        return await self._post(path, payload)

    async def _post(self, path: str, payload: Json) -> Json:
        return self._clean(await http.post_json(self._session, self._call(path, payload)))

    def _stream(self, path: str, payload: Json) -> AsyncIterator[Json]:
        # Always ask for usage so the gateway can account for it; it drops it if not asked.
        payload["stream_options"] = {"include_usage": True}
        n = payload.get("n", 1)
        if n > 1:
            return fanout.merged_stream(
                [self._stream_one(path, p) for p in fanout.single_choice_payloads(payload, n)]
            )
        return self._stream_one(path, payload)

    async def _stream_one(self, path: str, payload: Json) -> AsyncIterator[Json]:
        raw = http.post_stream(self._session, self._call(path, payload))
        async for chunk in openai_wire.stream_chunks(raw, self._upstream):
            yield self._clean(chunk)

    def _call(self, path: str, payload: Json) -> http.Call:
        base = self.worker.base_url
        if base is None:
            w = self.worker
            raise Unavailable(
                f"Model '{self.model_name}' is not ready ({w.message or w.state.value}); "
                "retry in a few seconds."
            )
        headers = {"Authorization": f"Bearer {self.worker.secret}"}
        return http.Call(base + path, payload, headers, self._upstream)

    def _payload(self, request: ChatRequest | CompletionRequest) -> dict[str, Any]:
        payload = request.model_dump(exclude_none=True, exclude=GATEWAY_ONLY_FIELDS)
        payload.pop("max_completion_tokens", None)
        if request.extra_params:
            payload.update(request.extra_params)
        payload["model"] = self.model_name
        return payload

    def _chat_payload(self, request: ChatRequest) -> dict[str, Any]:
        payload = self._payload(request)
        # The GGUF chat templates want string content: join text parts.
        for message, original in zip(payload["messages"], request.messages, strict=True):
            if isinstance(original.content, list):
                message["content"] = original.text()
        return payload

    def _clean(self, body: Json) -> Json:
        for key in _ENGINE_ONLY_KEYS:
            body.pop(key, None)
        body["model"] = self.model_name
        return body


class LocalModels:
    """Builds providers for local served entities and keeps one worker and session per model."""

    kind = "local"

    def __init__(
        self, supervisor: EngineSupervisor, model_store: ModelStore, settings: Settings
    ) -> None:
        self._supervisor = supervisor
        self._model_store = model_store
        self._settings = settings
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def validate(self, entity: ServedEntityInput) -> None:
        """A local entity must name a pulled model or one the catalog can pull."""
        name = entity.entity_name or ""
        if name in CATALOG or self._model_store.get(name) is not None:
            return
        raise BadRequest(
            f"No local model named '{name}'. Pull it first with `modelyard models pull "
            f"<path, URL or hf://owner/repo/file.gguf> --name {name}`; pulled models are "
            "listed by `modelyard models list`."
        )

    def task(self, entity: ServedEntityInput) -> Task:
        return Task.CHAT

    def build(self, entity: ServedEntityInput) -> LocalProvider:
        name = entity.entity_name or ""
        spec = EngineSpec(
            model_name=name,
            model_path=None,
            parallel=self._settings.engine_parallel,
            ctx_per_slot=self._settings.engine_ctx_per_slot,
            threads=self._settings.engine_threads,
        )
        worker = self._supervisor.ensure(spec)
        session = self._sessions.get(name)
        if session is None:
            # The engine's HTTP server resets pooled connections now and then (seen as 502s
            # under test); a fresh loopback connection per request costs ~0.1 ms and cannot.
            session = self._sessions[name] = http.new_session(keep_alive=False)
        return LocalProvider(worker, session, self._describe(name))

    def _describe(self, name: str) -> dict[str, str]:
        known = self._model_store.get(name) or CATALOG.get(name)
        return {
            "name": name,
            "display_name": known.display_name if known else name,
            "description": known.description if known else "",
        }

    async def prune(self, in_use: Iterable[Provider]) -> None:
        """Stop the workers of models no endpoint serves any more."""
        wanted = {p.model_name for p in in_use if isinstance(p, LocalProvider)}
        for name in [n for n in self._sessions if n not in wanted]:
            await self._sessions.pop(name).close()
            await self._supervisor.stop(name)

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        await self._supervisor.close()

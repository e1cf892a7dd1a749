"""Creating, changing and deleting serving endpoints: validate, persist, then swap the live copy."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from modelyard.control.plaintext import REDACTED, Box, restore_redacted, seal_plaintexts
from modelyard.errors import AlreadyExists, BadRequest, ModelyardError, NotFound
from modelyard.gateway.endpoints import EndpointRegistry, LiveEndpoint, LiveEntity
from modelyard.providers import ProviderRegistry
from modelyard.schemas.endpoints import (
    AiGateway,
    EndpointCoreConfig,
    EndpointCreate,
    RateLimit,
    TagsPatch,
)
from modelyard.store import EndpointRecord, Store, StoreConflict

log = logging.getLogger("modelyard.endpoints")


def _now_ms() -> int:
    return int(time.time() * 1000)


class EndpointService:
    """The one way endpoints change; keeps the store and the in-memory registry in step."""

    def __init__(
        self,
        store: Store,
        registry: EndpointRegistry,
        providers: ProviderRegistry,
        box: Box,
        *,
        gateway_checks: Sequence[Callable[[AiGateway | None], None]] = (),
    ) -> None:
        self.store = store
        self.registry = registry
        self.providers = providers
        self.box = box
        # Checks of an ai_gateway block that need server settings (e.g. the guardrail judge).
        self.gateway_checks = tuple(gateway_checks)
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Build the live registry from the store (server start)."""
        for record in await asyncio.to_thread(self.store.list_endpoints):
            self.registry.put(self._live(record))

    async def reload(self) -> None:
        """Take in what another replica changed: new, changed and deleted endpoints."""
        async with self._lock:
            # Read under the lock: a create in between must not be taken for a deletion.
            records = {r.name: r for r in await asyncio.to_thread(self.store.list_endpoints)}
            for live in self.registry.all():
                if live.name not in records:
                    self.registry.remove(live.name)
            for record in records.values():
                live = self.registry.find(record.name)
                if live is not None and live.record == record:
                    continue
                try:
                    if live is not None and live.record.config == record.config:
                        self.registry.put(LiveEndpoint(record, live.entities))
                    else:
                        self.registry.put(self._live(record))
                except ModelyardError as exc:
                    log.error("cannot serve endpoint %s as stored: %s", record.name, exc.message)
        await self._prune()

    async def create(self, body: EndpointCreate, creator: str) -> LiveEndpoint:
        """Validate and store a new endpoint, then start serving it."""
        task, endpoint_type = self._check(body.config)
        for check in self.gateway_checks:
            check(body.ai_gateway)
        now = _now_ms()
        ai_gateway = body.ai_gateway.model_dump(exclude_none=True) if body.ai_gateway else None
        if body.rate_limits is not None:
            if ai_gateway and ai_gateway.get("rate_limits"):
                raise BadRequest(
                    "Give rate limits either in ai_gateway.rate_limits or in the legacy "
                    "top-level rate_limits, not both."
                )
            legacy = [limit.model_dump() for limit in body.rate_limits]
            ai_gateway = {**(ai_gateway or {}), "rate_limits": legacy}
        record = EndpointRecord(
            id=uuid.uuid4().hex,
            name=body.name,
            creator=creator,
            created_ms=now,
            updated_ms=now,
            config_version=1,
            task=task,
            endpoint_type=endpoint_type,
            config=seal_plaintexts(stored_config(body.config), self.box),
            ai_gateway=ai_gateway,
            tags=[t.model_dump(exclude_none=True) for t in body.tags],
            description=body.description,
            route_optimized=body.route_optimized,
        )
        async with self._lock:
            try:
                await asyncio.to_thread(self.store.insert_endpoint, record)
            except StoreConflict as exc:
                raise AlreadyExists(f"Endpoint with name '{body.name}' already exists.") from exc
            return self._install(record)

    async def update_config(self, name: str, config: EndpointCoreConfig) -> LiveEndpoint:
        """Replace the served entities and traffic split; bumps config_version."""
        config = self._keep_redacted(config, self.registry.get(name).record)
        task, endpoint_type = self._check(config)
        async with self._lock:
            current = self.registry.get(name).record
            record = _replace(
                current,
                config=seal_plaintexts(stored_config(config), self.box),
                task=task,
                endpoint_type=endpoint_type,
                config_version=current.config_version + 1,
            )
            await asyncio.to_thread(self.store.update_endpoint, record)
            live = self._install(record)
        await self._prune()
        return live

    def _keep_redacted(
        self, config: EndpointCoreConfig, current: EndpointRecord
    ) -> EndpointCoreConfig:
        """`config` with `[REDACTED]` credentials replaced by the values stored for them."""
        body = config.model_dump(exclude_none=True)
        if REDACTED not in str(body):
            return config
        body["served_entities"] = restore_redacted(
            [{**e, "name": s.resolved_name} for e, s in zip(
                body["served_entities"], config.served_entities, strict=True)],
            current.config.get("served_entities", []),
            self.box,
        )  # fmt: skip
        return EndpointCoreConfig.model_validate(body)

    async def patch_tags(self, name: str, patch: TagsPatch) -> list[dict[str, str]]:
        """Add or replace tags by key, then delete the named ones."""
        async with self._lock:
            live = self.registry.get(name)
            current = live.record
            tags = {t["key"]: t for t in current.tags}
            for tag in patch.add_tags:
                tags[tag.key] = tag.model_dump(exclude_none=True)
            for key in patch.delete_tags:
                tags.pop(key, None)
            record = _replace(current, tags=list(tags.values()))
            await asyncio.to_thread(self.store.update_endpoint, record)
            self.registry.put(LiveEndpoint(record, live.entities))
        return record.tags

    async def update_ai_gateway(self, name: str, ai_gateway: AiGateway) -> dict[str, Any]:
        """Replace the endpoint's `ai_gateway` block; returns it as now in force."""
        for check in self.gateway_checks:
            check(ai_gateway)
        async with self._lock:
            live = self.registry.get(name)
            block = ai_gateway.model_dump(exclude_none=True)
            record = _replace(live.record, ai_gateway=block or None)
            await asyncio.to_thread(self.store.update_endpoint, record)
            self.registry.put(LiveEndpoint(record, live.entities))
        return block

    async def update_rate_limits(self, name: str, limits: list[RateLimit]) -> list[dict[str, Any]]:
        """The legacy `PUT .../rate-limits`: replace `ai_gateway.rate_limits`, keep the rest."""
        rate_limits = [limit.model_dump() for limit in limits]
        async with self._lock:
            live = self.registry.get(name)
            block = {**(live.record.ai_gateway or {}), "rate_limits": rate_limits}
            if not rate_limits:
                del block["rate_limits"]
            record = _replace(live.record, ai_gateway=block or None)
            await asyncio.to_thread(self.store.update_endpoint, record)
            self.registry.put(LiveEndpoint(record, live.entities))
        return rate_limits

    async def delete(self, name: str) -> None:
        async with self._lock:
            self.registry.get(name)
            if not await asyncio.to_thread(self.store.delete_endpoint, name):
                raise NotFound(f"Endpoint with name '{name}' does not exist.")
            self.registry.remove(name)
        await self._prune()

    def _check(self, config: EndpointCoreConfig) -> tuple[str, str]:
        """Reject what cannot be served; return the endpoint's task and type."""
        names = [e.resolved_name for e in config.served_entities]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise BadRequest(f"Served entity names must be unique; repeated: {duplicates}.")
        tasks = set()
        for entity in config.served_entities:
            builder = self.providers.builder_for(entity)
            builder.validate(entity)
            tasks.add(builder.task(entity))
        if len(tasks) > 1:
            raise BadRequest(f"All served entities must have the same task; got {sorted(tasks)}.")
        _check_routes(config, names)
        local = all(e.external_model is None for e in config.served_entities)
        return tasks.pop().value, "FOUNDATION_MODEL_API" if local else "EXTERNAL_MODEL"

    def _install(self, record: EndpointRecord) -> LiveEndpoint:
        live = self._live(record)
        self.registry.put(live)
        return live

    def _live(self, record: EndpointRecord) -> LiveEndpoint:
        config = EndpointCoreConfig.model_validate(record.config)
        weights = {
            r.entity: r.traffic_percentage
            for r in (config.traffic_config.routes if config.traffic_config else [])
        }
        entities = tuple(
            LiveEntity(
                name=e.resolved_name,
                provider=self.providers.builder_for(e).build(e),
                config=e.model_dump(exclude_none=True),
                weight=weights.get(e.resolved_name, 0),
            )
            for e in config.served_entities
        )
        return LiveEndpoint(record, entities)

    async def _prune(self) -> None:
        await self.providers.prune(e.provider for ep in self.registry.all() for e in ep.entities)


def _check_routes(config: EndpointCoreConfig, names: list[str]) -> None:
    routes = config.traffic_config.routes if config.traffic_config else []
    if not routes:
        return
    unknown = [r.entity for r in routes if r.entity not in names]
    if unknown:
        raise BadRequest(f"traffic_config routes name unknown served entities: {unknown}.")
    total = sum(r.traffic_percentage for r in routes)
    if total != 100:
        raise BadRequest(f"traffic_config percentages must add up to 100; they add up to {total}.")


def stored_config(config: EndpointCoreConfig) -> dict[str, Any]:
    """The config as stored: entity names filled in and a traffic split always present."""
    entities = []
    for entity in config.served_entities:
        data = entity.model_dump(exclude_none=True)
        data["name"] = entity.resolved_name
        entities.append(data)
    if config.traffic_config and config.traffic_config.routes:
        routes = [
            {"served_entity_name": r.entity, "traffic_percentage": r.traffic_percentage}
            for r in config.traffic_config.routes
        ]
    else:
        # Unsplit: the first entity takes all traffic; the others stand by as fallbacks.
        routes = [
            {"served_entity_name": e["name"], "traffic_percentage": 100 if i == 0 else 0}
            for i, e in enumerate(entities)
        ]
    return {"served_entities": entities, "traffic_config": {"routes": routes}}


def _replace(record: EndpointRecord, **changes: Any) -> EndpointRecord:
    return replace(record, updated_ms=_now_ms(), **changes)

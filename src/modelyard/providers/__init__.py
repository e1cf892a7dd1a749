"""Providers: one module each, all behind `base.Provider`, found through `ProviderRegistry`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from modelyard.errors import BadRequest
from modelyard.providers.base import Provider
from modelyard.schemas.endpoints import ServedEntityInput
from modelyard.schemas.query import Task


class EntityBuilder(Protocol):
    """Makes providers for one kind of served entity (`local`, or an external provider name)."""

    kind: str

    def validate(self, entity: ServedEntityInput) -> None: ...
    def task(self, entity: ServedEntityInput) -> Task: ...
    def build(self, entity: ServedEntityInput) -> Provider: ...
    async def prune(self, in_use: Iterable[Provider]) -> None: ...
    async def close(self) -> None: ...


class ProviderRegistry:
    """Entity kind → builder. Adding a provider is one module plus one `register` call."""

    def __init__(self, builders: Iterable[EntityBuilder] = ()) -> None:
        self._builders: dict[str, EntityBuilder] = {}
        for builder in builders:
            self.register(builder)

    def register(self, builder: EntityBuilder) -> None:
        self._builders[builder.kind] = builder

    def builder_for(self, entity: ServedEntityInput) -> EntityBuilder:
        """The builder for `entity`, or a 400 naming the providers this server has."""
        kind = "local" if entity.external_model is None else entity.external_model.provider
        builder = self._builders.get(kind)
        if builder is None:
            known = ", ".join(sorted(k for k in self._builders if k != "local")) or "none yet"
            raise BadRequest(
                f"Unknown provider '{kind}' in served entity '{entity.resolved_name}'. "
                f"External providers available: {known}."
            )
        return builder

    async def prune(self, in_use: Iterable[Provider]) -> None:
        """Let each builder release what no endpoint uses any more."""
        providers = list(in_use)
        for builder in self._builders.values():
            await builder.prune(providers)

    async def close(self) -> None:
        for builder in self._builders.values():
            await builder.close()

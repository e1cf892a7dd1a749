"""Endpoints as the query path sees them: built once per config change, read on every request."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from modelyard.errors import NotFound
from modelyard.providers.base import Provider, Readiness
from modelyard.schemas.query import Task
from modelyard.store import EndpointRecord


@dataclass(frozen=True)
class LiveEntity:
    """A served entity with the provider that answers for it."""

    name: str
    provider: Provider
    config: dict[str, Any]
    weight: int

    def readiness(self) -> Readiness:
        return self.provider.readiness()


@dataclass(frozen=True)
class LiveEndpoint:
    """A serving endpoint ready to route: its stored record and its served entities."""

    record: EndpointRecord
    entities: tuple[LiveEntity, ...]
    _rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def task(self) -> Task:
        return Task(self.record.task)

    def accepts(self, task: Task) -> bool:
        """Whether `task` requests are served: the endpoint task, or one all entities support."""
        return task == self.task or all(task in e.provider.tasks for e in self.entities)

    @cached_property
    def routed(self) -> tuple[LiveEntity, ...]:
        """The entities that take traffic (all of them if the split gives none any)."""
        return tuple(e for e in self.entities if e.weight > 0) or self.entities

    @cached_property
    def _weights(self) -> list[int]:
        return [e.weight or 1 for e in self.routed]

    @cached_property
    def fallback_enabled(self) -> bool:
        gateway = self.record.ai_gateway or {}
        return bool((gateway.get("fallback_config") or {}).get("enabled"))

    def attempts(self) -> tuple[LiveEntity, ...]:
        """The entities to try for one request: the split's pick, then, with fallback on, the
        others in the order the config lists them."""
        first = self.pick()
        if not self.fallback_enabled:
            return (first,)
        return (first, *(e for e in self.entities if e is not first))

    def pick(self) -> LiveEntity:
        """The entity for one request, drawn by the traffic split."""
        if len(self.routed) == 1:
            return self.routed[0]
        return self._rng.choices(self.routed, weights=self._weights)[0]


class EndpointRegistry:
    """Endpoint name → LiveEndpoint, swapped whole on change so readers never see half an update."""

    def __init__(self) -> None:
        self._by_name: dict[str, LiveEndpoint] = {}

    def get(self, name: str) -> LiveEndpoint:
        live = self._by_name.get(name)
        if live is None:
            raise NotFound(f"Endpoint with name '{name}' does not exist.")
        return live

    def find(self, name: str) -> LiveEndpoint | None:
        return self._by_name.get(name)

    def all(self) -> list[LiveEndpoint]:
        return sorted(self._by_name.values(), key=lambda e: e.name)

    def put(self, live: LiveEndpoint) -> LiveEndpoint | None:
        """Install `live`, returning the endpoint it replaced."""
        old = self._by_name.get(live.name)
        self._by_name = {**self._by_name, live.name: live}
        return old

    def remove(self, name: str) -> LiveEndpoint | None:
        old = self._by_name.get(name)
        self._by_name = {k: v for k, v in self._by_name.items() if k != name}
        return old

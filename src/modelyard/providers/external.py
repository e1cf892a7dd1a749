"""What every external provider shares: its config block, credentials, sessions and timeout.

A provider module defines a `ProviderConfig` subclass (Databricks' field names) and an
`ExternalProvider` subclass that translates; `ExternalModels` builds it for served entities.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from modelyard.errors import BadRequest, Unavailable, UpstreamError
from modelyard.providers import http
from modelyard.providers.base import Json, Provider
from modelyard.schemas.endpoints import ExternalModel, ServedEntityInput
from modelyard.schemas.query import Task
from modelyard.schemas.validation import describe_validation_error
from modelyard.secrets.vault import parse_reference

DEFAULT_TIMEOUT_S = 120.0


class ProviderConfig(BaseModel):
    """A provider's config block. Each credential field also has a `<field>_plaintext` twin."""

    # A misspelt field is a config bug the user wants to hear about, not a silent default.
    model_config = ConfigDict(extra="forbid", strict=True)

    # Credential field name → whether the provider needs it.
    credentials: ClassVar[dict[str, bool]] = {}

    @model_validator(mode="after")
    def _one_form_per_credential(self) -> ProviderConfig:
        for name, required in self.credentials.items():
            reference, plaintext = getattr(self, name), getattr(self, f"{name}_plaintext")
            if reference is not None and plaintext is not None:
                raise ValueError(f"give {name} or {name}_plaintext, not both")
            if required and reference is None and plaintext is None:
                raise ValueError(
                    f"{name} is required: a secret reference like '{{{{secrets/my-scope/my-key}}}}'"
                    f" or the value itself in {name}_plaintext"
                )
            if reference is not None and parse_reference(reference) is None:
                raise ValueError(
                    f"{name} must be a secret reference of the form "
                    f"'{{{{secrets/<scope>/<key>}}}}'; put a literal value in {name}_plaintext"
                )
        return self

    def credential_fields(self) -> Iterable[tuple[ProviderConfig, str]]:
        """(block, field) for every credential field that is set, nested blocks included."""
        for name in self.credentials:
            if getattr(self, name) is not None or getattr(self, f"{name}_plaintext") is not None:
                yield self, name
        for value in self.__dict__.values():
            if isinstance(value, ProviderConfig):
                yield from value.credential_fields()

    def references(self) -> Iterable[tuple[str, tuple[str, str]]]:
        """(field, (scope, key)) for each credential given as a secret reference."""
        for block, name in self.credential_fields():
            reference = getattr(block, name)
            if reference is not None:
                yield name, parse_reference(reference)  # type: ignore[misc]


SecretLookup = Callable[[str, str], str | None]


@dataclass(frozen=True)
class ExternalContext:
    """What the server lends external providers: pooled sessions and secret lookup."""

    sessions: http.SessionPool
    lookup_secret: SecretLookup
    unseal: Callable[[str], str]  # decrypts a `*_plaintext` value as the store keeps it


class Credential:
    """One credential, read at use so a secret rotated through the API applies at once."""

    def __init__(self, field: str, config: BaseModel, context: ExternalContext) -> None:
        reference = getattr(config, field)
        plaintext = getattr(config, f"{field}_plaintext")
        self._field = field
        self._reference = parse_reference(reference) if reference else None
        self._plaintext = context.unseal(plaintext) if plaintext is not None else None
        self._lookup = context.lookup_secret

    def known_value(self) -> str | None:
        """The value if it can be had without failing (for scrubbing messages)."""
        if self._plaintext is not None:
            return self._plaintext
        return self._lookup(*self._reference) if self._reference else None

    def value(self) -> str:
        if self._plaintext is not None:
            return self._plaintext
        if self._reference is None:
            raise BadRequest(f"No {self._field} is configured for this served entity.")
        scope, key = self._reference
        value = self._lookup(scope, key)
        if value is None:
            raise Unavailable(
                f"The secret '{scope}/{key}' named by {self._field} does not exist any more; "
                "put it back with the secrets API (`databricks secrets put-secret`)."
            )
        return value


class ExternalProvider(Provider):
    """Base of the external providers: config, credentials, the upstream session and timeout."""

    kind: ClassVar[str]
    config_key: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]]

    def __init__(
        self, model: ExternalModel, config: ProviderConfig, context: ExternalContext
    ) -> None:
        self.model = model
        self.config = config
        self.context = context
        self.timeout_s = float(model.timeout_seconds or DEFAULT_TIMEOUT_S)
        self.upstream = f"{self.kind} model '{model.name}'"
        self._credentials = [
            Credential(f, block, context) for block, f in config.credential_fields()
        ]

    def credential(self, field: str, config: BaseModel | None = None) -> Credential:
        return Credential(field, config or self.config, self.context)

    def call(self, url: str, body: Json | bytes, headers: dict[str, str]) -> http.Call:
        return http.Call(url, body, headers, self.upstream, self.timeout_s)

    async def post_json(self, call: http.Call) -> Json:
        try:
            return await http.post_json(self.context.sessions.for_url(call.url), call)
        except UpstreamError as exc:
            raise self.scrubbed(exc) from None

    async def post_stream(self, call: http.Call) -> AsyncIterator[bytes]:
        chunks = http.post_stream(self.context.sessions.for_url(call.url), call)
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        except UpstreamError as exc:
            raise self.scrubbed(exc) from None

    def scrubbed(self, exc: UpstreamError) -> UpstreamError:
        """`exc` without this entity's credentials in its message (upstreams echo bad keys)."""
        message = exc.message
        for credential in self._credentials:
            secret = credential.known_value()
            if secret and len(secret) >= 4:
                message = message.replace(secret, "[REDACTED]")
        if message != exc.message:
            exc.message = message
            exc.args = (message,)
        return exc

    async def sse(self, call: http.Call) -> AsyncIterator[tuple[str | None, Any]]:
        """(event name, parsed JSON data) for each server-sent event of the answer."""
        async for event in http.sse_events(self.post_stream(call)):
            yield event.event, event.json(self.upstream)

    @classmethod
    def check(cls, model: ExternalModel, config: ProviderConfig) -> None:
        """Provider-specific checks beyond the config model (override where needed)."""


class ExternalModels:
    """Builds providers of one external kind for served entities."""

    def __init__(self, provider: type[ExternalProvider], context: ExternalContext) -> None:
        self.kind = provider.kind
        self._provider = provider
        self._context = context

    def validate(self, entity: ServedEntityInput) -> None:
        """Reject a config the provider cannot be built from, saying which field to fix."""
        model = _external(entity)
        self.task(entity)
        config = self._config(model)
        for field, (scope, key) in config.references():
            if self._context.lookup_secret(scope, key) is None:
                raise BadRequest(
                    f"The secret '{scope}/{key}' named by {self._provider.config_key}.{field} "
                    "does not exist. Create it first with the secrets API "
                    f"(`databricks secrets put-secret {scope} {key}`)."
                )
        self._provider.check(model, config)

    def task(self, entity: ServedEntityInput) -> Task:
        model = _external(entity)
        try:
            task = Task(model.task)
        except ValueError:
            raise BadRequest(
                f"external_model.task '{model.task}' is not a task; use one of "
                f"{', '.join(t.value for t in Task)}."
            ) from None
        if task not in self._provider.tasks:
            supported = ", ".join(sorted(t.value for t in self._provider.tasks))
            raise BadRequest(
                f"Provider '{self.kind}' does not serve {task.value}; it serves {supported}."
            )
        return task

    def build(self, entity: ServedEntityInput) -> ExternalProvider:
        model = _external(entity)
        return self._provider(model, self._config(model), self._context)

    def _config(self, model: ExternalModel) -> ProviderConfig:
        key = self._provider.config_key
        block = getattr(model, key, None)
        if block is None:
            raise BadRequest(f"Provider '{self.kind}' needs external_model.{key}.")
        try:
            return self._provider.config_model.model_validate(block)
        except ValidationError as exc:
            detail = describe_validation_error(exc).removeprefix("Invalid request: ")
            # Not chained: pydantic's own text echoes the values, and a key may be among them.
            raise BadRequest(f"Invalid external_model.{key}: {detail}") from None

    async def prune(self, in_use: Iterable[Provider]) -> None:
        """Nothing to release: sessions are per upstream and live as long as the server."""

    async def close(self) -> None:
        """Sessions belong to the shared pool, closed by the runtime."""


def _external(entity: ServedEntityInput) -> ExternalModel:
    assert entity.external_model is not None
    return entity.external_model

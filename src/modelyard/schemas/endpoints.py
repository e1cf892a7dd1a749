"""Endpoint management bodies (API.md section 4), validated before anything is stored."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

ENDPOINT_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,63}$"


class _Body(BaseModel):
    # The SDK and mlflow send fields we have no use for (workload sizes, instance profiles):
    # accept and keep them so a GET shows what was sent.
    model_config = ConfigDict(extra="allow", strict=True)


class ExternalModel(_Body):
    provider: StrictStr
    name: StrictStr
    task: StrictStr
    # Ours: how long to wait for the provider (a stream: for each piece) before giving up or
    # falling back to the next served entity.
    timeout_seconds: Annotated[int | float, Field(gt=0, le=3600)] | None = None


class ServedEntityInput(_Body):
    name: StrictStr | None = Field(default=None, pattern=ENDPOINT_NAME_PATTERN)
    entity_name: StrictStr | None = None
    entity_version: StrictStr | None = None
    external_model: ExternalModel | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ServedEntityInput:
        if (self.entity_name is None) == (self.external_model is None):
            raise ValueError(
                "a served entity needs exactly one of entity_name (a local model, "
                "e.g. 'smollm2-135m-instruct') or external_model"
            )
        return self

    @property
    def resolved_name(self) -> str:
        """The entity's name: given, or derived from what it serves, as Databricks does."""
        if self.name:
            return self.name
        if self.external_model is not None:
            return _entity_name(self.external_model.name)
        base = self.entity_name or ""
        return _entity_name(f"{base}-{self.entity_version}" if self.entity_version else base)


def _entity_name(served: str) -> str:
    # Model names hold '.', '/', ':' (`qwen2.5:0.5b`); entity names are letters, digits, - and _.
    return re.sub(r"[^A-Za-z0-9_-]", "-", served)[:63]


class Route(_Body):
    served_entity_name: StrictStr | None = None
    served_model_name: StrictStr | None = None
    traffic_percentage: StrictInt = Field(ge=0, le=100)

    @property
    def entity(self) -> str:
        return self.served_entity_name or self.served_model_name or ""


class TrafficConfig(_Body):
    routes: list[Route] = Field(default_factory=list)


class EndpointCoreConfig(_Body):
    served_entities: list[ServedEntityInput] = Field(min_length=1, max_length=15)
    traffic_config: TrafficConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_served_models(cls, data: Any) -> Any:
        # Older clients say served_models/model_name; the shape is otherwise the same.
        if isinstance(data, dict) and "served_entities" not in data and "served_models" in data:
            models = data.get("served_models")
            if isinstance(models, list):
                data = {
                    **data,
                    "served_entities": [
                        {
                            (
                                "entity_name"
                                if k == "model_name"
                                else "entity_version"
                                if k == "model_version"
                                else k
                            ): v
                            for k, v in m.items()
                        }
                        if isinstance(m, dict)
                        else m
                        for m in models
                    ],
                }
                data.pop("served_models")
        return data


class Tag(_Body):
    key: StrictStr = Field(min_length=1, max_length=255)
    value: StrictStr | None = None


class FallbackConfig(_Body):
    enabled: StrictBool


class UsageTrackingConfig(_Body):
    enabled: StrictBool = False


class InferenceTableConfig(_Body):
    """Where payload rows go: the table `<catalog>__<schema>__<prefix>_payload`."""

    enabled: StrictBool = False
    catalog_name: StrictStr | None = Field(default=None, min_length=1, max_length=255)
    schema_name: StrictStr | None = Field(default=None, min_length=1, max_length=255)
    table_name_prefix: StrictStr | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _named_when_enabled(self) -> InferenceTableConfig:
        if self.enabled and not (self.catalog_name and self.schema_name):
            raise ValueError(
                "catalog_name and schema_name are required when inference tables are enabled "
                "(table_name_prefix defaults to the endpoint name)"
            )
        return self


class GuardrailPii(BaseModel):
    # Guardrail blocks forbid unknown keys: a misspelt guardrail silently off is worse than a 400.
    model_config = ConfigDict(extra="forbid", strict=True)
    behavior: Literal["BLOCK", "MASK", "NONE"] = "NONE"


class GuardrailParameters(BaseModel):
    """One direction's guardrails (the SDK's `AiGatewayGuardrailParameters`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    invalid_keywords: list[Annotated[StrictStr, Field(min_length=1)]] | None = None
    pii: GuardrailPii | None = None
    safety: StrictBool | None = None
    valid_topics: list[Annotated[StrictStr, Field(min_length=1)]] | None = None


class GuardrailsConfig(BaseModel):
    """`ai_gateway.guardrails`: what is screened on the way in and on the way out."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input: GuardrailParameters | None = None
    output: GuardrailParameters | None = None


class AiGatewayRateLimit(BaseModel):
    """One `ai_gateway.rate_limits` entry: calls and/or tokens per minute for a key."""

    # Unknown keys forbidden: a misspelt "call" must not leave an endpoint unlimited.
    model_config = ConfigDict(extra="forbid", strict=True)
    calls: StrictInt | None = Field(default=None, ge=1)
    tokens: StrictInt | None = Field(default=None, ge=1)
    key: Literal["endpoint", "user", "user_group", "service_principal"] = "endpoint"
    principal: StrictStr | None = Field(default=None, min_length=1)
    renewal_period: Literal["minute"] = "minute"

    @model_validator(mode="after")
    def _coherent(self) -> AiGatewayRateLimit:
        if self.calls is None and self.tokens is None:
            raise ValueError("a rate limit needs calls or tokens (per minute), or both")
        if self.key in ("user_group", "service_principal") and self.principal is None:
            raise ValueError(f"a rate limit with key '{self.key}' needs principal (who it limits)")
        if self.key == "endpoint" and self.principal is not None:
            raise ValueError("a rate limit with key 'endpoint' takes no principal")
        return self


class RateLimit(BaseModel):
    """The legacy `rate_limits` entry (`PUT .../rate-limits`, top-level on create): calls only."""

    model_config = ConfigDict(extra="forbid", strict=True)
    calls: StrictInt = Field(ge=1)
    key: Literal["endpoint", "user"] = "endpoint"
    renewal_period: Literal["minute"] = "minute"


MAX_RATE_LIMITS = 20


class RateLimitsPut(_Body):
    rate_limits: list[RateLimit] = Field(default_factory=list, max_length=MAX_RATE_LIMITS)


class AiGateway(_Body):
    """The `ai_gateway` block; fallback is enforced here, the rest is kept as sent for now."""

    fallback_config: FallbackConfig | None = None
    usage_tracking_config: UsageTrackingConfig | None = None
    inference_table_config: InferenceTableConfig | None = None
    rate_limits: list[AiGatewayRateLimit] | None = Field(default=None, max_length=MAX_RATE_LIMITS)
    guardrails: GuardrailsConfig | None = None


class EndpointCreate(_Body):
    name: StrictStr = Field(pattern=ENDPOINT_NAME_PATTERN)
    config: EndpointCoreConfig
    ai_gateway: AiGateway | None = None
    tags: list[Tag] = Field(default_factory=list)
    rate_limits: list[RateLimit] | None = Field(default=None, max_length=MAX_RATE_LIMITS)
    description: StrictStr | None = None
    route_optimized: StrictBool = False


class TagsPatch(_Body):
    add_tags: list[Tag] = Field(default_factory=list)
    delete_tags: list[StrictStr] = Field(default_factory=list)


class TokenCreate(_Body):
    lifetime_seconds: StrictInt | None = Field(default=None, gt=0)
    comment: StrictStr | None = None


class TokenDelete(_Body):
    token_id: StrictStr

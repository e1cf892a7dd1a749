"""`custom`: any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI, ...)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from modelyard.providers.external import ProviderConfig
from modelyard.providers.openai_compatible import OpenAICompatible


class BearerTokenAuth(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"token": True}
    token: str | None = None
    token_plaintext: str | None = None


class ApiKeyAuth(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"value": True}
    key: str = Field(min_length=1)  # the header's name
    value: str | None = None
    value_plaintext: str | None = None


class CustomProviderConfig(ProviderConfig):
    # The base URL as a user pastes it (`http://vllm:8000/v1`); paths are appended to it.
    custom_provider_url: str = Field(pattern=r"^https?://")
    bearer_token_auth: BearerTokenAuth | None = None
    api_key_auth: ApiKeyAuth | None = None

    @model_validator(mode="after")
    def _one_auth(self) -> CustomProviderConfig:
        if self.bearer_token_auth is not None and self.api_key_auth is not None:
            raise ValueError("give bearer_token_auth or api_key_auth, not both")
        return self


class CustomProvider(OpenAICompatible):
    kind = "custom"
    config_key = "custom_provider_config"
    config_model = CustomProviderConfig
    config: CustomProviderConfig

    def url(self, path: str) -> str:
        return f"{self.config.custom_provider_url.rstrip('/')}/{path}"

    def headers(self) -> dict[str, str]:
        c = self.config
        if c.bearer_token_auth is not None:
            token = self.credential("token", c.bearer_token_auth).value()
            return {"Authorization": f"Bearer {token}"}
        if c.api_key_auth is not None:
            return {c.api_key_auth.key: self.credential("value", c.api_key_auth).value()}
        return {}

"""`openai`: OpenAI's API, and Azure OpenAI through `openai_api_type` `azure` or `azuread`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from modelyard.errors import BadRequest
from modelyard.providers.external import ProviderConfig
from modelyard.providers.openai_compatible import OpenAICompatible
from modelyard.schemas.endpoints import ExternalModel

OPENAI_API_BASE = "https://api.openai.com/v1"


class OpenAIConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"openai_api_key": True}

    openai_api_key: str | None = None
    openai_api_key_plaintext: str | None = None
    openai_api_type: Literal["openai", "azure", "azuread"] = "openai"
    openai_api_base: str | None = Field(default=None, pattern=r"^https?://")
    openai_api_version: str | None = None
    openai_deployment_name: str | None = None
    openai_organization: str | None = None

    @model_validator(mode="after")
    def _azure_needs_deployment(self) -> OpenAIConfig:
        if self.openai_api_type != "openai":
            missing = [
                f
                for f in ("openai_api_base", "openai_api_version", "openai_deployment_name")
                if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"openai_api_type '{self.openai_api_type}' needs {missing}")
        return self


class OpenAIProvider(OpenAICompatible):
    kind = "openai"
    config_key = "openai_config"
    config_model = OpenAIConfig
    config: OpenAIConfig

    def url(self, path: str) -> str:
        c = self.config
        base = (c.openai_api_base or OPENAI_API_BASE).rstrip("/")
        if c.openai_api_type == "openai":
            return f"{base}/{path}"
        # Azure names the model by its deployment in the path and versions every call.
        return (
            f"{base}/openai/deployments/{c.openai_deployment_name}/{path}"
            f"?api-version={c.openai_api_version}"
        )

    def headers(self) -> dict[str, str]:
        key = self.credential("openai_api_key").value()
        if self.config.openai_api_type == "azure":
            return {"api-key": key}
        headers = {"Authorization": f"Bearer {key}"}
        if self.config.openai_organization:
            headers["OpenAI-Organization"] = self.config.openai_organization
        return headers

    @classmethod
    def check(cls, model: ExternalModel, config: ProviderConfig) -> None:
        assert isinstance(config, OpenAIConfig)
        if config.openai_organization and config.openai_api_type != "openai":
            raise BadRequest("openai_organization applies only to openai_api_type 'openai'.")

"""`databricks-model-serving`: an endpoint of a Databricks workspace or of another modelyard."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from modelyard.providers.base import Json
from modelyard.providers.external import ProviderConfig
from modelyard.providers.openai_compatible import OpenAICompatible
from modelyard.schemas.query import ChatRequest, CompletionRequest, EmbeddingRequest


class DatabricksServingConfig(ProviderConfig):
    credentials: ClassVar[dict[str, bool]] = {"databricks_api_token": True}
    databricks_api_token: str | None = None
    databricks_api_token_plaintext: str | None = None
    databricks_workspace_url: str = Field(pattern=r"^https?://")


class DatabricksServingProvider(OpenAICompatible):
    """Every task goes to the endpoint's invocations URL; the entity's name is the endpoint."""

    kind = "databricks-model-serving"
    config_key = "databricks_model_serving_config"
    config_model = DatabricksServingConfig
    config: DatabricksServingConfig

    def url(self, path: str) -> str:
        base = self.config.databricks_workspace_url.rstrip("/")
        return f"{base}/serving-endpoints/{self.model.name}/invocations"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential('databricks_api_token').value()}"}

    def payload(self, request: ChatRequest | CompletionRequest | EmbeddingRequest) -> Json:
        payload = super().payload(request)
        payload.pop("model")  # the endpoint is in the path; Databricks rejects a model field
        return payload

"""The external providers this server has: adding one is a module plus a line here."""

from __future__ import annotations

from modelyard.providers.ai21labs import AI21LabsProvider
from modelyard.providers.anthropic import AnthropicProvider
from modelyard.providers.bedrock import BedrockProvider
from modelyard.providers.cohere import CohereProvider
from modelyard.providers.custom import CustomProvider
from modelyard.providers.databricks_serving import DatabricksServingProvider
from modelyard.providers.external import ExternalContext, ExternalModels, ExternalProvider
from modelyard.providers.gemini import GeminiProvider
from modelyard.providers.mistral import MistralProvider
from modelyard.providers.openai import OpenAIProvider
from modelyard.providers.palm import PalmProvider
from modelyard.providers.vertex import VertexProvider

EXTERNAL_PROVIDERS: tuple[type[ExternalProvider], ...] = (
    OpenAIProvider,
    CustomProvider,
    DatabricksServingProvider,
    PalmProvider,
    CohereProvider,
    MistralProvider,
    AI21LabsProvider,
    GeminiProvider,
    VertexProvider,
    AnthropicProvider,
    BedrockProvider,
)


def external_builders(context: ExternalContext) -> list[ExternalModels]:
    """One builder per external provider kind, all sharing `context`."""
    return [ExternalModels(provider, context) for provider in EXTERNAL_PROVIDERS]

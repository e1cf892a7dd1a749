"""Endpoints declared in a YAML file, applied at start in the same JSON shape as the API."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelyard.control.endpoints import EndpointService, stored_config
from modelyard.control.plaintext import unseal_plaintexts
from modelyard.errors import ModelyardError
from modelyard.gateway.auth import ADMIN_USER
from modelyard.schemas.endpoints import AiGateway, EndpointCreate
from modelyard.schemas.validation import describe_validation_error

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigFileError(Exception):
    """The file cannot be applied; the message names the file, the endpoint and the fix."""


def expand_env(text: str) -> str:
    """Replace `${NAME}` and `${NAME:-default}`; an unset name without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            raise ConfigFileError(f"Environment variable {name} is not set (used as ${{{name}}}).")
        return value

    return _ENV_REFERENCE.sub(substitute, text)


def load_config_file(path: Path) -> list[EndpointCreate]:
    """Parse `endpoints:` from the file; every endpoint is validated as the API would."""
    try:
        data: Any = yaml.safe_load(expand_env(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"Cannot read config file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("endpoints"), list):
        raise ConfigFileError(f"{path}: expected a mapping with a list under 'endpoints'.")
    endpoints = []
    for index, item in enumerate(data["endpoints"]):
        try:
            endpoints.append(EndpointCreate.model_validate(item))
        except ValidationError as exc:
            raise ConfigFileError(
                f"{path}: endpoints[{index}]: {describe_validation_error(exc)}"
            ) from None  # pydantic's own text would echo the file's values (keys among them)
    return endpoints


async def apply_config_file(path: Path, service: EndpointService) -> None:
    """Create the file's endpoints, or update the config of those that exist and changed."""
    for body in load_config_file(path):
        try:
            existing = service.registry.find(body.name)
            if existing is None:
                await service.create(body, ADMIN_USER)
            else:
                if unseal_plaintexts(existing.record.config, service.box) != stored_config(
                    body.config
                ):
                    await service.update_config(body.name, body.config)
                gateway = body.ai_gateway or AiGateway()
                if (existing.record.ai_gateway or {}) != gateway.model_dump(exclude_none=True):
                    await service.update_ai_gateway(body.name, gateway)
        except ModelyardError as exc:
            raise ConfigFileError(f"{path}: endpoint '{body.name}': {exc.message}") from None

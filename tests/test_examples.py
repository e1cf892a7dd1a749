"""Every example config in examples/ is accepted by a running server as it stands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from databricks.sdk import WorkspaceClient
from tests.conftest import REPO, Server

from modelyard.control.config_file import load_config_file
from modelyard.providers.catalog import EXTERNAL_PROVIDERS

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
_REQUIRED_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_REFERENCE = re.compile(r"\{\{secrets/([^/}]+)/([^}]+)\}\}")


@pytest.fixture(scope="module")
def referenced_secrets(gateway: Server) -> None:
    """The secrets the examples' comments tell users to put first."""
    w = WorkspaceClient(host=gateway.url, token=gateway.token)
    for text in (p.read_text() for p in EXAMPLES):
        for scope, key in _SECRET_REFERENCE.findall(text):
            if scope not in {s.name for s in w.secrets.list_scopes()}:
                w.secrets.create_scope(scope)
            w.secrets.put_secret(scope, key, string_value=f"test value of {scope}/{key}")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted(
    gateway: Server, path: Path, monkeypatch: pytest.MonkeyPatch, referenced_secrets: None
):
    for name in _REQUIRED_ENV.findall(path.read_text()):
        monkeypatch.setenv(name, "https://example.invalid" if "URL" in name or "HOST" in name
                           or "ENDPOINT" in name else f"test-{name.lower()}")  # fmt: skip
    endpoints = load_config_file(path)
    assert endpoints, f"{path.name} defines no endpoint"
    for body in endpoints:
        url = f"{gateway.url}/api/2.0/serving-endpoints"
        r = requests.post(url, json=body.model_dump(mode="json", exclude_none=True),
                          headers=gateway.headers, timeout=30)  # fmt: skip
        try:
            assert r.status_code == 200, f"{path.name}: {body.name}: {r.text}"
            assert r.json()["state"]["ready"] == "READY"
        finally:
            requests.delete(f"{url}/{body.name}", headers=gateway.headers, timeout=30)


def test_every_provider_has_an_example():
    text = "".join(p.read_text() for p in EXAMPLES)
    serving = [p.kind for p in EXTERNAL_PROVIDERS if p.kind != "palm"]  # palm was retired
    assert [kind for kind in serving if f"provider: {kind}\n" not in text] == []

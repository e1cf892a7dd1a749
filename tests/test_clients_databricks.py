"""databricks-sdk, mlflow's deployments client and curl, unmodified, against `modelyard serve`."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, ResourceAlreadyExists
from databricks.sdk.service.serving import (
    ChatMessage,
    ChatMessageRole,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    ServedEntityInput,
)

from conftest import DEFAULT_ENDPOINT, Server

EP = DEFAULT_ENDPOINT
HELLO = [{"role": "user", "content": "Say hello."}]

# --- databricks-sdk ---------------------------------------------------------------------------


@pytest.fixture
def workspace(server: Server, monkeypatch: pytest.MonkeyPatch) -> WorkspaceClient:
    # Only what the test passes: no ~/.databrickscfg profile or DATABRICKS_* from the shell.
    for var in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")
    return WorkspaceClient(host=server.url, token=server.token)


def test_sdk_query(workspace: WorkspaceClient) -> None:
    r = workspace.serving_endpoints.query(
        EP, messages=[ChatMessage(role=ChatMessageRole.USER, content="Say hello.")], max_tokens=16
    )
    assert r.choices and r.choices[0].message is not None
    assert r.choices[0].message.role == ChatMessageRole.ASSISTANT
    assert r.choices[0].message.content
    assert r.served_model_name == EP  # read from the served-model-name header
    assert r.usage is not None and r.usage.total_tokens
    assert 0 < (r.usage.completion_tokens or 0) <= 16


def test_sdk_list_and_get(workspace: WorkspaceClient) -> None:
    names = [e.name for e in workspace.serving_endpoints.list()]
    assert EP in names
    ep = workspace.serving_endpoints.get(EP)
    assert ep.name == EP
    assert ep.state is not None
    assert ep.state.ready == EndpointStateReady.READY
    assert ep.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert ep.config is not None and ep.config.served_entities
    assert ep.config.served_entities[0].foundation_model is not None
    assert ep.config.served_entities[0].foundation_model.name == "smollm2-135m-instruct"


def test_sdk_create_query_delete(workspace: WorkspaceClient, new_endpoint_name: str) -> None:
    name = new_endpoint_name
    entity = ServedEntityInput(entity_name="smollm2-135m-instruct", name="smol")
    config = EndpointCoreConfigInput(name=name, served_entities=[entity])
    # `.result()` polls GET until config_update is NOT_UPDATING.
    ep = workspace.serving_endpoints.create(name=name, config=config).result(
        timeout=timedelta(minutes=5)
    )
    assert ep.name == name
    assert ep.state is not None and ep.state.ready == EndpointStateReady.READY
    with pytest.raises(ResourceAlreadyExists, match=name):
        workspace.serving_endpoints.create(name=name, config=config)

    r = workspace.serving_endpoints.query(
        name, messages=[ChatMessage(role=ChatMessageRole.USER, content="Say hello.")], max_tokens=8
    )
    assert r.choices and r.choices[0].message and r.choices[0].message.content
    assert r.served_model_name == "smol"

    workspace.serving_endpoints.delete(name)
    with pytest.raises(NotFound, match=f"Endpoint with name '{name}' does not exist"):
        workspace.serving_endpoints.get(name)
    assert name not in [e.name for e in workspace.serving_endpoints.list()]


@pytest.mark.filterwarnings(r"ignore:get_open_ai_client\(\) is deprecated:DeprecationWarning")
def test_sdk_open_ai_client(workspace: WorkspaceClient) -> None:
    # The SDK builds this client on `httpx`, which the test extra installs.
    client = workspace.serving_endpoints.get_open_ai_client(max_retries=0)
    with client:
        r = client.chat.completions.create(model=EP, messages=HELLO, max_tokens=8)  # type: ignore[arg-type]
    assert r.choices[0].message.content


# --- mlflow deployments -----------------------------------------------------------------------


@pytest.fixture
def deploy(server: Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.deployments import get_deploy_client

    monkeypatch.delenv("DATABRICKS_CONFIG_PROFILE", raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")
    monkeypatch.setenv("DATABRICKS_HOST", server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", server.token)
    return get_deploy_client("databricks")


def test_mlflow_predict(deploy: Any) -> None:
    r = deploy.predict(endpoint=EP, inputs={"messages": HELLO, "max_tokens": 16})
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["role"] == "assistant"
    assert r["choices"][0]["message"]["content"]
    assert 0 < r["usage"]["completion_tokens"] <= 16


def test_mlflow_predict_stream(deploy: Any) -> None:
    # mlflow's parser raises on any line that is not `data: ...`: this is the SSE format check.
    chunks = list(deploy.predict_stream(endpoint=EP, inputs={"messages": HELLO, "max_tokens": 16}))
    assert chunks
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_mlflow_list_and_get(deploy: Any) -> None:
    assert EP in [e["name"] for e in deploy.list_endpoints()]
    ep = deploy.get_endpoint(EP)
    assert ep["name"] == EP
    assert ep["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    assert ep["task"] == "llm/v1/chat"


def test_mlflow_create_and_delete(deploy: Any, new_endpoint_name: str) -> None:
    import requests

    name = new_endpoint_name
    created = deploy.create_endpoint(
        config={"name": name, "config": {"served_entities": [{"entity_name": EP}]}}
    )
    assert created["name"] == name
    assert name in [e["name"] for e in deploy.list_endpoints()]
    r = deploy.predict(endpoint=name, inputs={"messages": HELLO, "max_tokens": 4})
    assert r["choices"][0]["message"]["content"]
    assert deploy.delete_endpoint(name) == {}
    with pytest.raises(requests.HTTPError, match=f"Endpoint with name '{name}' does not exist"):
        deploy.get_endpoint(name)


def test_mlflow_create_legacy_signature(deploy: Any, new_endpoint_name: str) -> None:
    """`create_endpoint(name, config)`: deprecated by mlflow, still common in user code."""
    with pytest.warns(UserWarning, match="deprecated"):
        created = deploy.create_endpoint(
            new_endpoint_name, config={"served_entities": [{"entity_name": EP}]}
        )
    assert created["name"] == new_endpoint_name
    assert deploy.get_endpoint(new_endpoint_name)["state"]["ready"] == "READY"
    assert deploy.delete_endpoint(new_endpoint_name) == {}


def test_mlflow_error_names_the_problem(deploy: Any) -> None:
    import requests

    with pytest.raises(requests.HTTPError, match="Endpoint with name 'nope-x' does not exist"):
        deploy.predict(endpoint="nope-x", inputs={"messages": HELLO, "max_tokens": 4})


# --- curl -------------------------------------------------------------------------------------


def curl(*args: str) -> tuple[int, str]:
    """Run curl; returns (HTTP status, body)."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "300", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=320,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_curl_basic_auth(server: Server) -> None:
    """Databricks' REST example, as documented: `curl -u token:$DATABRICKS_TOKEN ...`."""
    status, body = curl(
        "-u",
        f"token:{server.token}",
        f"{server.url}/serving-endpoints/{EP}/invocations",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"messages": HELLO, "max_tokens": 16}),
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["total_tokens"] > 0


def test_curl_bearer_stream(server: Server) -> None:
    status, body = curl(
        "-N",
        "-H",
        f"Authorization: Bearer {server.token}",
        f"{server.url}/serving-endpoints/{EP}/invocations",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"messages": HELLO, "max_tokens": 8, "stream": True}),
    )
    assert status == 200, body
    # Exactly `data: <json>` + blank line per event, ending in `data: [DONE]`.
    events = body.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ") and "\n" not in event, event
        assert json.loads(event.removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_curl_bad_basic_auth(server: Server) -> None:
    status, body = curl(
        "-u",
        "token:dapi-not-a-token",
        f"{server.url}/serving-endpoints/{EP}/invocations",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"messages": HELLO, "max_tokens": 4}),
    )
    assert status == 403
    assert json.loads(body)["error_code"] == "PERMISSION_DENIED"

"""Endpoint and token management over raw HTTP, as curl or any client would see it."""

from __future__ import annotations

import base64
import uuid

import requests

from conftest import DEFAULT_ENDPOINT, Server

API = "/api/2.0/serving-endpoints"


def call(server: Server, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, server.url + path, headers=server.headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def local_endpoint(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "config": {"served_entities": [{"entity_name": DEFAULT_ENDPOINT}]},
        **extra,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_fresh_server_has_the_default_endpoint(server: Server) -> None:
    body = call(server, "GET", f"{API}/{DEFAULT_ENDPOINT}").json()
    assert body["task"] == "llm/v1/chat"
    assert body["endpoint_type"] == "FOUNDATION_MODEL_API"
    entity = body["config"]["served_entities"][0]
    assert entity["foundation_model"]["name"] == DEFAULT_ENDPOINT
    assert entity["state"]["deployment"] == "DEPLOYMENT_READY"
    assert body["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    listed = call(server, "GET", API + "/").json()["endpoints"]
    assert DEFAULT_ENDPOINT in [e["name"] for e in listed]


def test_create_update_tag_delete(server: Server) -> None:
    name = unique("mgmt")
    created = call(
        server,
        "POST",
        API,
        json=local_endpoint(name, tags=[{"key": "team", "value": "ml"}], description="for tests"),
    )
    assert created.status_code == 200, created.text
    assert created.json()["config"]["config_version"] == 1
    server.wait_endpoint_ready(name)

    renamed = {
        "served_entities": [{"name": "primary", "entity_name": DEFAULT_ENDPOINT}],
        "traffic_config": {
            "routes": [{"served_entity_name": "primary", "traffic_percentage": 100}]
        },
    }
    updated = call(server, "PUT", f"{API}/{name}/config", json=renamed).json()
    assert updated["config"]["config_version"] == 2
    assert [e["name"] for e in updated["config"]["served_entities"]] == ["primary"]
    r = call(
        server,
        "POST",
        f"/serving-endpoints/{name}/invocations",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert r.status_code == 200 and r.headers["served-model-name"] == "primary"

    tags = call(
        server,
        "PATCH",
        f"{API}/{name}/tags",
        json={"add_tags": [{"key": "env", "value": "dev"}], "delete_tags": ["team"]},
    )
    assert tags.json() == {"tags": [{"key": "env", "value": "dev"}]}
    assert call(server, "GET", f"{API}/{name}").json()["tags"] == [{"key": "env", "value": "dev"}]

    assert call(server, "DELETE", f"{API}/{name}").json() == {}
    gone = call(server, "GET", f"{API}/{name}")
    assert gone.status_code == 404
    assert gone.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": f"Endpoint with name '{name}' does not exist.",
    }


def test_invalid_endpoint_definitions_are_rejected(server: Server) -> None:
    cases = [
        (local_endpoint("bad name!"), "name"),
        (local_endpoint("x" * 64), "name"),
        ({"name": unique("e"), "config": {"served_entities": []}}, "served_entities"),
        (
            {
                "name": unique("e"),
                "config": {"served_entities": [{"entity_name": "no-such-model"}]},
            },
            "modelyard models pull",
        ),
        (
            {
                "name": unique("e"),
                "config": {
                    "served_entities": [{"entity_name": DEFAULT_ENDPOINT}],
                    "traffic_config": {
                        "routes": [
                            {"served_entity_name": DEFAULT_ENDPOINT, "traffic_percentage": 60}
                        ]
                    },
                },
            },
            "add up to 100",
        ),
        (
            {
                "name": unique("e"),
                "config": {
                    "served_entities": [
                        {"entity_name": DEFAULT_ENDPOINT},
                        {"entity_name": DEFAULT_ENDPOINT},
                    ]
                },
            },
            "unique",
        ),
        (
            {
                "name": unique("e"),
                "config": {
                    "served_entities": [
                        {"external_model": {"provider": "nope", "name": "m", "task": "llm/v1/chat"}}
                    ]
                },
            },
            "Unknown provider",
        ),
    ]
    for body, hint in cases:
        r = call(server, "POST", API, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert hint in r.json()["message"], r.json()


def test_duplicate_name_is_409(server: Server) -> None:
    r = call(server, "POST", API, json=local_endpoint(DEFAULT_ENDPOINT))
    assert r.status_code == 409
    assert r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_unknown_endpoint_operations_are_404(server: Server) -> None:
    for method, path, body in [
        ("GET", f"{API}/nope", None),
        ("DELETE", f"{API}/nope", None),
        ("PUT", f"{API}/nope/config", {"served_entities": [{"entity_name": DEFAULT_ENDPOINT}]}),
        ("PATCH", f"{API}/nope/tags", {"add_tags": []}),
    ]:
        r = call(server, method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_token_lifecycle_with_basic_and_bearer(server: Server) -> None:
    created = call(
        server, "POST", "/api/2.0/token/create", json={"comment": "ci", "lifetime_seconds": 3600}
    ).json()
    value, info = created["token_value"], created["token_info"]
    assert info["comment"] == "ci" and info["expiry_time"] > info["creation_time"]
    basic = base64.b64encode(f"token:{value}".encode()).decode()
    for header in (f"Bearer {value}", f"Basic {basic}"):
        r = requests.get(f"{server.url}{API}", headers={"Authorization": header}, timeout=10)
        assert r.status_code == 200, header
    listed = call(server, "GET", "/api/2.0/token/list").json()["token_infos"]
    assert info["token_id"] in [t["token_id"] for t in listed]
    assert value not in str(listed)
    assert (
        call(server, "POST", "/api/2.0/token/delete", json={"token_id": info["token_id"]}).json()
        == {}
    )
    r = requests.get(f"{server.url}{API}", headers={"Authorization": f"Bearer {value}"}, timeout=10)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    r = call(server, "POST", "/api/2.0/token/delete", json={"token_id": info["token_id"]})
    assert r.status_code == 404


def test_well_known_config_needs_no_credentials(server: Server) -> None:
    r = requests.get(f"{server.url}/.well-known/databricks-config", timeout=10)
    assert r.status_code == 200
    assert r.json()["workspace_id"].isdigit()
    r = requests.get(
        f"{server.url}{API}",
        headers={**server.headers, "X-Databricks-Workspace-Id": r.json()["workspace_id"]},
        timeout=10,
    )
    assert r.status_code == 200

"""Bad requests get the right status, a stable `error_code` and a message that says what to fix.

After each test the server must still answer a good request, and neither a response nor the
server's log may show a stack trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from conftest import DEFAULT_ENDPOINT, Server

EP = DEFAULT_ENDPOINT
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def still_serving(server: Server) -> Iterator[None]:
    """After the bad request: a good one works, and nothing was logged as unhandled."""
    log_start = server.log_path.stat().st_size
    yield
    r = invoke(server, {"messages": HELLO, "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    with server.log_path.open("rb") as f:
        f.seek(log_start)
        new_log = f.read().decode(errors="replace")
    assert "Traceback" not in new_log, new_log


def invoke(
    server: Server,
    body: Any = None,
    *,
    name: str = EP,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    if headers is None:
        headers = server.headers | {"Content-Type": "application/json"}
    return requests.post(
        f"{server.url}/serving-endpoints/{name}/invocations",
        json=body if data is None else None,
        data=data,
        headers=headers,
        timeout=120,
    )


def check_error(r: requests.Response, status: int, error_code: str, *phrases: str) -> str:
    """The Databricks envelope with `status` and `error_code`; the message contains `phrases`."""
    assert "Traceback" not in r.text
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert {"error_code", "message"} <= set(body), body
    assert body["error_code"] == error_code, body
    for phrase in phrases:
        assert phrase.lower() in body["message"].lower(), body["message"]
    return str(body["message"])


# --- the request body -------------------------------------------------------------------------


def test_malformed_json(server: Server) -> None:
    r = invoke(server, data=b'{"messages": [{"role": "user"')
    check_error(r, 400, "BAD_REQUEST", "malformed json")


def test_body_not_an_object(server: Server) -> None:
    check_error(invoke(server, data=b"[1, 2]"), 400, "BAD_REQUEST", "json object")


def test_empty_body(server: Server) -> None:
    check_error(invoke(server, data=b""), 400, "BAD_REQUEST", "empty")


def test_no_messages(server: Server) -> None:
    r = invoke(server, {"max_tokens": 4})
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "'messages'")
    r = requests.post(
        f"{server.url}/serving-endpoints/chat/completions",
        json={"model": EP, "max_tokens": 4},
        headers=server.headers,
        timeout=30,
    )
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "messages", "required")


def test_empty_messages(server: Server) -> None:
    check_error(invoke(server, {"messages": []}), 400, "INVALID_PARAMETER_VALUE", "messages", "1")


def test_unknown_role(server: Server) -> None:
    r = invoke(server, {"messages": [{"role": "wizard", "content": "hi"}]})
    message = check_error(r, 400, "INVALID_PARAMETER_VALUE", "messages[0].role", "'user'")
    assert "wizard" not in message  # names the field, never echoes the input


def test_temperature_out_of_range(server: Server) -> None:
    r = invoke(server, {"messages": HELLO, "temperature": 5})
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "temperature", "2")


def test_negative_max_tokens(server: Server) -> None:
    r = invoke(server, {"messages": HELLO, "max_tokens": -1})
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "max_tokens", "greater than or equal to 1")


def test_string_for_integer(server: Server) -> None:
    r = invoke(server, {"messages": HELLO, "max_tokens": "ten"})
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "max_tokens", "integer")


def test_string_for_number(server: Server) -> None:
    r = invoke(server, {"messages": HELLO, "temperature": "0.5"})
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "temperature", "number")


def test_body_too_large(server: Server) -> None:
    body = b'{"messages": [{"role": "user", "content": "' + b"a" * (20 * 1024 * 1024) + b'"}]}'
    check_error(invoke(server, data=body), 413, "BAD_REQUEST", "16 MiB")


def test_body_too_large_chunked(server: Server) -> None:
    """No Content-Length to check up front: the limit is enforced while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"a" * (1024 * 1024)
        yield b'"}]}'

    r = requests.post(
        f"{server.url}/serving-endpoints/{EP}/invocations",
        data=chunks(),
        headers=server.headers | {"Content-Type": "application/json"},
        timeout=120,
    )
    assert "content-length" not in (r.request.headers or {})
    check_error(r, 413, "BAD_REQUEST", "16 MiB")


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_context(server: Server, stream: bool) -> None:
    """The engine's slots hold 2048 tokens; 6000 words cannot fit: the caller's fault, a 4xx."""
    words = " ".join(["word"] * 6000)
    r = invoke(
        server,
        {"messages": [{"role": "user", "content": words}], "max_tokens": 4, "stream": stream},
    )
    assert 400 <= r.status_code < 500, r.text
    check_error(r, r.status_code, "INVALID_PARAMETER_VALUE", "exceeds", "context size")


# --- the endpoint, the path, the method -------------------------------------------------------


def test_unknown_endpoint(server: Server) -> None:
    r = invoke(server, {"messages": HELLO}, name="x")
    message = check_error(r, 404, "RESOURCE_DOES_NOT_EXIST")
    assert message == "Endpoint with name 'x' does not exist."


def test_unknown_endpoint_via_model_field(server: Server) -> None:
    r = requests.post(
        f"{server.url}/serving-endpoints/chat/completions",
        json={"model": "x", "messages": HELLO},
        headers=server.headers,
        timeout=30,
    )
    check_error(r, 404, "RESOURCE_DOES_NOT_EXIST", "Endpoint with name 'x' does not exist.")


def test_openai_path_without_model(server: Server) -> None:
    r = requests.post(
        f"{server.url}/serving-endpoints/chat/completions",
        json={"messages": HELLO},
        headers=server.headers,
        timeout=30,
    )
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "'model'", "serving endpoint")


def test_unknown_route(server: Server) -> None:
    r = requests.get(f"{server.url}/api/2.0/no-such-thing", headers=server.headers, timeout=30)
    check_error(r, 404, "ENDPOINT_NOT_FOUND", "/api/2.0/no-such-thing")


def test_wrong_method(server: Server) -> None:
    r = requests.get(
        f"{server.url}/serving-endpoints/{EP}/invocations", headers=server.headers, timeout=30
    )
    check_error(r, 405, "BAD_REQUEST", "method not allowed", "GET")


def test_embeddings_request_to_chat_endpoint(server: Server) -> None:
    r = requests.post(
        f"{server.url}/serving-endpoints/embeddings",
        json={"model": EP, "input": "hello"},
        headers=server.headers,
        timeout=30,
    )
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "llm/v1/chat", "llm/v1/embeddings")
    r = invoke(server, {"input": "hello"})
    check_error(r, 400, "INVALID_PARAMETER_VALUE", "llm/v1/chat", "llm/v1/embeddings")


@pytest.mark.parametrize(("path", "field"), [("embeddings", "input"), ("completions", "prompt")])
def test_chat_body_to_other_task_path(server: Server, path: str, field: str) -> None:
    r = requests.post(
        f"{server.url}/serving-endpoints/{path}",
        json={"model": EP, "messages": HELLO},
        headers=server.headers,
        timeout=30,
    )
    check_error(r, 400, "INVALID_PARAMETER_VALUE", field, "required")


# --- credentials ------------------------------------------------------------------------------


def test_no_token(server: Server) -> None:
    r = invoke(server, {"messages": HELLO}, headers={"Content-Type": "application/json"})
    check_error(r, 401, "UNAUTHENTICATED", "Authorization: Bearer")


def test_malformed_authorization(server: Server) -> None:
    r = invoke(server, {"messages": HELLO}, headers={"Authorization": "Token abc"})
    check_error(r, 401, "UNAUTHENTICATED", "Bearer")


def test_wrong_token(server: Server) -> None:
    r = invoke(server, {"messages": HELLO}, headers={"Authorization": "Bearer dapi-wrong"})
    check_error(r, 403, "PERMISSION_DENIED", "invalid access token")


def test_auth_checked_before_body(server: Server) -> None:
    """A stranger learns nothing about the body's problems or which endpoints exist."""
    r = invoke(server, data=b"{oops", name="x", headers={"Authorization": "Bearer dapi-wrong"})
    check_error(r, 403, "PERMISSION_DENIED")


def create_token(server: Server, **body: Any) -> tuple[str, str]:
    r = requests.post(
        f"{server.url}/api/2.0/token/create", json=body, headers=server.headers, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()["token_value"], r.json()["token_info"]["token_id"]


def list_endpoints(server: Server, token: str) -> requests.Response:
    return requests.get(
        f"{server.url}/api/2.0/serving-endpoints",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_revoked_token(server: Server) -> None:
    token, token_id = create_token(server, comment="to revoke")
    assert list_endpoints(server, token).status_code == 200
    r = requests.post(
        f"{server.url}/api/2.0/token/delete",
        json={"token_id": token_id},
        headers=server.headers,
        timeout=30,
    )
    assert r.status_code == 200 and r.json() == {}
    check_error(list_endpoints(server, token), 403, "PERMISSION_DENIED", "revoked")
    check_error(
        invoke(server, {"messages": HELLO}, headers={"Authorization": f"Bearer {token}"}),
        403,
        "PERMISSION_DENIED",
    )


def test_expired_token(server: Server) -> None:
    token, _ = create_token(server, lifetime_seconds=1)
    assert list_endpoints(server, token).status_code == 200
    time.sleep(1.5)
    check_error(list_endpoints(server, token), 403, "PERMISSION_DENIED", "expired")


def test_delete_unknown_token(server: Server) -> None:
    r = requests.post(
        f"{server.url}/api/2.0/token/delete",
        json={"token_id": "no-such-token"},
        headers=server.headers,
        timeout=30,
    )
    check_error(r, 404, "RESOURCE_DOES_NOT_EXIST", "no-such-token")


def test_errors_never_echo_a_stack_trace(server: Server) -> None:
    """A grab bag of odd bodies: all answered with an envelope, none with a 5xx."""
    odd: list[Any] = [
        {"messages": "hello"},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}]},
        {"messages": HELLO, "stop": 7},
        {"messages": HELLO, "n": 0},
        {"messages": HELLO, "stream": "yes"},
        {"messages": HELLO, "response_format": {"type": "json_schema"}},
        {"messages": HELLO, "extra_params": "nope"},
        {"messages": HELLO, "max_tokens": 1e300},
        None,
    ]
    for body in odd:
        r = invoke(server, data=json.dumps(body).encode())
        assert r.status_code == 400, (body, r.text)
        check_error(r, 400, r.json()["error_code"])

"""`modelyard chat ENDPOINT MESSAGE`, run as a user would, against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import DEFAULT_ENDPOINT, Server, free_port

# The installed console script, next to this interpreter.
MODELYARD = Path(sys.executable).parent / "modelyard"


def chat(
    *args: str, host: str | None, token: str | None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    if host is not None:
        env["DATABRICKS_HOST"] = host
    if token is not None:
        env["DATABRICKS_TOKEN"] = token
    command = [str(MODELYARD)] if MODELYARD.exists() else [sys.executable, "-m", "modelyard"]
    return subprocess.run(
        [*command, "chat", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_chat_prints_the_answer(server: Server) -> None:
    done = chat(
        DEFAULT_ENDPOINT, "hello", "--max-tokens", "16", host=server.url, token=server.token
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert done.stderr == ""


def test_chat_with_system_prompt_and_temperature(server: Server) -> None:
    done = chat(
        DEFAULT_ENDPOINT,
        "hello",
        "--system",
        "You are terse.",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        host=server.url,
        token=server.token,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_chat_bad_token(server: Server) -> None:
    done = chat(DEFAULT_ENDPOINT, "hello", host=server.url, token="dapi-not-a-token")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "PERMISSION_DENIED" in done.stderr
    assert "Invalid access token" in done.stderr
    assert "Traceback" not in done.stderr


def test_chat_unknown_endpoint(server: Server) -> None:
    done = chat("no-such-endpoint", "hello", host=server.url, token=server.token)
    assert done.returncode == 1
    assert "Endpoint with name 'no-such-endpoint' does not exist." in done.stderr
    assert "Traceback" not in done.stderr


def test_chat_no_token() -> None:
    done = chat(DEFAULT_ENDPOINT, "hello", host="http://127.0.0.1:9", token=None, timeout=60)
    assert done.returncode == 1
    assert "DATABRICKS_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_chat_server_down() -> None:
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = chat(DEFAULT_ENDPOINT, "hello", host=host, token="dapi-x", timeout=60)
    assert done.returncode == 1
    assert f"Cannot reach {host}" in done.stderr
    assert "Traceback" not in done.stderr

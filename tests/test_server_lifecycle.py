"""The server's life: first start, config file, loading state, worker crashes, SIGTERM drain."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

from conftest import DEFAULT_ENDPOINT, MODELS_DIR, Server, start_server

CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`, from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(p) for p in text)
    return found


def worker_pid(server: Server) -> int:
    pids = [
        p
        for p in children(server.process.pid)
        if b"modelyard.engine.worker" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    assert len(pids) == 1, pids
    return pids[0]


def invoke(
    server: Server, name: str = DEFAULT_ENDPOINT, body: dict | None = None, timeout: float = 120
) -> requests.Response:
    return requests.post(
        f"{server.url}/serving-endpoints/{name}/invocations",
        json=body or CHAT,
        headers=server.headers,
        timeout=timeout,
    )


def test_first_start_prints_admin_token_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MODELYARD_ADMIN_TOKEN"}
    first = start_server(tmp_path / "d", "--default-model", "", token="", extra_env=env)
    try:
        first.stop()
        log = first.log()
        assert "export DATABRICKS_HOST=http://127.0.0.1:" in log
        token = log.split("export DATABRICKS_TOKEN=")[1].split()[0]
        assert token.startswith("dapi") and len(token) == 36
        second = start_server(tmp_path / "d", "--default-model", "", token="", extra_env=env)
        r = requests.get(
            f"{second.url}/api/2.0/token/list",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        second.stop()
        assert second.log().count("DATABRICKS_TOKEN=") == 1  # the shared log: first start only
    finally:
        first.stop()


def test_config_file_declares_endpoints(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        "endpoints:\n"
        "  - name: ${TEAM_NAME}-chat\n"
        "    config:\n"
        "      served_entities:\n"
        f"        - entity_name: {DEFAULT_ENDPOINT}\n"
        "    tags: [{key: team, value: '${TEAM_NAME}'}]\n"
    )
    server = start_server(
        tmp_path / "d",
        "--default-model",
        "",
        "--config",
        str(config),
        extra_env={"TEAM_NAME": "ml"},
    )
    try:
        body = server.wait_endpoint_ready("ml-chat")
        assert body["tags"] == [{"key": "team", "value": "ml"}]
        assert invoke(server, "ml-chat").status_code == 200
    finally:
        server.stop()


def test_config_file_error_is_reported_before_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("endpoints:\n  - name: 'bad name!'\n    config: {served_entities: []}\n")
    server = start_server(tmp_path / "d", "--config", str(config), wait=False)
    assert server.process.wait(60) == 1
    assert "endpoints[0]" in server.log() and "name" in server.log()
    assert "Traceback" not in server.log()


def test_provider_config_error_in_the_file_names_the_field_not_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "endpoints:\n  - name: claude\n    config:\n      served_entities:\n"
        "        - external_model: {provider: anthropic, name: c, task: llm/v1/chat,\n"
        "            anthropic_config: {anthropic_api_kye_plaintext: sk-ant-do-not-print}}\n"
    )
    server = start_server(
        tmp_path / "d", "--default-model", "", "--config", str(config), wait=False
    )
    assert server.process.wait(60) != 0
    log = server.log()
    assert "endpoint 'claude'" in log and "anthropic_api_kye_plaintext" in log
    assert "sk-ant-do-not-print" not in log


def test_query_while_model_loads_is_503_at_once(server: Server, tmp_path: Path) -> None:
    # A second name for the default model's file: a new worker that must load first.
    model = f"copy-{uuid.uuid4().hex[:8]}"
    copy = tmp_path / "copy.gguf"
    copy.write_bytes((MODELS_DIR / DEFAULT_ENDPOINT / "model.gguf").read_bytes())
    body = {"name": model, "config": {"served_entities": [{"entity_name": model}]}}
    create = f"{server.url}/api/2.0/serving-endpoints"
    r = requests.post(create, headers=server.headers, json=body, timeout=30)
    assert r.status_code == 400 and "modelyard models pull" in r.json()["message"]
    pull = [sys.executable, "-m", "modelyard", "models", "pull", str(copy), "--name", model]
    try:
        subprocess.run(pull, check=True, env=server.env, capture_output=True)
        r = requests.post(create, headers=server.headers, json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == {"ready": "NOT_READY", "config_update": "IN_PROGRESS"}
        started = time.monotonic()
        r = invoke(server, model)
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        server.wait_endpoint_ready(model)
        assert invoke(server, model).status_code == 200
        r = requests.delete(f"{create}/{model}", headers=server.headers, timeout=30)
        assert r.json() == {}
    finally:
        shutil.rmtree(MODELS_DIR / model, ignore_errors=True)


def test_worker_killed_mid_request_fails_cleanly_then_recovers(tmp_path: Path) -> None:
    server = start_server(tmp_path / "d")
    try:
        server.wait_endpoint_ready(DEFAULT_ENDPOINT)
        pid = worker_pid(server)
        long = {**CHAT, "max_tokens": 1500, "extra_params": {"ignore_eos": True}}
        result: dict[str, requests.Response] = {}
        thread = threading.Thread(target=lambda: result.setdefault("r", invoke(server, body=long)))
        thread.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        thread.join(60)
        r = result["r"]
        assert r.status_code in (502, 503), r.text
        assert r.json()["error_code"] in ("BAD_GATEWAY", "TEMPORARILY_UNAVAILABLE")
        assert "local model" in r.json()["message"]
        body = server.wait_endpoint_ready(DEFAULT_ENDPOINT, timeout=60)
        assert worker_pid(server) != pid
        assert body["state"]["config_update"] == "NOT_UPDATING"
        assert invoke(server).status_code == 200
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    server = start_server(tmp_path / "d")
    server.wait_endpoint_ready(DEFAULT_ENDPOINT)
    pid = worker_pid(server)
    result: dict[str, requests.Response] = {}
    body = {**CHAT, "max_tokens": 64, "extra_params": {"ignore_eos": True}}
    thread = threading.Thread(target=lambda: result.setdefault("r", invoke(server, body=body)))
    thread.start()
    time.sleep(0.3)
    # uvicorn re-raises the signal after its graceful shutdown, so supervisors see it.
    assert server.stop(signal.SIGTERM, timeout=120) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()
    thread.join(30)
    assert result["r"].status_code == 200
    assert result["r"].json()["usage"]["completion_tokens"] == 64
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists(), "the engine worker outlived the server"

"""`custom` and `openai` providers against a real OpenAI-compatible server not written here:
llama.cpp's server engine, run on its own with the default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint

SECRET = "llama-server-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def llama_server(
    default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base URL of a llama.cpp server (xllamacpp) serving the default model."""
    log = (tmp_path_factory.mktemp("llama") / "llama.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard.engine.worker", "--model", str(default_model_path),
         "--alias", "smollm2", "--parallel", "2", "--ctx-per-slot", "2048"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        env={**os.environ, "MODELYARD_ENGINE_SECRET": SECRET},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready.get("ready"), ready
        yield ready["url"]
    finally:
        proc.terminate()
        proc.wait(30)
        for stream in (proc.stdin, proc.stdout, log):
            stream.close()  # type: ignore[union-attr]


def custom_entity(url: str) -> dict:
    config = {"custom_provider_url": f"{url}/v1", "bearer_token_auth": {"token_plaintext": SECRET}}
    return kit.external("custom", "smollm2", config, name="llama-custom")


def openai_entity(url: str) -> dict:
    config = {"openai_api_key_plaintext": SECRET, "openai_api_base": f"{url}/v1"}
    return kit.external("openai", "smollm2", config, name="llama-openai")


@pytest.mark.parametrize("make_entity", [custom_entity, openai_entity])
def test_chat_stream_and_json_mode(gateway: Server, llama_server: str, endpoint_name, make_entity):
    create_endpoint(gateway, endpoint_name, [make_entity(llama_server)])
    client = OpenAI(base_url=f"{gateway.url}/serving-endpoints", api_key=gateway.token)
    question = [{"role": "user", "content": "What is the capital of France?"}]

    answer = client.chat.completions.create(
        model=endpoint_name, messages=question, max_tokens=24, temperature=0
    )
    assert answer.choices[0].message.content.strip()
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model=endpoint_name,
            messages=question,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = kit.streamed_text(chunks)
    assert streamed == answer.choices[0].message.content  # temperature 0: the same answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    as_json = client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "Give a JSON object with a key 'city'."}],
        response_format={"type": "json_object"},
        max_tokens=48,
        temperature=0,
    )
    assert isinstance(json.loads(as_json.choices[0].message.content), dict)

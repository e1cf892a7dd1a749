"""The `openai` (and Azure), `custom`, `databricks-model-serving` and `palm` providers, driven by
the real openai client through a running server, against a fake that checks every request."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import openai
import pytest
import requests
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint, delete_endpoint
from tests.fakes.openai import FakeOpenAI

KEY = "sk-test-openai-key-4f1c"
fake, clean = kit.fake_fixtures(lambda: FakeOpenAI(KEY))
azure_fake, clean_azure = kit.fake_fixtures(
    lambda: FakeOpenAI(KEY, azure=True, api_version="2024-10-21")
)


def openai_entity(fake: FakeOpenAI, name: str = "gpt", task: str = "llm/v1/chat", **cfg) -> dict:
    config = {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1", **cfg}
    return kit.external("openai", "gpt-4o-mini", config, task, name)


@dataclass
class Upstream:
    """One way of reaching the OpenAI fake: a provider kind and the fake that answers it."""

    fake: FakeOpenAI
    entity: Callable[[str], dict]  # task → served entity


@pytest.fixture(params=["openai", "azure", "custom", "databricks-model-serving"])
def upstream(
    request: pytest.FixtureRequest, gateway: Server, fake: FakeOpenAI, azure_fake: FakeOpenAI
) -> Iterator[Upstream]:
    """Each OpenAI-wire provider in turn, so every feature is shown for each of them."""
    inner_endpoints: list[str] = []

    def entity(task: str) -> dict:
        if request.param == "openai":
            return openai_entity(fake, task=task)
        if request.param == "azure":
            return openai_entity(
                azure_fake,
                task=task,
                openai_api_type="azure",
                openai_api_base=azure_fake.url,
                openai_api_version="2024-10-21",
                openai_deployment_name="my-gpt",
            )
        if request.param == "custom":
            config = {
                "custom_provider_url": f"{fake.url}/v1",
                "bearer_token_auth": {"token_plaintext": KEY},
            }
            return kit.external("custom", "gpt-4o-mini", config, task, "up")
        # Another server's endpoint: here, an endpoint of the same server.
        inner = f"inner-{os.urandom(4).hex()}"
        create_endpoint(gateway, inner, [openai_entity(fake, task=task)])
        inner_endpoints.append(inner)
        config = {
            "databricks_workspace_url": gateway.url,
            "databricks_api_token_plaintext": gateway.token,
        }
        return kit.external("databricks-model-serving", inner, config, task, "up")

    yield Upstream(azure_fake if request.param == "azure" else fake, entity)
    for name in inner_endpoints:
        delete_endpoint(gateway, name)


def test_chat_plain_and_streamed(
    gateway: Server, upstream: Upstream, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [upstream.entity("llm/v1/chat")])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=20,
        temperature=0.2,
    )
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    sent = upstream.fake.requests[-1].json()
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_tokens"] == 20 and sent["temperature"] == 0.2

    chunks = kit.chat_chunks(
        openai_client, endpoint_name, "stream me", stream_options={"include_usage": True}
    )
    assert kit.streamed_text(chunks) == "You said: stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_tools_round_trip_plain_and_streamed(
    gateway: Server, upstream: Upstream, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [upstream.entity("llm/v1/chat")])
    tools = [kit.WEATHER, kit.TIME]
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=tools
    )
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris"}),
    ]

    streamed_calls = kit.streamed(
        openai_client.chat.completions.create(
            model=endpoint_name, messages=messages, tools=tools, stream=True
        )
    ).calls
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed_calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris"}),
    ]

    messages += kit.tool_replies(first.choices[0].message, "sunny, 21 C", "3 pm")
    final = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=tools
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 3 pm"
    chunks = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=tools, stream=True
    )
    assert kit.streamed_text(chunks) == "Results: sunny, 21 C; 3 pm"


def test_json_mode_extra_params_and_unknown_keys_pass_through(
    gateway: Server, upstream: Upstream, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [upstream.entity("llm/v1/chat")])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
        extra_body={"user": "u-17", "extra_params": {"service_tier": "flex"}},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    sent = upstream.fake.requests[-1].json()
    assert sent["user"] == "u-17" and sent["service_tier"] == "flex"
    assert "extra_params" not in sent


@pytest.mark.parametrize("task", ["llm/v1/embeddings", "llm/v1/completions"])
def test_embeddings_and_completions(
    gateway: Server, upstream: Upstream, openai_client: OpenAI, endpoint_name, task
):
    create_endpoint(gateway, endpoint_name, [upstream.entity(task)])
    if task == "llm/v1/embeddings":
        vectors = openai_client.embeddings.create(
            model=endpoint_name, input=["ab", "abcd"], encoding_format="float"
        )
        assert [d.embedding[0] for d in vectors.data] == [2.0, 4.0]
    else:
        done = openai_client.completions.create(
            model=endpoint_name, prompt="once upon", max_tokens=2
        )
        assert done.choices[0].text == "You said:" and done.choices[0].finish_reason == "length"


def test_azure_names_the_deployment_in_the_path(
    gateway: Server, azure_fake: FakeOpenAI, openai_client: OpenAI, endpoint_name
):
    entity = openai_entity(
        azure_fake,
        openai_api_type="azure",
        openai_api_base=azure_fake.url,
        openai_api_version="2024-10-21",
        openai_deployment_name="my-gpt",
    )
    create_endpoint(gateway, endpoint_name, [entity])
    openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "a"}]
    )
    sent = azure_fake.requests[-1]
    assert sent.path == "/openai/deployments/my-gpt/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == KEY and "Authorization" not in sent.headers


def test_upstream_error_keeps_status_and_message(
    gateway: Server, fake: FakeOpenAI, openai_client: OpenAI, endpoint_name
):
    entity = openai_entity(fake)
    entity["external_model"]["openai_config"]["openai_api_key_plaintext"] = "sk-wrong-key-123"
    create_endpoint(gateway, endpoint_name, [entity])
    err = kit.chat_error(openai_client, endpoint_name, openai.AuthenticationError)
    # The provider's status and message are kept; the key it echoed is not.
    assert err.status_code == 401
    assert "Incorrect API key provided: [REDACTED]" in err.message
    assert "sk-wrong-key-123" not in err.response.text

    entity["external_model"]["openai_config"]["openai_api_key_plaintext"] = KEY
    kit.update_config(gateway, endpoint_name, [entity])
    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)


def test_custom_provider_bearer_and_api_key_auth(
    gateway: Server, fake: FakeOpenAI, openai_client: OpenAI, endpoint_name
):
    config = {
        "custom_provider_url": f"{fake.url}/v1",
        "bearer_token_auth": {"token_plaintext": KEY},
    }
    entity = kit.external("custom", "my-model", config, name="vllm")
    create_endpoint(gateway, endpoint_name, [entity])
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "custom"}]
    )
    assert answer.choices[0].message.content == "You said: custom"
    assert fake.requests[-1].json()["model"] == "my-model"

    # api_key_auth puts the key in the named header; the fake wants a bearer token, and says so.
    entity["external_model"]["custom_provider_config"].pop("bearer_token_auth")
    entity["external_model"]["custom_provider_config"]["api_key_auth"] = {
        "key": "X-Api-Key",
        "value_plaintext": "k-123456",
    }
    kit.update_config(gateway, endpoint_name, [entity])
    kit.chat_error(openai_client, endpoint_name, openai.BadRequestError)
    assert fake.requests[-1].headers["X-Api-Key"] == "k-123456"
    fake.violations.clear()


def test_palm_is_accepted_and_explains_it_was_retired(
    gateway: Server, openai_client: OpenAI, endpoint_name
):
    entity = kit.external("palm", "chat-bison-001", {"palm_api_key_plaintext": "old-key"})
    created = create_endpoint(gateway, endpoint_name, [entity])
    assert created["state"]["ready"] == "READY"
    err = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError)
    assert "PaLM API was retired" in str(err) and "gemini" in str(err)


def test_plaintext_keys_come_back_redacted(gateway: Server, fake: FakeOpenAI, endpoint_name):
    created = create_endpoint(gateway, endpoint_name, [openai_entity(fake)])
    got = requests.get(
        f"{gateway.url}/api/2.0/serving-endpoints/{endpoint_name}", headers=gateway.headers
    )
    listed = requests.get(f"{gateway.url}/api/2.0/serving-endpoints", headers=gateway.headers)
    for text in (json.dumps(created), got.text, listed.text):
        assert KEY not in text
    config = got.json()["config"]["served_entities"][0]["external_model"]["openai_config"]
    assert config["openai_api_key_plaintext"] == "[REDACTED]"
    assert KEY.encode() not in (gateway.data_dir / "modelyard.db").read_bytes()


def test_config_sent_back_as_shown_keeps_its_keys(
    gateway: Server, fake: FakeOpenAI, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [openai_entity(fake)])
    url = f"{gateway.url}/api/2.0/serving-endpoints/{endpoint_name}"
    shown = requests.get(url, headers=gateway.headers).json()["config"]
    shown["served_entities"][0]["external_model"]["openai_config"]["openai_api_base"] += "/"
    kept = requests.put(f"{url}/config", json=shown, headers=gateway.headers)
    assert kept.status_code == 200, kept.text
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "still works"}]
    )
    assert answer.choices[0].message.content == "You said: still works"
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {KEY}"

    # A new entity has no stored key to keep: sending [REDACTED] for it is a clear 400.
    shown["served_entities"][0]["name"] = "another"
    shown.pop("traffic_config", None)
    refused = requests.put(f"{url}/config", json=shown, headers=gateway.headers)
    assert refused.status_code == 400
    assert "openai_api_key_plaintext is '[REDACTED]'" in refused.json()["message"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "openai_api_key is required"),
        ({"openai_api_key": "sk-literal"}, "must be a secret reference"),
        ({"openai_api_key": "{{secrets/nope/missing}}"}, "'nope/missing'"),
        ({"openai_api_key_plaintext": "k", "openai_api_type": "azure"}, "needs"),
        ({"openai_api_key_plaintext": "k", "openai_api_kye": "x"}, "openai_api_kye"),
    ],
)
def test_bad_provider_config_is_a_clear_400(gateway: Server, endpoint_name, config, expected):
    entity = kit.external("openai", "gpt-4o", config)
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "sk-literal")

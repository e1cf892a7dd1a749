"""The `ai21labs` provider (Jamba), driven by the real openai client through a running server,
against a fake that checks every request against AI21's API reference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI
from tests.conftest import Server, create_endpoint
from tests.fakes.ai21labs import FakeAI21
from tests.test_provider_cohere import TIME, WEATHER, streamed

KEY = "ai21-test-key-07be"
OBJECT = {"type": "object", "properties": {"echo": {"type": "string"}}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAI21]:
    upstream = FakeAI21(KEY).start()
    yield upstream
    upstream.stop()


@pytest.fixture(autouse=True)
def clean(fake: FakeAI21) -> Iterator[None]:
    fake.reset()
    yield
    fake.assert_clean()


@pytest.fixture
def client(gateway: Server) -> Iterator[OpenAI]:
    url = f"{gateway.url}/serving-endpoints"
    with OpenAI(base_url=url, api_key=gateway.token, max_retries=0) as openai_client:
        yield openai_client  # closed after the test: no sockets left for the GC to find


def jamba(fake: FakeAI21, **cfg: Any) -> dict:
    return {
        "name": "jamba",
        "external_model": {
            "provider": "ai21labs",
            "name": "jamba-large",
            "task": "llm/v1/chat",
            "ai21labs_config": {
                "ai21labs_api_key_plaintext": KEY,
                "ai21labs_api_base": f"{fake.url}/studio/v1",
                **cfg,
            },
        },
    }


@pytest.fixture
def endpoint(gateway: Server, fake: FakeAI21, endpoint_name: str) -> str:
    create_endpoint(gateway, endpoint_name, [jamba(fake)])
    return endpoint_name


def sent(fake: FakeAI21) -> dict[str, Any]:
    return fake.requests[-1].json()


def test_chat_plain_and_streamed(fake: FakeAI21, client: OpenAI, endpoint: str):
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    answer = client.chat.completions.create(
        model=endpoint,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "You said: hello"},
            {"role": "user", "content": parts},
        ],
        temperature=0.4, top_p=0.9, max_tokens=10000, seed=3, frequency_penalty=0.2,
    )  # fmt: skip
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.model == "jamba-large"
    assert answer.created > 0 and not hasattr(answer, "meta")
    assert answer.usage is not None and answer.usage.total_tokens == 4
    body = sent(fake)
    assert fake.requests[-1].path == "/studio/v1/chat/completions"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][3] == {"role": "user", "content": "hi"}
    # Jamba's ceiling for max_tokens; seed and penalties are sampling hints it does not take.
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (4096, 0.4, 0.9)

    chunks = list(
        client.chat.completions.create(
            model=endpoint,
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert streamed(chunks)[0] == "You said: stream me" and streamed(chunks)[2] == ["stop"]
    assert sent(fake)["stream"] is True and "stream_options" not in sent(fake)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    assert {(c.object, c.model) for c in chunks} == {("chat.completion.chunk", "jamba-large")}
    assert len({c.id for c in chunks}) == 1


def test_parallel_tool_calls_round_trip(fake: FakeAI21, client: OpenAI, endpoint: str):
    messages: list = [{"role": "user", "content": "Paris"}]
    first = client.chat.completions.create(model=endpoint, messages=messages, tools=[WEATHER, TIME])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}] * 2
    assert sent(fake)["tools"] == [WEATHER, TIME]

    # Jamba streams text only: a streamed request with tools is answered whole, then replayed.
    chunks = list(
        client.chat.completions.create(
            model=endpoint,
            messages=messages,
            tools=[WEATHER, TIME],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text, streamed_calls, finishes = streamed(chunks)
    assert [streamed_calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert json.loads(streamed_calls[1]["arguments"]) == {"city": "Paris"}
    assert (text, finishes) == ("", ["tool_calls"])
    assert "stream" not in sent(fake) and chunks[-1].usage is not None

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "14:00"},
    ]
    final = client.chat.completions.create(model=endpoint, messages=messages, tools=[WEATHER, TIME])
    assert final.choices[0].message.content == "Results: sunny, 21 C; 14:00"
    assistant, *results = sent(fake)["messages"][1:]
    assert assistant["content"] == "" and len(assistant["tool_calls"]) == 2
    assert results == [
        {"role": "tool", "content": "sunny, 21 C", "tool_call_id": calls[0].id},
        {"role": "tool", "content": "14:00", "tool_call_id": calls[1].id},
    ]
    again = client.chat.completions.create(
        model=endpoint, messages=messages, tools=[WEATHER, TIME], stream=True
    )
    assert streamed(list(again))[0] == "Results: sunny, 21 C; 14:00"


def test_tool_choice(fake: FakeAI21, client: OpenAI, endpoint: str):
    ask = {"model": endpoint, "messages": [{"role": "user", "content": "Rome"}]}
    none = client.chat.completions.create(**ask, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.content == "You said: Rome"
    assert "tools" not in sent(fake)
    fake.reset()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**ask, tools=[WEATHER], tool_choice="required")
    assert "cannot force a tool call" in str(err.value)
    assert fake.requests == []


def test_json_mode_stop_max_tokens_and_extra_params(fake: FakeAI21, client: OpenAI, endpoint: str):
    answer = client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": OBJECT}},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    assert sent(fake)["response_format"] == {"type": "json_object"}

    cut = client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("You said:", "length")
    chunks = client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "one two three"}],
        stop=["two"],
        stream=True,
    )
    assert streamed(list(chunks))[0] == "You said: one "
    assert sent(fake)["stop"] == ["two"]

    documents = [{"content": "Jamba is a hybrid model.", "id": "d1"}]
    client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "docs"}],
        n=2,
        temperature=0.5,
        extra_body={"extra_params": {"documents": documents}},
    )
    assert sent(fake)["documents"] == documents and sent(fake)["n"] == 2


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeAI21, client: OpenAI, endpoint_name: str
):
    create_endpoint(gateway, endpoint_name, [jamba(fake, ai21labs_api_key_plaintext="bad-key")])
    with pytest.raises(openai.AuthenticationError) as denied:
        client.chat.completions.create(
            model=endpoint_name, messages=[{"role": "user", "content": "x"}]
        )
    assert "Bad or missing API token" in str(denied.value)

    r = requests.put(
        f"{gateway.url}/api/2.0/serving-endpoints/{endpoint_name}/config",
        json={"served_entities": [jamba(fake)]},
        headers=gateway.headers,
    )
    assert r.status_code == 200, r.text
    fake.fail_next("status:429")
    r = requests.post(
        f"{gateway.url}/serving-endpoints/{endpoint_name}/invocations",
        json={"messages": [{"role": "user", "content": "x"}]},
        headers=gateway.headers,
    )
    assert r.status_code == 429
    assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "injected failure with status 429" in r.json()["message"]

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=endpoint_name, messages=[{"role": "user", "content": "x"}], n=2, temperature=0
        )
    assert "n > 1 needs temperature > 0" in str(bad.value)
    fake.violations.clear()  # provoked on purpose

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=endpoint_name, messages=[{"role": "user", "content": "x"}], logprobs=True
        )
    assert "logprobs" in str(refused.value)


CHAT, PLAIN = "llm/v1/chat", {"ai21labs_api_key_plaintext": "k"}


@pytest.mark.parametrize(
    ("config", "task", "expected"),
    [
        ({}, CHAT, "ai21labs_api_key is required"),
        ({"ai21labs_api_key": "a-literal"}, CHAT, "must be a secret reference"),
        ({**PLAIN, "ai21labs_api_key": "{{secrets/s/k}}"}, CHAT, "not both"),
        ({**PLAIN, "ai21labs_api_base": ["x"]}, CHAT, "ai21labs_api_base"),
        ({**PLAIN, "ai21_api_key": "x"}, CHAT, "ai21_api_key"),
        (PLAIN, "llm/v1/embeddings", "does not serve llm/v1/embeddings"),
    ],
)
def test_bad_config_is_a_clear_400(gateway: Server, endpoint_name, config, task, expected):
    entity = {
        "external_model": {
            "provider": "ai21labs",
            "name": "jamba-mini",
            "task": task,
            "ai21labs_config": config,
        }
    }
    r = requests.post(
        f"{gateway.url}/api/2.0/serving-endpoints",
        json={"name": endpoint_name, "config": {"served_entities": [entity]}},
        headers=gateway.headers,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in r.json()["message"]
    assert "a-literal" not in r.text

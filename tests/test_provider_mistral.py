"""The `mistral` provider, driven by the real openai client through a running server, against a
fake that checks every request against Mistral's API reference (which allows no other fields)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.mistral import FakeMistral

KEY = "mistral-test-key-51ac"
fake, clean = kit.fake_fixtures(lambda: FakeMistral(KEY))


def mistral(fake: FakeMistral, task: str = "llm/v1/chat", name: str = "mistral-large-latest",
            **cfg: Any) -> dict:  # fmt: skip
    config = {"mistral_api_key_plaintext": KEY, "mistral_api_base": f"{fake.url}/v1", **cfg}
    return kit.external("mistral", name, config, task, "mistral")


@pytest.fixture
def endpoint(gateway: Server, fake: FakeMistral, endpoint_name: str) -> str:
    create_endpoint(gateway, endpoint_name, [mistral(fake)])
    return endpoint_name


def test_chat_plain_and_streamed(fake: FakeMistral, openai_client: OpenAI, endpoint: str):
    answer = openai_client.chat.completions.create(
        model=endpoint,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "hello", "name": "ana"},
            {"role": "assistant", "content": "You said: hello"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        temperature=0.3, top_p=0.9, seed=11, max_tokens=20, presence_penalty=0.5,
        extra_body={"top_k": 5},
    )  # fmt: skip
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == 4
    body = kit.sent(fake)
    assert fake.requests[-1].path == "/v1/chat/completions"
    assert body["random_seed"] == 11 and "seed" not in body
    assert "top_k" not in body and "stream" not in body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1] == {"role": "user", "content": "hello"}  # no `name` upstream
    assert body["messages"][3]["content"] == [{"type": "text", "text": "hi"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 20)
    assert not hasattr(answer.choices[0].message, "prefix")

    chunks = kit.chat_chunks(
        openai_client, endpoint, "stream me", stream_options={"include_usage": True}
    )
    assert kit.streamed(chunks)[0] == "You said: stream me" and kit.streamed(chunks)[2] == ["stop"]
    assert kit.sent(fake)["stream"] is True and "stream_options" not in kit.sent(fake)
    # Mistral's usage rides on its last content chunk; the client gets OpenAI's usage chunk.
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    quiet = kit.chat_chunks(openai_client, endpoint, "x")
    assert all(c.usage is None and c.choices for c in quiet)


def test_parallel_tool_calls_round_trip(fake: FakeMistral, openai_client: OpenAI, endpoint: str):
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}] * 2

    streamed_calls = kit.streamed(
        list(
            openai_client.chat.completions.create(
                model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME], stream=True
            )
        )
    )[1]
    assert [streamed_calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert [streamed_calls[i]["id"] for i in (0, 1)] == [c.id for c in calls]
    assert json.loads(streamed_calls[1]["arguments"]) == {"city": "Paris"}

    messages += kit.tool_replies(choice.message, "sunny, 21 C", "14:00")
    final = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME]
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 14:00"
    results = kit.sent(fake)["messages"][2:]
    assert [(r["name"], r["tool_call_id"]) for r in results] == [
        ("get_weather", calls[0].id),
        ("get_time", calls[1].id),
    ]
    chunks = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME], stream=True
    )
    assert kit.streamed(list(chunks))[0] == "Results: sunny, 21 C; 14:00"


def test_tool_choice(fake: FakeMistral, openai_client: OpenAI, endpoint: str):
    ask = {"model": endpoint, "messages": [{"role": "user", "content": "Rome"}]}
    openai_client.chat.completions.create(**ask, tools=[kit.WEATHER], tool_choice="required")
    assert kit.sent(fake)["tool_choice"] == "any"
    none = openai_client.chat.completions.create(**ask, tools=[kit.WEATHER], tool_choice="none")
    assert none.choices[0].message.content == "You said: Rome"
    forced = {"type": "function", "function": {"name": "get_time"}}
    named = openai_client.chat.completions.create(
        **ask, tools=[kit.WEATHER, kit.TIME], tool_choice=forced
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    assert kit.sent(fake)["tool_choice"] == forced


def test_json_mode_and_schema(fake: FakeMistral, openai_client: OpenAI, endpoint: str):
    answer = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "schema"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "e",
                "description": "an echo",
                "schema": schema,
                "strict": True,
            },
        },
    )
    assert kit.sent(fake)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "e", "schema": schema, "strict": True},
    }


def test_stop_max_tokens_and_extra_params(fake: FakeMistral, openai_client: OpenAI, endpoint: str):
    cut = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    assert cut.choices[0].message.content == "You said:"
    assert cut.choices[0].finish_reason == "length"
    stopped = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "one two three"}],
        stop=["two"],
        extra_body={"safe_prompt": True, "extra_params": {"parallel_tool_calls": False}},
    )
    assert stopped.choices[0].message.content == "You said: one "
    body = kit.sent(fake)
    assert body["stop"] == ["two"] and body["safe_prompt"] is True
    assert body["parallel_tool_calls"] is False and "extra_params" not in body

    two = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "x"}], n=2
    )
    assert kit.sent(fake)["n"] == 2 and two.choices[0].message.content == "You said: x"


def test_embeddings(gateway: Server, fake: FakeMistral, openai_client: OpenAI, endpoint_name: str):
    create_endpoint(gateway, endpoint_name, [mistral(fake, "llm/v1/embeddings", "mistral-embed")])
    vectors = openai_client.embeddings.create(
        model=endpoint_name,
        input=["ab", "abcd"],
        encoding_format="float",
        extra_body={"dimensions": 512},
    )
    assert [d.embedding for d in vectors.data] == [[2.0, 0.5, -0.5], [4.0, 0.5, -0.5]]
    assert vectors.usage.prompt_tokens == 2
    body = kit.sent(fake)
    assert fake.requests[-1].path == "/v1/embeddings"
    assert body["model"] == "mistral-embed" and body["output_dimension"] == 512
    assert "dimensions" not in body


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeMistral, openai_client: OpenAI, endpoint_name: str
):
    create_endpoint(gateway, endpoint_name, [mistral(fake, mistral_api_key_plaintext="wrong")])
    denied = kit.chat_error(openai_client, endpoint_name, openai.AuthenticationError)
    assert "Unauthorized" in str(denied)

    kit.update_config(gateway, endpoint_name, [mistral(fake)])
    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)

    # An unknown top-level key passes through, and the API's refusal comes back as a 400.
    bad = kit.chat_error(
        openai_client, endpoint_name, openai.BadRequestError, extra_body={"frobnicate": 1}
    )
    assert "fields the API does not document: ['frobnicate']" in str(bad)
    fake.violations.clear()  # provoked on purpose

    refused = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError, logprobs=True)
    assert "logprobs" in str(refused)


CHAT, PLAIN = "llm/v1/chat", {"mistral_api_key_plaintext": "k"}


@pytest.mark.parametrize(
    ("config", "task", "expected"),
    [
        ({}, CHAT, "mistral_api_key is required"),
        ({"mistral_api_key": "m-literal"}, CHAT, "must be a secret reference"),
        ({**PLAIN, "mistral_api_key_plaintext": 42}, CHAT, "mistral_api_key_plaintext"),
        ({**PLAIN, "mistral_api_base": "mistral.ai"}, CHAT, "mistral_api_base"),
        ({**PLAIN, "mistral_api_bse": "x"}, CHAT, "mistral_api_bse"),
        (PLAIN, "llm/v1/completions", "does not serve llm/v1/completions"),
    ],
)
def test_bad_config_is_a_clear_400(gateway: Server, endpoint_name, config, task, expected):
    entity = kit.external("mistral", "mistral-small-latest", config, task)
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "m-literal")

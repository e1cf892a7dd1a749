"""The `cohere` provider (Chat v2, Embed v2), driven by the real openai client through a running
server, against a fake that checks every request against Cohere's API reference."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.cohere import FakeCohere

KEY = "co-test-key-8d2e"
fake, clean = kit.fake_fixtures(lambda: FakeCohere(KEY))


def command(fake: FakeCohere, task: str = "llm/v1/chat", name: str = "command-a", **cfg) -> dict:
    config = {"cohere_api_key_plaintext": KEY, "cohere_api_base": fake.url, **cfg}
    return kit.external("cohere", name, config, task, "command")


@pytest.fixture
def endpoint(gateway: Server, fake: FakeCohere, endpoint_name: str) -> str:
    create_endpoint(gateway, endpoint_name, [command(fake)])
    return endpoint_name


def test_chat_plain_and_streamed(fake: FakeCohere, openai_client: OpenAI, endpoint: str):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "You said: hello"},
        {"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]},
    ]
    answer = openai_client.chat.completions.create(
        model=endpoint, messages=history, temperature=0.2, top_p=1.0, seed=7, max_tokens=20,
        extra_body={"top_k": 40},
    )  # fmt: skip
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1, 3)
    assert answer.usage.total_tokens == 4
    body = kit.sent(fake)
    assert fake.requests[-1].path == "/v2/chat"
    assert body["model"] == "command-a" and body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "You said: hello"},
        {"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]},
    ]
    # OpenAI's top_p of 1 is past Cohere's bound for `p`: the nearest value it takes is sent.
    assert (body["temperature"], body["p"], body["k"], body["seed"]) == (0.2, 0.99, 40, 7)
    assert body["max_tokens"] == 20

    chunks = kit.chat_chunks(
        openai_client, endpoint, "stream me", stream_options={"include_usage": True}
    )
    text, calls, finishes = kit.streamed(chunks)
    assert (text, calls, finishes) == ("You said: stream me", {}, ["stop"])
    assert kit.sent(fake)["stream"] is True
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == "You "

    # Without include_usage the client sees no usage chunk.
    quiet = kit.chat_chunks(openai_client, endpoint, "x")
    assert all(c.usage is None for c in quiet) and all(c.choices for c in quiet)


def test_parallel_tool_calls_round_trip(fake: FakeCohere, openai_client: OpenAI, endpoint: str):
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}] * 2
    assert len({c.id for c in calls}) == 2
    # The model's tool plan is what the assistant said before calling.
    assert choice.message.content == "I will call get_weather and get_time."
    tools_sent = kit.sent(fake)["tools"]
    assert tools_sent[0] == kit.WEATHER and "tool_choice" not in kit.sent(fake)

    messages += kit.tool_replies(choice.message, "sunny, 21 C", "14:00")
    final = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME]
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 14:00"
    assert final.choices[0].finish_reason == "stop"
    assistant, *results = kit.sent(fake)["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "tool_plan": "I will call get_weather and get_time.",
        "tool_calls": [c.model_dump() for c in calls],
    }
    assert results == [
        {"role": "tool", "tool_call_id": call.id, "content": [{"type": "text", "text": text}]}
        for call, text in zip(calls, ["sunny, 21 C", "14:00"], strict=True)
    ]

    final_stream = list(
        openai_client.chat.completions.create(
            model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME], stream=True
        )
    )
    assert kit.streamed(final_stream)[0] == "Results: sunny, 21 C; 14:00"


def test_parallel_tool_calls_streamed(fake: FakeCohere, openai_client: OpenAI, endpoint: str):
    chunks = kit.chat_chunks(openai_client, endpoint, "Oslo", tools=[kit.WEATHER, kit.TIME])
    text, calls, finishes = kit.streamed(chunks)
    assert text == "I will call get_weather and get_time."
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Oslo"}] * 2
    assert calls[0]["id"] and calls[0]["id"] != calls[1]["id"]
    assert finishes == ["tool_calls"]


def test_tool_choice(fake: FakeCohere, openai_client: OpenAI, endpoint: str):
    ask = {"model": endpoint, "messages": [{"role": "user", "content": "Rome"}]}
    none = openai_client.chat.completions.create(**ask, tools=[kit.WEATHER], tool_choice="none")
    assert none.choices[0].message.content == "You said: Rome"
    assert kit.sent(fake)["tool_choice"] == "NONE"

    required = openai_client.chat.completions.create(
        **ask, tools=[kit.WEATHER], tool_choice="required"
    )
    assert required.choices[0].finish_reason == "tool_calls"
    assert kit.sent(fake)["tool_choice"] == "REQUIRED"

    named = openai_client.chat.completions.create(
        **ask,
        tools=[kit.WEATHER, kit.TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    assert [t["function"]["name"] for t in kit.sent(fake)["tools"]] == ["get_time"]
    assert kit.sent(fake)["tool_choice"] == "REQUIRED"


def test_json_mode_and_schema(fake: FakeCohere, openai_client: OpenAI, endpoint: str):
    answer = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    assert kit.sent(fake)["response_format"] == {"type": "json_object"}

    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "schema"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}},
    )
    assert kit.sent(fake)["response_format"] == {"type": "json_object", "json_schema": schema}


def test_stop_and_max_tokens(fake: FakeCohere, openai_client: OpenAI, endpoint: str):
    cut = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    assert cut.choices[0].message.content == "You said:"
    assert cut.choices[0].finish_reason == "length"

    stopped = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], stop="two"
    )
    assert stopped.choices[0].message.content == "You said: one "
    assert kit.sent(fake)["stop_sequences"] == ["two"]

    chunks = kit.chat_chunks(openai_client, endpoint, "one two three", max_tokens=3)
    assert kit.streamed(chunks)[0] == "You said: one" and kit.streamed(chunks)[2] == ["length"]


def test_extra_params_unknown_keys_and_several_choices(
    fake: FakeCohere, openai_client: OpenAI, endpoint: str
):
    openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "pass"}],
        extra_body={"safety_mode": "STRICT", "extra_params": {"priority": 3}},
    )
    body = kit.sent(fake)
    assert body["safety_mode"] == "STRICT" and body["priority"] == 3
    assert "extra_params" not in body

    fake.reset()
    answer = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "twice"}], n=2
    )
    assert [c.message.content for c in answer.choices] == ["You said: twice"] * 2
    assert [c.index for c in answer.choices] == [0, 1]
    assert len(fake.requests) == 2


def test_embeddings(gateway: Server, fake: FakeCohere, openai_client: OpenAI, endpoint_name: str):
    create_endpoint(gateway, endpoint_name, [command(fake, "llm/v1/embeddings", "embed-v4.0")])
    vectors = openai_client.embeddings.create(
        model=endpoint_name, input=["ab", "abcd"], encoding_format="float"
    )
    assert [d.embedding for d in vectors.data] == [[2.0, 0.5, -0.5], [4.0, 0.5, -0.5]]
    assert vectors.usage.prompt_tokens == 2
    body = kit.sent(fake)
    assert fake.requests[-1].path == "/v2/embed"
    assert body == {
        "model": "embed-v4.0",
        "texts": ["ab", "abcd"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }

    openai_client.embeddings.create(
        model=endpoint_name,
        input="query",
        encoding_format="float",
        extra_body={"dimensions": 256, "extra_params": {"input_type": "search_query"}},
    )
    body = kit.sent(fake)
    assert body["input_type"] == "search_query" and body["output_dimension"] == 256

    # More texts than one call takes: batches, answered in order.
    fake.reset()
    many = [f"t{'x' * i}" for i in range(100)]
    answer = openai_client.embeddings.create(
        model=endpoint_name, input=many, encoding_format="float"
    )
    assert [len(r.json()["texts"]) for r in fake.requests] == [96, 4]
    assert [d.embedding[0] for d in answer.data] == [float(len(t)) for t in many]
    assert [d.index for d in answer.data] == list(range(100))

    raw = kit.invoke(gateway, endpoint_name, {"input": "abc", "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert struct.unpack("<3f", packed) == (3.0, 0.5, -0.5)


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeCohere, openai_client: OpenAI, endpoint_name: str
):
    create_endpoint(gateway, endpoint_name, [command(fake, cohere_api_key_plaintext="co-wrong")])
    denied = kit.chat_error(openai_client, endpoint_name, openai.AuthenticationError)
    assert "invalid api token" in str(denied)

    kit.update_config(gateway, endpoint_name, [command(fake)])
    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)

    # A request the API refuses (here: a temperature past Cohere's bound) keeps its 400.
    bad = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError, temperature=1.5)
    assert "temperature must be in [0, 1]" in str(bad)
    fake.violations.clear()  # provoked on purpose

    # A generation that fails before any text is a plain (retryable) 502 with its reason...
    fake.fail_stream_next("generation failed early")
    early = kit.chat_error(openai_client, endpoint_name, openai.InternalServerError, stream=True)
    assert early.status_code == 502 and "generation failed early" in str(early)

    # ... and one that fails after text was sent ends the stream with the upstream's error.
    fake.fail_stream_next("model overloaded mid-answer", after_text=True)
    chunks = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as broken:
        for chunk in chunks:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == "You " and "model overloaded mid-answer" in str(broken.value)


def test_early_stream_failure_falls_back(
    gateway: Server, fake: FakeCohere, openai_client: OpenAI, endpoint_name: str
):
    second = {**command(fake), "name": "second"}
    create_endpoint(
        gateway,
        endpoint_name,
        [command(fake), second],
        ai_gateway={"fallback_config": {"enabled": True}},
    )
    fake.fail_stream_next("generation failed early")
    raw = openai_client.chat.completions.with_raw_response.create(
        model=endpoint_name, messages=[{"role": "user", "content": "busy"}], stream=True
    )
    assert kit.streamed(list(raw.parse()))[0] == "You said: busy"
    assert raw.headers["served-model-name"] == "second" and len(fake.requests) == 2


def test_unsupported_requests_are_clear_400s(
    fake: FakeCohere, openai_client: OpenAI, endpoint: str
):
    err = kit.chat_error(openai_client, endpoint, openai.BadRequestError, logprobs=True)
    assert "logprobs" in str(err)
    err = kit.chat_error(
        openai_client,
        endpoint,
        openai.BadRequestError,
        tools=[kit.WEATHER],
        tool_choice={"type": "function", "function": {"name": "nope"}},
    )
    assert "'nope'" in str(err)
    assert fake.requests == []


CHAT, PLAIN = "llm/v1/chat", {"cohere_api_key_plaintext": "k"}


@pytest.mark.parametrize(
    ("config", "task", "expected"),
    [
        ({}, CHAT, "cohere_api_key is required"),
        ({"cohere_api_key": "co-literal"}, CHAT, "must be a secret reference"),
        ({"cohere_api_key": "{{secrets/nope/gone}}"}, CHAT, "'nope/gone'"),
        ({**PLAIN, "cohere_api_base": 5}, CHAT, "cohere_api_base"),
        ({**PLAIN, "cohere_api_base": "api.cohere.com"}, CHAT, "cohere_api_base"),
        ({**PLAIN, "cohere_api_kye": "x"}, CHAT, "cohere_api_kye"),
        (PLAIN, "llm/v1/completions", "does not serve llm/v1/completions"),
    ],
)
def test_bad_config_is_a_clear_400(gateway: Server, endpoint_name, config, task, expected):
    entity = kit.external("cohere", "command-a", config, task)
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "co-literal")

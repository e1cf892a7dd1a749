"""The `anthropic` provider, driven by the real openai client through a running server, against
a fake Messages API that checks every request against Anthropic's API reference."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.anthropic import FakeAnthropic

KEY = "sk-ant-test-key-7d2e"
MODEL = "claude-sonnet-4-5"
fake, clean = kit.fake_fixtures(lambda: FakeAnthropic(KEY))


def claude(fake: FakeAnthropic, name: str = "claude", **cfg: Any) -> dict:
    config = {"anthropic_api_key_plaintext": KEY, "anthropic_api_base": fake.url, **cfg}
    return kit.external("anthropic", MODEL, config, name=name)


@pytest.fixture
def endpoint(gateway: Server, fake: FakeAnthropic, endpoint_name: str) -> str:
    create_endpoint(gateway, endpoint_name, [claude(fake)])
    return endpoint_name


def finish(chunks: list) -> str | None:
    return next(
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    )


def test_chat_plain_and_streamed(fake: FakeAnthropic, openai_client: OpenAI, endpoint: str):
    messages: list = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "how "}, {"type": "text", "text": "are you"}],
        },
    ]
    answer = openai_client.chat.completions.create(
        model=endpoint, messages=messages, temperature=0.3, top_p=0.9, extra_body={"top_k": 5}
    )
    assert answer.choices[0].message.content == "You said: how are you"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 5)
    assert answer.usage.total_tokens == 8
    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    body = request.json()
    assert body["model"] == MODEL and body["system"] == "Be brief."
    assert body["messages"][:2] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
    ]
    assert [b["text"] for b in body["messages"][2]["content"]] == ["how ", "are you"]
    assert body["max_tokens"] == 4096  # defaulted: the API requires it
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.3, 0.9, 5)

    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert kit.streamed_text(chunks) == "You said: how are you"
    assert finish(chunks) == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    assert len({c.id for c in chunks}) == 1
    assert kit.sent(fake)["stream"] is True


def test_acceptance_openai_client_tool_calls_round_trip_through_anthropic(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str
):
    """The openai client offers two tools, gets OpenAI-shaped parallel `tool_calls` (plain and
    streamed), sends both results back as two tool messages, and gets the final answer."""
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert [(c.type, c.function.name) for c in message.tool_calls] == [
        ("function", "get_weather"),
        ("function", "get_time"),
    ]
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [
        {"city": "Paris"},
        {"place": "Paris"},
    ]
    assert kit.sent(fake)["tools"][0] == {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": kit.WEATHER["function"]["parameters"],
    }

    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE], stream=True
        )
    )
    calls = kit.streamed(chunks).calls.values()
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"place": "Paris"}),
    ]
    assert [c["id"] for c in calls] == [c.id for c in message.tool_calls]
    assert finish(chunks) == "tool_calls"

    messages += kit.tool_replies(message, "sunny, 21 C", "10:00")
    final = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 10:00"
    assert final.choices[0].finish_reason == "stop"
    turns = kit.sent(fake)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[1]["content"]] == ["tool_use", "tool_use"]
    assert turns[1]["content"][0]["input"] == {"city": "Paris"}
    assert [(b["type"], b["content"]) for b in turns[2]["content"]] == [
        ("tool_result", "sunny, 21 C"),
        ("tool_result", "10:00"),
    ]

    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE], stream=True
        )
    )
    assert kit.streamed_text(chunks) == "Results: sunny, 21 C; 10:00"
    assert finish(chunks) == "stop"


def test_tool_results_open_the_user_turn_even_after_a_user_message(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str
):
    call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_time", "arguments": "{}"},
    }
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "user", "content": "and be quick"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "10:00"},
    ]
    answer = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.TIME_OF_PLACE]
    )
    assert answer.choices[0].message.content == "Results: 10:00"
    last = kit.sent(fake)["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]


@pytest.mark.parametrize(
    ("options", "upstream_choice", "called"),
    [
        ({"tool_choice": "auto"}, {"type": "auto"}, ["get_weather", "get_time"]),
        ({"tool_choice": "required"}, {"type": "any"}, ["get_weather", "get_time"]),
        ({"tool_choice": "none"}, {"type": "none"}, []),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            {"type": "tool", "name": "get_time"},
            ["get_time"],
        ),
        (
            {"parallel_tool_calls": False},
            {"type": "auto", "disable_parallel_tool_use": True},
            ["get_weather"],
        ),
    ],
)
def test_tool_choice(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str, options, upstream_choice, called
):
    answer = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "Oslo"}],
        tools=[kit.WEATHER, kit.TIME_OF_PLACE],
        **options,
    )
    assert kit.sent(fake)["tool_choice"] == upstream_choice
    message = answer.choices[0].message
    assert [c.function.name for c in message.tool_calls or []] == called
    if not called:
        assert message.content == "You said: Oslo"
        assert answer.choices[0].finish_reason == "stop"


def test_json_schema_through_a_forced_tool_plain_and_streamed(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str
):
    schema = {
        "type": "object",
        "properties": {"echo": {"type": "string"}},
        "required": ["echo"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "echo", "schema": schema}}
    messages = [{"role": "user", "content": "json please"}]
    answer = openai_client.chat.completions.create(
        model=endpoint, messages=messages, response_format=response_format
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.tool_calls is None
    body = kit.sent(fake)
    assert body["tool_choice"] == {"type": "tool", "name": "json_answer"}
    assert body["tools"][0]["input_schema"] == schema

    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint, messages=messages, response_format=response_format, stream=True
        )
    )
    assert json.loads(kit.streamed_text(chunks)) == {"echo": "json please"}
    assert finish(chunks) == "stop"

    plain = openai_client.chat.completions.create(
        model=endpoint, messages=messages, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(plain.choices[0].message.content), dict)
    assert kit.sent(fake)["tools"][0]["input_schema"] == {"type": "object"}


def test_json_schema_that_is_not_an_object_is_a_clear_400(openai_client: OpenAI, endpoint: str):
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "array"}}}
    err = kit.chat_error(openai_client, endpoint, openai.BadRequestError, response_format=fmt)
    assert "must have type 'object'" in str(err)


def test_stop_sequences_and_max_tokens(fake: FakeAnthropic, openai_client: OpenAI, endpoint: str):
    stopped = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], stop=[" two"]
    )
    assert stopped.choices[0].message.content == "You said: one"
    assert stopped.choices[0].finish_reason == "stop"
    assert kit.sent(fake)["stop_sequences"] == [" two"]

    cut = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], max_tokens=3
    )
    assert cut.choices[0].message.content == "You said: one"
    assert cut.choices[0].finish_reason == "length"
    assert kit.sent(fake)["max_tokens"] == 3

    chunks = kit.chat_chunks(openai_client, endpoint, "one two three", max_completion_tokens=3)
    assert kit.streamed_text(chunks) == "You said: one"
    assert finish(chunks) == "length"


def test_refusal_is_content_filter(fake: FakeAnthropic, openai_client: OpenAI, endpoint: str):
    fake.refuse_next()
    answer = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "something bad"}]
    )
    assert answer.choices[0].finish_reason == "content_filter"
    fake.refuse_next()
    chunks = kit.chat_chunks(openai_client, endpoint, "something bad")
    assert finish(chunks) == "content_filter"


def test_extra_params_and_unknown_keys_pass_through(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str
):
    native = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    answer = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "pass"}],
        extra_body={
            "user": "u-17",
            "service_tier": "standard_only",
            "extra_params": {"output_config": native},
        },
    )
    body = kit.sent(fake)
    assert body["service_tier"] == "standard_only" and body["output_config"] == native
    assert body["metadata"] == {"user_id": "u-17"}  # OpenAI's `user`, in Anthropic's field
    assert "extra_params" not in body and "user" not in body
    assert json.loads(answer.choices[0].message.content) == {"echo": "pass"}


def test_several_choices_and_a_base_url_with_v1(
    gateway: Server, fake: FakeAnthropic, openai_client: OpenAI, endpoint_name: str
):
    create_endpoint(gateway, endpoint_name, [claude(fake, anthropic_api_base=f"{fake.url}/v1/")])
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "twice"}], n=2
    )
    assert [c.message.content for c in answer.choices] == ["You said: twice"] * 2
    assert [c.index for c in answer.choices] == [0, 1]
    assert [r.path for r in fake.requests] == ["/v1/messages"] * 2
    assert answer.usage is not None and answer.usage.completion_tokens == 6


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeAnthropic, openai_client: OpenAI, endpoint_name: str
):
    entity = claude(fake, anthropic_api_key_plaintext="sk-ant-wrong-key")
    create_endpoint(gateway, endpoint_name, [entity])
    auth = kit.chat_error(openai_client, endpoint_name, openai.AuthenticationError)
    assert "invalid x-api-key" in str(auth)

    kit.update_config(gateway, endpoint_name, [claude(fake)])
    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)

    fake.fail_next("status:400")
    bad = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError)
    assert "injected failure with status 400" in str(bad)

    # An error event before any content is a plain HTTP error, with the error type's meaning.
    fake.fail_stream_next("rate_limit_error")
    with pytest.raises(openai.RateLimitError) as limited:
        kit.chat_chunks(openai_client, endpoint_name, "x")
    assert "injected rate_limit_error" in str(limited.value)


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_529_is_retryable_and_falls_back(
    gateway: Server, fake: FakeAnthropic, openai_client: OpenAI, endpoint_name: str, stream: bool
):
    create_endpoint(
        gateway,
        endpoint_name,
        [claude(fake, name="first"), claude(fake, name="second")],
        ai_gateway={"fallback_config": {"enabled": True}},
    )
    if stream:
        fake.fail_stream_next("overloaded_error")  # the error event, inside a 200 stream
    else:
        fake.fail_next("status:529")
    raw = openai_client.chat.completions.with_raw_response.create(
        model=endpoint_name, messages=[{"role": "user", "content": "busy"}], stream=stream
    )
    parsed = raw.parse()
    text = kit.streamed_text(list(parsed)) if stream else parsed.choices[0].message.content
    assert (text, raw.headers["served-model-name"]) == ("You said: busy", "second")
    assert len(fake.requests) == 2


def test_overloaded_without_fallback_is_a_502_naming_it(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str
):
    fake.fail_next("status:529")
    err = kit.chat_error(openai_client, endpoint, openai.APIStatusError)
    assert err.status_code == 502
    assert "HTTP 529" in err.message and "injected failure" in err.message


def test_unsupported_requests_are_clear_400s(
    fake: FakeAnthropic, openai_client: OpenAI, endpoint: str
):
    err = kit.chat_error(openai_client, endpoint, openai.BadRequestError, logprobs=True)
    assert "logprobs" in str(err)
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.embeddings.create(model=endpoint, input="x", encoding_format="float")
    assert fake.requests == []


CHAT, PLAIN = "llm/v1/chat", {"anthropic_api_key_plaintext": "k"}


@pytest.mark.parametrize(
    ("config", "task", "expected"),
    [
        ({}, CHAT, "anthropic_api_key is required"),
        ({"anthropic_api_key": "sk-literal"}, CHAT, "must be a secret reference"),
        ({"anthropic_api_key": "{{secrets/nope/gone}}"}, CHAT, "'nope/gone'"),
        ({**PLAIN, "anthropic_api_bsae": "x"}, CHAT, "anthropic_api_bsae"),
        ({**PLAIN, "anthropic_api_base": "api.anthropic.com"}, CHAT, "anthropic_api_base"),
        ({"anthropic_api_key_plaintext": 42}, CHAT, "anthropic_api_key_plaintext"),
        (PLAIN, "llm/v1/embeddings", "does not serve llm/v1/embeddings"),
    ],
)
def test_bad_provider_config_is_a_clear_400(
    gateway: Server, endpoint_name: str, config: dict, task: str, expected: str
):
    entity = kit.external("anthropic", MODEL, config, task)
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "sk-literal")

"""The `ai21labs` provider (Jamba), driven by the real openai client through a running server,
against a fake that checks every request against AI21's API reference."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.ai21labs import FakeAI21

KEY = "ai21-test-key-07be"
OBJECT = {"type": "object", "properties": {"echo": {"type": "string"}}}
fake, clean = kit.fake_fixtures(lambda: FakeAI21(KEY))


def jamba(fake: FakeAI21, **cfg: Any) -> dict:
    config = {
        "ai21labs_api_key_plaintext": KEY,
        "ai21labs_api_base": f"{fake.url}/studio/v1",
        **cfg,
    }
    return kit.external("ai21labs", "jamba-large", config, name="jamba")


@pytest.fixture
def endpoint(gateway: Server, fake: FakeAI21, endpoint_name: str) -> str:
    create_endpoint(gateway, endpoint_name, [jamba(fake)])
    return endpoint_name


def test_chat_plain_and_streamed(fake: FakeAI21, openai_client: OpenAI, endpoint: str):
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    answer = openai_client.chat.completions.create(
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
    body = kit.sent(fake)
    assert fake.requests[-1].path == "/studio/v1/chat/completions"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][3] == {"role": "user", "content": "hi"}
    # Jamba's ceiling for max_tokens; seed and penalties are sampling hints it does not take.
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (4096, 0.4, 0.9)

    chunks = kit.chat_chunks(
        openai_client, endpoint, "stream me", stream_options={"include_usage": True}
    )
    assert kit.streamed(chunks)[0] == "You said: stream me" and kit.streamed(chunks)[2] == ["stop"]
    assert kit.sent(fake)["stream"] is True and "stream_options" not in kit.sent(fake)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    assert {(c.object, c.model) for c in chunks} == {("chat.completion.chunk", "jamba-large")}
    assert len({c.id for c in chunks}) == 1


def test_parallel_tool_calls_round_trip(fake: FakeAI21, openai_client: OpenAI, endpoint: str):
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}] * 2
    assert kit.sent(fake)["tools"] == [kit.WEATHER, kit.TIME]

    # Jamba streams text only: a streamed request with tools is answered whole, then replayed.
    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint,
            messages=messages,
            tools=[kit.WEATHER, kit.TIME],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text, streamed_calls, finishes = kit.streamed(chunks)
    assert [streamed_calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert json.loads(streamed_calls[1]["arguments"]) == {"city": "Paris"}
    assert (text, finishes) == ("", ["tool_calls"])
    assert "stream" not in kit.sent(fake) and chunks[-1].usage is not None

    messages += kit.tool_replies(choice.message, "sunny, 21 C", "14:00")
    final = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME]
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 14:00"
    assistant, *results = kit.sent(fake)["messages"][1:]
    assert assistant["content"] == "" and len(assistant["tool_calls"]) == 2
    assert results == [
        {"role": "tool", "content": "sunny, 21 C", "tool_call_id": calls[0].id},
        {"role": "tool", "content": "14:00", "tool_call_id": calls[1].id},
    ]
    again = openai_client.chat.completions.create(
        model=endpoint, messages=messages, tools=[kit.WEATHER, kit.TIME], stream=True
    )
    assert kit.streamed(list(again))[0] == "Results: sunny, 21 C; 14:00"


def test_tool_choice(fake: FakeAI21, openai_client: OpenAI, endpoint: str):
    ask = {"model": endpoint, "messages": [{"role": "user", "content": "Rome"}]}
    none = openai_client.chat.completions.create(**ask, tools=[kit.WEATHER], tool_choice="none")
    assert none.choices[0].message.content == "You said: Rome"
    assert "tools" not in kit.sent(fake)
    fake.reset()
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.chat.completions.create(**ask, tools=[kit.WEATHER], tool_choice="required")
    assert "cannot force a tool call" in str(err.value)
    assert fake.requests == []


def test_json_mode_stop_max_tokens_and_extra_params(
    fake: FakeAI21, openai_client: OpenAI, endpoint: str
):
    answer = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": OBJECT}},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    assert kit.sent(fake)["response_format"] == {"type": "json_object"}

    cut = openai_client.chat.completions.create(
        model=endpoint, messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("You said:", "length")
    chunks = openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "one two three"}],
        stop=["two"],
        stream=True,
    )
    assert kit.streamed(list(chunks))[0] == "You said: one "
    assert kit.sent(fake)["stop"] == ["two"]

    documents = [{"content": "Jamba is a hybrid model.", "id": "d1"}]
    openai_client.chat.completions.create(
        model=endpoint,
        messages=[{"role": "user", "content": "docs"}],
        n=2,
        temperature=0.5,
        extra_body={"extra_params": {"documents": documents}},
    )
    assert kit.sent(fake)["documents"] == documents and kit.sent(fake)["n"] == 2


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeAI21, openai_client: OpenAI, endpoint_name: str
):
    create_endpoint(gateway, endpoint_name, [jamba(fake, ai21labs_api_key_plaintext="bad-key")])
    denied = kit.chat_error(openai_client, endpoint_name, openai.AuthenticationError)
    assert "Bad or missing API token" in str(denied)

    kit.update_config(gateway, endpoint_name, [jamba(fake)])
    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)

    bad = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError, n=2, temperature=0)
    assert "n > 1 needs temperature > 0" in str(bad)
    fake.violations.clear()  # provoked on purpose

    refused = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError, logprobs=True)
    assert "logprobs" in str(refused)


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
    entity = kit.external("ai21labs", "jamba-mini", config, task)
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "a-literal")

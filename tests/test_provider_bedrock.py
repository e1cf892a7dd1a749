"""The `amazon-bedrock` provider, driven by the real openai client through a running server,
against a fake Bedrock Runtime that checks every request's body and SigV4 signature."""

from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint, delete_endpoint
from tests.fakes.bedrock import FakeBedrock

KEY_ID = "AKIAFAKEBEDROCK12345"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFAKEKEY"
REGION = "eu-west-3"
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
fake, clean = kit.fake_fixtures(lambda: FakeBedrock(KEY_ID, SECRET, REGION))


def bedrock_entity(
    fake: FakeBedrock,
    model: str = CLAUDE,
    task: str = "llm/v1/chat",
    provider: str = "Anthropic",
    **cfg: object,
) -> dict:
    config = {
        "aws_region": REGION,
        "aws_access_key_id_plaintext": KEY_ID,
        "aws_secret_access_key_plaintext": SECRET,
        "bedrock_provider": provider,
        "bedrock_endpoint_url": fake.url,
        **cfg,
    }
    return kit.external("amazon-bedrock", model, config, task, "bedrock")


def test_chat_plain_and_streamed(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        max_tokens=20,
        temperature=0.2,
        top_p=0.9,
    )
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1, 3)
    sent = fake.requests[-1]
    assert sent.path == f"/model/{CLAUDE}/converse"
    assert fake.raw_paths == [f"/model/{CLAUDE.replace(':', '%3A')}/converse"]
    body = sent.json()
    assert body["system"] == [{"text": "Be brief."}]
    assert body["inferenceConfig"] == {"maxTokens": 20, "temperature": 0.2, "topP": 0.9}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]

    chunks = kit.chat_chunks(
        openai_client, endpoint_name, "stream me", stream_options={"include_usage": True}
    )
    assert kit.streamed_text(chunks) == "You said: stream me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 2 + 4
    assert len({c.id for c in chunks}) == 1
    assert fake.requests[-1].path == f"/model/{CLAUDE}/converse-stream"


def test_tools_parallel_calls_and_results_round_trip_plain_and_streamed(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    """The acceptance path: tools out, OpenAI tool_calls back, two tool results in, answer."""
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"place": "Paris"},
    ]
    assert all(c.id.startswith("tooluse_") for c in calls)
    specs = fake.requests[-1].json()["toolConfig"]["tools"]
    assert specs[0]["toolSpec"] == {
        "name": "get_weather",
        "description": "Weather in a city",
        "inputSchema": {"json": kit.WEATHER["function"]["parameters"]},
    }

    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint_name,
            messages=messages,
            tools=[kit.WEATHER, kit.TIME_OF_PLACE],
            stream=True,
        )
    )
    streamed_calls = kit.streamed(chunks).calls
    assert {i: c["name"] for i, c in streamed_calls.items()} == {0: "get_weather", 1: "get_time"}
    assert json.loads(streamed_calls[0]["arguments"]) == {"city": "Paris"}
    assert json.loads(streamed_calls[1]["arguments"]) == {"place": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    messages += kit.tool_replies(first.choices[0].message, "sunny, 21 C", "3 pm")
    final = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 3 pm"
    assert final.choices[0].finish_reason == "stop"
    turns = fake.requests[-1].json()["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["toolResult"]["toolUseId"] for b in turns[2]["content"]] == [c.id for c in calls]
    assert turns[1]["content"][0]["toolUse"]["input"] == {"city": "Paris"}

    chunks = list(
        openai_client.chat.completions.create(
            model=endpoint_name,
            messages=messages,
            tools=[kit.WEATHER, kit.TIME_OF_PLACE],
            stream=True,
        )
    )
    assert kit.streamed_text(chunks) == "Results: sunny, 21 C; 3 pm"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_time"}}, {"tool": {"name": "get_time"}}),
    ],
)
def test_tool_choice_maps_to_converse(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name, tool_choice, expected
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "x"}],
        tools=[kit.WEATHER, kit.TIME_OF_PLACE],
        tool_choice=tool_choice,
    )
    assert fake.requests[-1].json()["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_sends_no_tools(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "just talk"}],
        tools=[kit.WEATHER],
        tool_choice="none",
    )
    assert answer.choices[0].message.content == "You said: just talk"
    assert answer.choices[0].message.tool_calls is None
    assert "toolConfig" not in fake.requests[-1].json()

    # With tool calls in the history Bedrock needs toolConfig, so the tools go, unforced.
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[
            {"role": "user", "content": "Oslo"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "snow"},
        ],
        tools=[kit.WEATHER],
        tool_choice="none",
    )
    assert answer.choices[0].message.content == "Results: snow"
    sent = fake.requests[-1].json()["toolConfig"]
    assert [t["toolSpec"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert "toolChoice" not in sent


def test_json_schema_and_json_mode(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": {"name": "echo", "schema": schema}},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "json please"}
    text_format = fake.requests[-1].json()["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    assert json.loads(text_format["structure"]["jsonSchema"]["schema"]) == schema
    assert text_format["structure"]["jsonSchema"]["name"] == "echo"

    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "object please"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(answer.choices[0].message.content) == {"echo": "object please"}
    assert "JSON" in fake.requests[-1].json()["system"][-1]["text"]


def test_stop_and_max_tokens_give_length(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    cut = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "one two three four"}],
        max_tokens=3,
        stop=["four"],
    )
    assert cut.choices[0].message.content == "You said: one"
    assert cut.choices[0].finish_reason == "length"
    assert fake.requests[-1].json()["inferenceConfig"] == {
        "maxTokens": 3,
        "stopSequences": ["four"],
    }

    chunks = kit.chat_chunks(openai_client, endpoint_name, "one two three four", max_tokens=2)
    assert kit.streamed_text(chunks) == "You said:"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_top_k_extra_params_and_unknown_keys_pass_through(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    guardrail = {"guardrailIdentifier": "gr-123", "guardrailVersion": "1"}
    openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "extras"}],
        seed=7,
        extra_body={
            "top_k": 40,
            "user": "u-17",
            "guardrailConfig": guardrail,
            "anthropic_beta": ["token-efficient-tools-2025-02-19"],
            "extra_params": {"reasoning_effort": "low"},
        },
    )
    sent = fake.requests[-1].json()
    assert sent["additionalModelRequestFields"] == {
        "top_k": 40,
        "anthropic_beta": ["token-efficient-tools-2025-02-19"],
        "reasoning_effort": "low",
    }
    assert sent["guardrailConfig"] == guardrail
    assert sent["requestMetadata"] == {"user": "u-17"}
    assert "seed" not in json.dumps(sent)


def test_n_makes_several_calls(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "twice"}], n=2
    )
    assert [c.message.content for c in answer.choices] == ["You said: twice"] * 2
    assert [c.index for c in answer.choices] == [0, 1]
    assert len(fake.requests) == 2


def test_wrong_secret_key_gives_bedrocks_403_and_message(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    entity = bedrock_entity(fake)
    entity["external_model"]["amazon_bedrock_config"]["aws_secret_access_key_plaintext"] = (
        "not-the-right-secret-key"
    )
    create_endpoint(gateway, endpoint_name, [entity])
    err = kit.chat_error(openai_client, endpoint_name, openai.PermissionDeniedError)
    assert err.status_code == 403
    assert "The request signature we calculated does not match" in str(err)
    assert "not-the-right-secret-key" not in str(err)
    assert fake.violations and "signature" in fake.violations[0]
    fake.violations.clear()  # the wrong key was the point


def test_upstream_errors_keep_status_and_message(gateway: Server, fake: FakeBedrock, endpoint_name):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    chat = {"messages": [{"role": "user", "content": "x"}]}

    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)

    fake.fail_next("status:400")
    r = kit.invoke(gateway, endpoint_name, chat)
    kit.assert_error(r, 400, "injected failure with status 400")

    fake.fail_next("status:503")
    r = kit.invoke(gateway, endpoint_name, {**chat, "stream": True})
    kit.assert_error(r, 502, "injected failure with status 503")


def test_exception_inside_the_stream_keeps_its_status(
    gateway: Server, fake: FakeBedrock, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [bedrock_entity(fake)])
    fake.fail_stream_next("throttlingException", "Too many tokens, please wait.")
    r = kit.invoke(
        gateway, endpoint_name, {"messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    message = "throttlingException: Too many tokens, please wait."
    kit.assert_error(r, 429, message, "REQUEST_LIMIT_EXCEEDED")


def test_titan_and_cohere_embeddings(
    gateway: Server, fake: FakeBedrock, openai_client: OpenAI, endpoint_name
):
    titan = bedrock_entity(
        fake, model="amazon.titan-embed-text-v2:0", task="llm/v1/embeddings", provider="amazon"
    )
    create_endpoint(gateway, endpoint_name, [titan])
    vectors = openai_client.embeddings.create(
        model=endpoint_name, input=["ab", "abcd efg"], encoding_format="float", dimensions=256
    )
    assert [d.embedding[0] for d in vectors.data] == [2.0, 8.0]
    assert vectors.usage.prompt_tokens == 1 + 2
    assert sorted(r.json()["inputText"] for r in fake.requests) == ["ab", "abcd efg"]
    assert all(r.json()["dimensions"] == 256 for r in fake.requests)
    assert fake.model_ids == ["amazon.titan-embed-text-v2:0"] * 2
    # Without encoding_format the client asks for base64 and decodes it itself.
    plain = openai_client.embeddings.create(model=endpoint_name, input="abc")
    assert plain.data[0].embedding[:2] == [3.0, 0.5]

    fake.reset()
    name = endpoint_name + "-cohere"
    cohere = bedrock_entity(
        fake, model="cohere.embed-english-v3", task="llm/v1/embeddings", provider="cohere"
    )
    create_endpoint(gateway, name, [cohere])
    try:
        texts = [f"text {i}" for i in range(100)]
        vectors = openai_client.embeddings.create(model=name, input=texts, encoding_format="float")
        assert [d.embedding[0] for d in vectors.data] == [float(len(t)) for t in texts]
        assert [len(r.json()["texts"]) for r in fake.requests] == [96, 4]
        assert fake.requests[0].json()["input_type"] == "search_document"
    finally:
        delete_endpoint(gateway, name)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"aws_region": None}, "aws_region"),
        ({"aws_region": "Frankfurt"}, "aws_region"),
        ({"aws_secret_access_key_plaintext": None}, "aws_secret_access_key is required"),
        ({"aws_access_key_id_plaintext": None, "aws_access_key_id": "AKIA"}, "secret reference"),
        ({"bedrock_provider": "meta"}, "bedrock_provider"),
        ({"instance_profile_arn": "arn:aws:iam::1:instance-profile/x"}, "instance_profile_arn"),
        ({"bedrock_endpoint": "http://x"}, "bedrock_endpoint"),
        ({"bedrock_endpoint_url": "bedrock.local"}, "bedrock_endpoint_url"),
    ],
)
def test_bad_config_is_a_clear_400(
    gateway: Server, fake: FakeBedrock, endpoint_name, change, expected
):
    entity = bedrock_entity(fake)
    config = entity["external_model"]["amazon_bedrock_config"]
    for key, value in change.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, SECRET)


def test_embeddings_need_an_embedding_provider(gateway: Server, fake: FakeBedrock, endpoint_name):
    entity = bedrock_entity(fake, task="llm/v1/embeddings", provider="anthropic")
    r = kit.post_endpoint(gateway, endpoint_name, [entity])
    assert r.status_code == 400
    assert "bedrock_provider 'anthropic' has no embedding models" in r.json()["message"]

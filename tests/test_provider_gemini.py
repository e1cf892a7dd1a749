"""The `gemini` provider (Google AI Studio), driven by the real openai client through a running
server, against a fake that checks every request against Gemini's API reference."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.gemini import FAILING_PROMPT, SKIP_SIGNATURE, FakeGemini

KEY = "AIza-test-gemini-key-7d2e"
MODEL = "gemini-2.5-flash"
fake, clean = kit.fake_fixtures(lambda: FakeGemini(KEY))


def gemini_entity(
    fake: FakeGemini, task: str = "llm/v1/chat", name: str = MODEL, key: str = KEY
) -> dict:
    config = {"gemini_api_key_plaintext": key, "gemini_api_base": fake.url}
    return kit.external("gemini", name, config, task, "gemini")


def test_chat_plain_and_streamed(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "You said: earlier"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}],
            },
        ],
        max_tokens=20,
        temperature=0.2,
        top_p=0.9,
        seed=7,
        extra_body={"top_k": 40},
    )
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1, 3)
    assert answer.usage.total_tokens == 4
    sent = fake.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and KEY not in str(sent.query)
    body = sent.json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [{"text": "h"}, {"text": "i"}]
    assert body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 20, "seed": 7,
    }  # fmt: skip

    chunks = kit.chat_chunks(
        openai_client, endpoint_name, "stream me", stream_options={"include_usage": True}
    )
    assert kit.streamed_text(chunks) == "You said: stream me"
    assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert fake.requests[-1].query == {"alt": "sse"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 2 + 4
    assert len({c.id for c in chunks}) == 1


def test_openai_client_tools_round_trip_plain_and_streamed(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    """Acceptance: `tools` in, OpenAI `tool_calls` out (parallel, plain and streamed), tool
    results back as two tool messages in a row, the final answer out (plain and streamed)."""
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    messages: list = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"place": "Paris"},
    ]
    assert len({c.id for c in calls}) == 2 and all(c.type == "function" for c in calls)
    declared = fake.requests[-1].json()["tools"][0]["functionDeclarations"]
    assert declared[0] == {
        "name": "get_weather",
        "description": "Weather in a city",
        "parametersJsonSchema": kit.WEATHER["function"]["parameters"],
    }

    _, streamed_calls, finishes = kit.streamed(
        openai_client.chat.completions.create(
            model=endpoint_name,
            messages=messages,
            tools=[kit.WEATHER, kit.TIME_OF_PLACE],
            stream=True,
        )
    )
    names = [c["name"] for c in streamed_calls.values()]
    assert names == ["get_weather", "get_time"] and finishes == ["tool_calls"]
    arguments = [json.loads(c["arguments"]) for c in streamed_calls.values()]
    assert arguments == [{"city": "Paris"}, {"place": "Paris"}]

    messages += kit.tool_replies(choice.message, "sunny, 21 C", "10:00")
    final = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    assert final.choices[0].message.content == "Results: sunny, 21 C; 10:00"
    assert final.choices[0].finish_reason == "stop"
    contents = fake.requests[-1].json()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    # Both results in one user turn, matched to their calls by function name.
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21 C"}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "10:00"}}},
    ]
    # The signature Gemini put on the first call went back with it (the fake checks it too).
    assert contents[1]["parts"][0]["thoughtSignature"] in fake.signatures

    final_stream = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE], stream=True
    )
    assert kit.streamed_text(final_stream) == "Results: sunny, 21 C; 10:00"


def test_tool_history_from_elsewhere_gets_the_documented_placeholder_signature(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        tools=[kit.WEATHER],
        messages=[
            {"role": "user", "content": "Oslo"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_from_another_server",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_from_another_server", "content": '{"c": -3}'},
        ],
    )
    assert answer.choices[0].message.content == 'Results: {"c":-3}'
    model_turn = fake.requests[-1].json()["contents"][1]
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
            "thoughtSignature": SKIP_SIGNATURE,
        }
    ]


def test_tool_choice_none_required_and_named(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    messages = [{"role": "user", "content": "Rome"}]
    none = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=messages,
        tools=[kit.WEATHER, kit.TIME_OF_PLACE],
        tool_choice="none",
    )
    assert none.choices[0].message.content == "You said: Rome"
    assert fake.requests[-1].json()["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}

    openai_client.chat.completions.create(
        model=endpoint_name,
        messages=messages,
        tools=[kit.WEATHER, kit.TIME_OF_PLACE],
        tool_choice="required",
    )
    assert fake.requests[-1].json()["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    named = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=messages,
        tools=[kit.WEATHER, kit.TIME_OF_PLACE],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["get_time"]
    assert fake.requests[-1].json()["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    }


def test_json_mode_and_json_schema(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "json please"}
    assert fake.requests[-1].json()["generationConfig"] == {"responseMimeType": "application/json"}

    schema = {
        "type": "object",
        "properties": {"echo": {"type": "string"}},
        "required": ["echo"],
        "additionalProperties": False,
    }
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "schema please"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "echo", "schema": schema, "strict": True},
        },
    )
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "schema please"}
    config = fake.requests[-1].json()["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": schema}


def test_stop_and_max_tokens_finish_with_length(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    cut = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "a b c d"}], max_tokens=3
    )
    assert cut.choices[0].message.content == "You said: a"
    assert cut.choices[0].finish_reason == "length"
    stopped = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "one STOP two"}],
        stop=["STOP", "END"],
    )
    assert stopped.choices[0].message.content == "You said: one "
    assert stopped.choices[0].finish_reason == "stop"
    assert fake.requests[-1].json()["generationConfig"]["stopSequences"] == ["STOP", "END"]
    _, _, finishes = kit.streamed(
        openai_client.chat.completions.create(
            model=endpoint_name,
            messages=[{"role": "user", "content": "a b c d"}],
            max_tokens=3,
            stream=True,
        )
    )
    assert finishes == ["length"]


def test_n_is_candidate_count_plain_and_streamed(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "twice"}], n=2
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert {c.message.content for c in answer.choices} == {"You said: twice"}
    assert fake.requests[-1].json()["generationConfig"] == {"candidateCount": 2}
    texts: dict[int, str] = {}
    for chunk in openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "twice"}], n=2, stream=True
    ):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "You said: twice", 1: "You said: twice"}


def test_safety_block_is_content_filter(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    messages = [{"role": "user", "content": "unsafe"}]
    answer = openai_client.chat.completions.create(model=endpoint_name, messages=messages)
    assert answer.choices[0].finish_reason == "content_filter"
    _, _, finishes = kit.streamed(
        openai_client.chat.completions.create(model=endpoint_name, messages=messages, stream=True)
    )
    assert finishes == ["content_filter"]


def test_extra_params_and_unknown_keys_pass_through(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "extras"}],
        temperature=0.5,
        parallel_tool_calls=False,
        user="u-17",
        extra_body={
            "cachedContent": "cachedContents/abc",
            "extra_params": {
                "safetySettings": safety,
                "thinkingConfig": {"thinkingBudget": 0},
                "generationConfig": {"responseModalities": ["TEXT"]},
            },
        },
    )
    assert answer.choices[0].message.content == "You said: extras"
    sent = fake.requests[-1].json()
    assert sent["cachedContent"] == "cachedContents/abc" and sent["safetySettings"] == safety
    assert sent["generationConfig"] == {
        "temperature": 0.5,
        "thinkingConfig": {"thinkingBudget": 0},
        "responseModalities": ["TEXT"],
    }
    assert not {"extra_params", "user", "parallel_tool_calls"} & set(sent)


def test_embeddings(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    entity = gemini_entity(fake, task="llm/v1/embeddings", name="gemini-embedding-001")
    create_endpoint(gateway, endpoint_name, [entity])
    vectors = openai_client.embeddings.create(
        model=endpoint_name, input=["ab", "abcd"], encoding_format="float"
    )
    assert [d.embedding for d in vectors.data] == [[2.0, 0.5, -0.5], [4.0, 0.5, -0.5]]
    assert [d.index for d in vectors.data] == [0, 1]
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent.json()["requests"][1] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "abcd"}]},
    }

    r = kit.invoke(
        gateway,
        endpoint_name,
        {"input": "abc", "encoding_format": "base64", "dimensions": 2, "taskType": "CLUSTERING"},
    )
    assert r.status_code == 200, r.text
    packed = base64.b64decode(r.json()["data"][0]["embedding"])
    assert struct.unpack("<2f", packed) == (3.0, 0.5)
    one = fake.requests[-1].json()["requests"][0]
    assert one["outputDimensionality"] == 2 and one["taskType"] == "CLUSTERING"


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake, key="AIza-wrong-key")])
    err = kit.chat_error(openai_client, endpoint_name, openai.BadRequestError)
    assert "API key not valid" in str(err)
    assert fake.requests[-1].headers["x-goog-api-key"] == "AIza-wrong-key"

    kit.update_config(gateway, endpoint_name, [gemini_entity(fake)])
    for stream in (False, True):
        kit.assert_rate_limit_kept(gateway, fake, endpoint_name, stream=stream)


def test_error_inside_a_stream_ends_it_with_the_upstream_message(
    gateway: Server, fake: FakeGemini, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    chat = {"messages": [{"role": "user", "content": FAILING_PROMPT}], "stream": True}
    r = kit.invoke(gateway, endpoint_name, chat)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["content"] == "You "
    assert events[-1]["error"]["error_code"] == "BAD_GATEWAY"
    assert "The model is overloaded." in events[-1]["error"]["message"]


def test_tool_result_without_its_call_is_a_clear_400(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [gemini_entity(fake)])
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.chat.completions.create(
            model=endpoint_name,
            messages=[
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_unknown", "content": "42"},
            ],
        )
    assert "messages[1]" in str(err.value) and "tool_call_id" in str(err.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "gemini_api_key is required"),
        ({"gemini_api_key": "AIza-literal"}, "must be a secret reference"),
        ({"gemini_api_key": "{{secrets/nope/missing}}"}, "'nope/missing'"),
        ({"gemini_api_key_plaintext": "k", "gemini_api_kye": "x"}, "gemini_api_kye"),
        ({"gemini_api_key_plaintext": "k", "gemini_api_base": "ftp://x"}, "gemini_api_base"),
        ({"gemini_api_key_plaintext": 12345}, "gemini_api_key_plaintext"),
    ],
)
def test_bad_config_is_a_clear_400(
    gateway: Server, endpoint_name: str, config: dict, expected: str
) -> None:
    entity = kit.external("gemini", MODEL, config)
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "AIza-literal")

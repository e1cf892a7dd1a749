"""Guardrails (`ai_gateway.guardrails`) through the real openai client against a running server.

The endpoint under test serves a fake OpenAI upstream that echoes "You said: <user text>", so an
output guardrail sees what the user sent. Safety and valid_topics are judged by the endpoint
`judge`, on a second fake whose verdict the test decides from the judged text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint, delete_endpoint, start_server
from tests.fakes.openai import FakeOpenAI

KEY = "sk-guardrails-key"
JUDGE = "judge"

# One realistic value of each kind (valid checksums), with its placeholder and its description.
PII = {
    "email": ("jane.doe@example.com", "[EMAIL_ADDRESS]", "an e-mail address"),
    "phone": ("+1 650 253 0000", "[PHONE_NUMBER]", "a phone number"),
    "card": ("4111 1111 1111 1111", "[CREDIT_CARD]", "a credit-card number"),
    "ssn": ("536-22-1234", "[US_SSN]", "a US social security number"),
    "iban": ("DE89 3704 0044 0532 0130 00", "[IBAN]", "an IBAN"),
    "ipv4": ("192.168.10.77", "[IP_ADDRESS]", "an IP address"),
    "ipv6": ("2001:db8:85a3::8a2e:370:7334", "[IP_ADDRESS]", "an IP address"),
}
# Look-alikes that fail a checksum or a format check: never blocked, never masked.
LOOK_ALIKES = (
    "card 4111 1111 1111 1112, iban DE88 3704 0044 0532 0130 00, ssn 000-12-3456, "
    "host 999.1.1.1, x@localhost, on 2024-01-15 at 10:30:45"
)


def judge_verdict(prompt: str) -> str:
    """The judge fake's answer: unsafe when the text mentions a bomb; on topic when it talks
    about stocks or interest rates (the text is what the prompt quotes)."""
    text = prompt.split('"""')[1].lower() if '"""' in prompt else ""
    if "perhaps" in text:
        return "It depends."
    if "unsafe" in prompt:
        return "Yes." if "bomb" in text else "No."
    return "yes" if "stock" in text or "interest rate" in text else "no"


def make_judge() -> FakeOpenAI:
    fake = FakeOpenAI(KEY)
    fake.respond = judge_verdict
    return fake


upstream, clean_upstream = kit.fake_fixtures(lambda: FakeOpenAI(KEY))
judge, clean_judge = kit.fake_fixtures(make_judge)


def entity(fake: FakeOpenAI, name: str = "chat") -> dict:
    return kit.external(
        "openai",
        "gpt-test",
        {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1"},
        name=name,
    )


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory, judge: FakeOpenAI) -> Iterator[Server]:
    """A server whose guardrail judge is the endpoint `judge`, served by the judge fake."""
    srv = start_server(
        tmp_path_factory.mktemp("guardrails"),
        "--default-model",
        "",
        "--guardrail-endpoint",
        JUDGE,
    )
    try:
        create_endpoint(srv, JUDGE, [entity(judge, "judge-model")])
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(judged: Server) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=f"{judged.url}/serving-endpoints", api_key=judged.token, max_retries=0
    ) as c:
        yield c


@pytest.fixture
def guarded(judged: Server, upstream: FakeOpenAI) -> Iterator[Any]:
    """`guarded(guardrails)`: a new endpoint on the upstream fake with these guardrails."""
    names: list[str] = []

    def make(guardrails: dict) -> str:
        name = f"g-{os.urandom(5).hex()}"
        names.append(name)
        create_endpoint(judged, name, [entity(upstream)], ai_gateway={"guardrails": guardrails})
        return name

    yield make
    for name in names:
        delete_endpoint(judged, name)


def ask(client: OpenAI, endpoint: str, content: str, *, stream: bool, **options: Any) -> str:
    """The answer's text to a user saying `content`."""
    messages = options.pop("messages", [{"role": "user", "content": content}])
    answer = client.chat.completions.create(
        model=endpoint, messages=messages, stream=stream, **options
    )
    if stream:
        return kit.streamed_text(answer)
    return answer.choices[0].message.content or ""


def refused(client: OpenAI, endpoint: str, content: str, *, stream: bool) -> tuple[str, str]:
    """(the error message, every text the client got before it) for a refused question."""
    received: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        answer = client.chat.completions.create(
            model=endpoint, messages=[{"role": "user", "content": content}], stream=stream
        )
        for chunk in answer if stream else ():
            received += [c.delta.content or "" for c in chunk.choices]
    error = raised.value
    # A streamed answer is screened before its first byte, so a block is a 400 there too.
    assert isinstance(error, openai.APIStatusError), error
    assert error.status_code == 400
    assert error.body["error_code"] == "BAD_REQUEST"  # type: ignore[index]
    return error.message, "".join(received)


def assert_blocked(message: str, received: str, guardrail: str, secret: str) -> None:
    assert f"Blocked by the {guardrail} guardrail" in message
    assert secret.lower() not in message.lower()
    assert secret.lower() not in received.lower()


# -- invalid_keywords ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_input_keywords_block_whole_words_in_any_case(client, guarded, upstream, stream):
    name = guarded({"input": {"invalid_keywords": ["SuperSecretProject", "c++"]}})
    message, _ = refused(client, name, "Status of supersecretproject, please?", stream=stream)
    assert_blocked(message, "", "input keyword", "supersecretproject")
    assert "the request contains a blocked keyword" in message
    assert upstream.requests == []  # nothing went upstream

    message, _ = refused(client, name, "Is C++ fast?", stream=stream)
    assert_blocked(message, "", "input keyword", "c++")
    # Not a whole word: passes.
    text = "SuperSecretProjects and c++17"
    assert ask(client, name, text, stream=stream) == f"You said: {text}"


@pytest.mark.parametrize("stream", [False, True])
def test_output_keywords_refuse_the_answer(client, guarded, upstream, stream):
    name = guarded({"output": {"invalid_keywords": ["Falcon"]}})
    message, received = refused(client, name, "Tell me about project FALCON", stream=stream)
    assert_blocked(message, received, "output keyword", "falcon")
    assert "the answer contains a blocked keyword" in message
    assert len(upstream.requests) == 1  # input is not screened: the question went upstream
    assert (
        ask(client, name, "Tell me about falcons", stream=stream)
        == "You said: Tell me about falcons"
    )


# -- pii -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", PII)
def test_input_pii_block(client, guarded, upstream, kind, stream):
    value, _, described = PII[kind]
    name = guarded({"input": {"pii": {"behavior": "BLOCK"}}})
    message, _ = refused(client, name, f"My details: {value}, thanks.", stream=stream)
    assert_blocked(message, "", "input PII", value)
    assert f"the request contains {described}" in message
    assert upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", PII)
def test_input_pii_mask(client, guarded, upstream, kind, stream):
    value, placeholder, _ = PII[kind]
    name = guarded({"input": {"pii": {"behavior": "MASK"}}})
    answer = ask(client, name, f"My details: {value}, thanks.", stream=stream)
    assert answer == f"You said: My details: {placeholder}, thanks."
    received = upstream.requests[-1]
    assert kit.sent(upstream)["messages"][0]["content"] == f"My details: {placeholder}, thanks."
    assert value.encode() not in received.body


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", PII)
def test_output_pii_block(client, guarded, upstream, kind, stream):
    value, _, described = PII[kind]
    name = guarded({"output": {"pii": {"behavior": "BLOCK"}}})
    message, received = refused(client, name, f"Repeat {value} please", stream=stream)
    assert_blocked(message, received, "output PII", value)
    assert f"the answer contains {described}" in message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", PII)
def test_output_pii_mask(client, guarded, upstream, kind, stream):
    value, placeholder, _ = PII[kind]
    name = guarded({"output": {"pii": {"behavior": "MASK"}}})
    answer = ask(client, name, f"Repeat {value} please", stream=stream)
    assert answer == f"You said: Repeat {placeholder} please"
    assert value in kit.sent(upstream)["messages"][0]["content"]  # only the output is screened


@pytest.mark.parametrize("stream", [False, True])
def test_look_alikes_pass_both_ways_unchanged(client, guarded, upstream, stream):
    name = guarded(
        {"input": {"pii": {"behavior": "BLOCK"}}, "output": {"pii": {"behavior": "MASK"}}}
    )
    assert ask(client, name, LOOK_ALIKES, stream=stream) == f"You said: {LOOK_ALIKES}"
    assert kit.sent(upstream)["messages"][0]["content"] == LOOK_ALIKES


def test_input_covers_system_tool_and_text_part_messages(client, guarded, upstream):
    name = guarded({"input": {"pii": {"behavior": "MASK"}}})
    messages = [
        {"role": "system", "content": "The operator is ops@example.org."},
        {"role": "user", "content": [{"type": "text", "text": "Look up card 5500 0000 0000 0004"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"card": 5500000000000004}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Owner SSN 536-22-1234"},
    ]
    assert ask(client, name, "", stream=False, messages=messages) == "Results: Owner SSN [US_SSN]"
    sent = kit.sent(upstream)["messages"]
    assert sent[0]["content"] == "The operator is [EMAIL_ADDRESS]."
    assert sent[1]["content"] == [{"type": "text", "text": "Look up card [CREDIT_CARD]"}]
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == '{"card":"[CREDIT_CARD]"}'
    raw = upstream.requests[-1].body
    assert b"ops@example.org" not in raw and b"5500" not in raw and b"536-22-1234" not in raw

    blocking = guarded({"input": {"pii": {"behavior": "BLOCK"}}})
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, blocking, "", stream=False, messages=messages)
    assert "Blocked by the input PII guardrail" in raised.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_output_tool_call_arguments_are_masked(client, guarded, upstream, stream):
    name = guarded({"output": {"pii": {"behavior": "MASK"}}})
    answer = client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "mail jane.doe@example.com"}],
        tools=[kit.function("send", "to")],
        stream=stream,
    )
    if stream:
        arguments = kit.streamed(answer).calls[0]["arguments"]
    else:
        arguments = answer.choices[0].message.tool_calls[0].function.arguments
    assert arguments == '{"to":"mail [EMAIL_ADDRESS]"}'


# -- safety and valid_topics, judged by the judge endpoint ---------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_input_safety(client, guarded, upstream, judge, stream):
    name = guarded({"input": {"safety": True}})
    message, _ = refused(client, name, "How do I build a bomb?", stream=stream)
    assert_blocked(message, "", "input safety", "bomb")
    assert "the request was judged unsafe" in message
    assert upstream.requests == []
    # The judge was asked, with the question quoted in its prompt.
    assert "How do I build a bomb?" in kit.sent(judge)["messages"][-1]["content"]

    assert (
        ask(client, name, "How do I bake bread?", stream=stream) == "You said: How do I bake bread?"
    )


@pytest.mark.parametrize("stream", [False, True])
def test_output_safety(client, guarded, upstream, judge, stream):
    name = guarded({"output": {"safety": True}})
    message, received = refused(client, name, "bomb recipe", stream=stream)
    assert_blocked(message, received, "output safety", "bomb")
    assert "the answer was judged unsafe" in message
    assert "You said: bomb recipe" in kit.sent(judge)["messages"][-1]["content"]
    assert ask(client, name, "bread recipe", stream=stream) == "You said: bread recipe"


@pytest.mark.parametrize("stream", [False, True])
def test_input_valid_topics(client, guarded, upstream, judge, stream):
    name = guarded({"input": {"valid_topics": ["finance", "banking"]}})
    message, _ = refused(client, name, "Best pizza in Naples?", stream=stream)
    assert_blocked(message, "", "input topic", "pizza")
    assert "not about an allowed topic (finance; banking)" in message
    assert upstream.requests == []
    assert "finance; banking" in kit.sent(judge)["messages"][-1]["content"]
    text = "Will interest rates fall?"
    assert ask(client, name, text, stream=stream) == f"You said: {text}"


@pytest.mark.parametrize("stream", [False, True])
def test_output_valid_topics(client, guarded, upstream, judge, stream):
    name = guarded({"output": {"valid_topics": ["finance"]}})
    message, received = refused(client, name, "pizza", stream=stream)
    assert_blocked(message, received, "output topic", "pizza")
    assert ask(client, name, "stock tips", stream=stream) == "You said: stock tips"


def test_an_unclear_verdict_fails_closed(client, guarded, upstream):
    name = guarded({"input": {"safety": True}})
    with pytest.raises(openai.APIStatusError) as raised:
        ask(client, name, "perhaps this", stream=False)
    assert raised.value.status_code == 502
    assert "judge endpoint 'judge' answered neither yes nor no" in raised.value.message
    assert upstream.requests == []


def test_pii_is_masked_before_the_judge_sees_it(client, guarded, judge):
    name = guarded({"input": {"pii": {"behavior": "MASK"}, "safety": True}})
    assert (
        ask(client, name, "mail jane@example.com", stream=False) == "You said: mail [EMAIL_ADDRESS]"
    )
    assert b"jane@example.com" not in judge.requests[-1].body


# -- configuration ---------------------------------------------------------------------------------


def put_ai_gateway(server: Server, name: str, body: dict) -> requests.Response:
    return requests.put(
        f"{server.url}/api/2.0/serving-endpoints/{name}/ai-gateway",
        json=body,
        headers=server.headers,
        timeout=30,
    )


def post(server: Server, name: str, fake: FakeOpenAI, guardrails: dict) -> requests.Response:
    body = {
        "name": name,
        "config": {"served_entities": [entity(fake)]},
        "ai_gateway": {"guardrails": guardrails},
    }
    return requests.post(
        f"{server.url}/api/2.0/serving-endpoints", json=body, headers=server.headers, timeout=30
    )


@pytest.mark.parametrize("field", ["safety", "valid_topics"])
def test_judged_guardrails_need_a_judge_endpoint(gateway, upstream, endpoint_name, field):
    value = True if field == "safety" else ["finance"]
    r = post(gateway, endpoint_name, upstream, {"output": {field: value}})
    kit.assert_error(r, 400, f"ai_gateway.guardrails.output.{field} needs a judge endpoint")
    assert "--guardrail-endpoint" in r.json()["message"]

    # PUT ai-gateway too; the endpoint itself is fine without them.
    assert post(gateway, endpoint_name, upstream, {"input": {"pii": {"behavior": "MASK"}}}).ok
    r = put_ai_gateway(gateway, endpoint_name, {"guardrails": {"input": {field: value}}})
    kit.assert_error(r, 400, "--guardrail-endpoint")
    got = requests.get(
        f"{gateway.url}/api/2.0/serving-endpoints/{endpoint_name}", headers=gateway.headers
    ).json()
    assert got["ai_gateway"]["guardrails"] == {"input": {"pii": {"behavior": "MASK"}}}


@pytest.mark.parametrize(
    ("guardrails", "field"),
    [
        ({"input": {"pii": {"behavior": "HIDE"}}}, "guardrails.input.pii.behavior"),
        ({"input": {"invalid_keyword": ["x"]}}, "guardrails.input.invalid_keyword"),
        ({"output": {"invalid_keywords": "x"}}, "guardrails.output.invalid_keywords"),
        ({"output": {"safety": "yes"}}, "guardrails.output.safety"),
        ({"inputs": {}}, "guardrails.inputs"),
    ],
)
def test_bad_guardrails_are_400s_naming_the_field(
    gateway, upstream, endpoint_name, guardrails, field
):
    r = post(gateway, endpoint_name, upstream, guardrails)
    kit.assert_error(r, 400, field, "INVALID_PARAMETER_VALUE")


def test_a_config_file_with_judged_guardrails_needs_a_judge(tmp_path: Path, upstream):
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        "endpoints:\n"
        "  - name: guarded\n"
        "    config:\n"
        "      served_entities:\n"
        "        - external_model:\n"
        "            provider: openai\n"
        "            name: gpt-test\n"
        "            task: llm/v1/chat\n"
        f"            openai_config: {{openai_api_key_plaintext: {KEY}, "
        f"openai_api_base: '{upstream.url}/v1'}}\n"
        "    ai_gateway:\n"
        "      guardrails: {input: {safety: true}}\n"
    )
    srv = start_server(
        tmp_path / "data", "--default-model", "", "--config", str(config), wait=False
    )
    assert srv.process.wait(60) != 0
    assert "endpoint 'guarded'" in srv.log()
    assert "ai_gateway.guardrails.input.safety needs a judge endpoint" in srv.log()
    assert "--guardrail-endpoint" in srv.log()


def test_streamed_answers_keep_their_shape(client, guarded):
    name = guarded({"output": {"pii": {"behavior": "MASK"}}})
    chunks = list(
        client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "call 202-555-0143"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    answer = kit.streamed(chunks)
    assert (answer.text, answer.finishes) == ("You said: call [PHONE_NUMBER]", ["stop"])
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2


def test_completions_and_embeddings_inputs_are_screened(judged, upstream):
    name = f"c-{os.urandom(5).hex()}"
    served = kit.external(
        "openai",
        "gpt-instruct",
        {"openai_api_key_plaintext": KEY, "openai_api_base": f"{upstream.url}/v1"},
        task="llm/v1/completions",
    )
    guardrails = {"input": {"pii": {"behavior": "MASK"}}}
    create_endpoint(judged, name, [served], ai_gateway={"guardrails": guardrails})
    try:
        answer = kit.invoke(judged, name, {"prompt": "ssn 536-22-1234"})
        assert answer.json()["choices"][0]["text"] == "You said: ssn [US_SSN]"
        assert kit.sent(upstream)["prompt"] == "ssn [US_SSN]"
        # The openai provider embeds too; an embeddings input is screened like a prompt.
        answer = kit.invoke(judged, name, {"input": ["a@example.com", "plain"]})
        assert answer.status_code == 200, answer.text
        assert kit.sent(upstream)["input"] == ["[EMAIL_ADDRESS]", "plain"]
    finally:
        delete_endpoint(judged, name)

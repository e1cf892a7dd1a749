"""Odd but well-formed requests to every provider: each gets an answer or a clear 4xx in the
Databricks envelope, never a 500, a hang or a stack trace — whatever the translation meets."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from tests import provider_kit as kit
from tests.conftest import Server, delete_endpoint
from tests.fakes.ai21labs import FakeAI21
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.cohere import FakeCohere
from tests.fakes.gemini import FakeGemini
from tests.fakes.harness import FakeUpstream
from tests.fakes.mistral import FakeMistral
from tests.fakes.openai import FakeOpenAI

KEY = "k-bad-input-0001"
AWS = ("AKIAFAKEBADINPUT0001", "secret/BAD+input", "us-east-1")

# provider → (its fake, the config block pointing at it)
PROVIDERS: dict[str, tuple[Callable[[], FakeUpstream], Callable[[str], dict]]] = {
    "openai": (lambda: FakeOpenAI(KEY),
               lambda url: {"openai_api_key_plaintext": KEY, "openai_api_base": f"{url}/v1"}),
    "anthropic": (lambda: FakeAnthropic(KEY),
                  lambda url: {"anthropic_api_key_plaintext": KEY, "anthropic_api_base": url}),
    "amazon-bedrock": (lambda: FakeBedrock(*AWS),
                       lambda url: {"aws_region": AWS[2], "aws_access_key_id_plaintext": AWS[0],
                                    "aws_secret_access_key_plaintext": AWS[1],
                                    "bedrock_provider": "anthropic", "bedrock_endpoint_url": url}),
    "gemini": (lambda: FakeGemini(KEY),
               lambda url: {"gemini_api_key_plaintext": KEY, "gemini_api_base": url}),
    "cohere": (lambda: FakeCohere(KEY),
               lambda url: {"cohere_api_key_plaintext": KEY, "cohere_api_base": url}),
    "mistral": (lambda: FakeMistral(KEY),
                lambda url: {"mistral_api_key_plaintext": KEY, "mistral_api_base": f"{url}/v1"}),
    "ai21labs": (lambda: FakeAI21(KEY),
                 lambda url: {"ai21labs_api_key_plaintext": KEY,
                              "ai21labs_api_base": f"{url}/studio/v1"}),
}  # fmt: skip

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
REQUESTS = {
    "two text parts": {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
    "empty content": {"messages": [{"role": "user", "content": ""}]},
    "only a system message": {"messages": [{"role": "system", "content": "Be brief."}]},
    "assistant first": {"messages": [{"role": "assistant", "content": "Hello"},
                                     {"role": "user", "content": "hi"}]},
    "tool result without tools": {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
    "tool result for no call": {"messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "nope", "content": "sunny"}], "tools": [kit.WEATHER]},
    "arguments not JSON": {"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {**CALL, "function": {"name": "get_weather", "arguments": "{bad"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}], "tools": [kit.WEATHER]},
    "tool without parameters": {"messages": [{"role": "user", "content": "x"}],
                                "tools": [{"type": "function", "function": {"name": "now"}}]},
    "malformed tool": {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "x"}]},
    "named tool not offered": {"messages": [{"role": "user", "content": "x"}],
                               "tools": [kit.WEATHER],
                               "tool_choice": {"type": "function", "function": {"name": "other"}}},
    "schema that is not an object": {"messages": [{"role": "user", "content": "x"}],
                                     "response_format": {"type": "json_schema", "json_schema": {
                                         "name": "n", "schema": {"type": "string"}}}},
    "logprobs": {"messages": [{"role": "user", "content": "x"}], "logprobs": True},
    "one token, three choices": {"messages": [{"role": "user", "content": "x y z"}],
                                 "max_tokens": 1, "n": 3, "temperature": 0.5},
    "developer role and stop string": {"messages": [{"role": "developer", "content": "d"},
                                                    {"role": "user", "content": "x"}],
                                       "stop": "said"},
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeUpstream]]:
    make_fake, _ = PROVIDERS[request.param]
    with kit.running(make_fake()) as fake:
        yield request.param, fake


@pytest.fixture(scope="module")
def endpoint(gateway: Server, provider: tuple[str, FakeUpstream]) -> Iterator[str]:
    kind, fake = provider
    name = f"odd-{kind}"
    entity = kit.external(kind, "some-model", PROVIDERS[kind][1](fake.url))
    r = kit.post_endpoint(gateway, name, [entity])
    assert r.status_code == 200, r.text
    yield name
    delete_endpoint(gateway, name)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_odd_request_gets_an_answer_or_a_clear_4xx(
    gateway: Server, endpoint: str, case: str, stream: bool
):
    r = requests.post(
        f"{gateway.url}/serving-endpoints/{endpoint}/invocations",
        json={**REQUESTS[case], "stream": stream},
        headers=gateway.headers,
        timeout=60,
    )
    if r.status_code == 200:
        assert r.headers["content-type"].startswith(
            "text/event-stream" if stream else "application/json"
        )
        if stream:
            assert "data: [DONE]" in r.text and '"error"' not in r.text, r.text
        else:
            assert r.json()["choices"], r.text
        return
    assert 400 <= r.status_code < 500, f"{case}: {r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error_code", "message"} and body["message"], body
    assert "Traceback" not in body["message"]

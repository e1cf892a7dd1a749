"""Traffic splits and fallback across served entities, through the real openai client."""

from __future__ import annotations

import collections

import openai
import pytest
import requests
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.openai import FakeOpenAI

KEY = "sk-routing-key"
primary, clean_primary = kit.fake_fixtures(lambda: FakeOpenAI(KEY))
backup, clean_backup = kit.fake_fixtures(lambda: FakeOpenAI(KEY))


def entity(name: str, fake: FakeOpenAI, timeout_seconds: float | None = None) -> dict:
    model: dict = {
        "provider": "openai",
        "name": f"model-{name}",
        "task": "llm/v1/chat",
        "openai_config": {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1"},
    }
    if timeout_seconds is not None:
        model["timeout_seconds"] = timeout_seconds
    return {"name": name, "external_model": model}


def ask(client: OpenAI, endpoint: str, *, stream: bool = False) -> tuple[str, str]:
    """(the answer's text, the served-model-name header)."""
    raw = client.chat.completions.with_raw_response.create(
        model=endpoint, messages=[{"role": "user", "content": "hello"}], stream=stream
    )
    served = raw.headers["served-model-name"]
    text = kit.streamed_text(raw.parse()) if stream else raw.parse().choices[0].message.content
    return text, served


@pytest.mark.parametrize("failure", ["status:503", "status:429", "hang", "reset"])
@pytest.mark.parametrize("stream", [False, True])
def test_fallback_serves_from_the_next_entity(
    gateway: Server, openai_client: OpenAI, primary, backup, endpoint_name, failure, stream
):
    create_endpoint(
        gateway,
        endpoint_name,
        [entity("first", primary, timeout_seconds=1), entity("second", backup)],
        ai_gateway={"fallback_config": {"enabled": True}},
    )
    primary.fail_next(failure)
    text, served = ask(openai_client, endpoint_name, stream=stream)
    assert (text, served) == ("You said: hello", "second")
    assert len(primary.requests) == 1 and len(backup.requests) == 1

    # Once the first recovers it serves again: fallback is per request, not a switch.
    assert ask(openai_client, endpoint_name, stream=stream)[1] == "first"


def test_without_fallback_the_failure_is_the_answer(
    gateway: Server, openai_client: OpenAI, primary, backup, endpoint_name
):
    create_endpoint(gateway, endpoint_name, [entity("first", primary), entity("second", backup)])
    primary.fail_next("status:503")
    with pytest.raises(openai.APIStatusError) as err:
        ask(openai_client, endpoint_name)
    assert err.value.status_code == 502
    assert "HTTP 503" in err.value.message and "injected failure" in err.value.message
    assert backup.requests == []


def test_client_errors_do_not_fall_back_and_the_last_failure_is_returned(
    gateway: Server, openai_client: OpenAI, primary, backup, endpoint_name
):
    create_endpoint(
        gateway,
        endpoint_name,
        [entity("first", primary), entity("second", backup)],
        ai_gateway={"fallback_config": {"enabled": True}},
    )
    primary.fail_next("status:400")
    with pytest.raises(openai.BadRequestError):
        ask(openai_client, endpoint_name)
    assert backup.requests == []

    primary.fail_next("status:500")
    backup.fail_next("status:503")
    with pytest.raises(openai.APIStatusError) as err:
        ask(openai_client, endpoint_name)
    assert err.value.status_code == 502 and "HTTP 503" in err.value.message


def test_traffic_split_80_20_over_1000_requests(gateway: Server, primary, backup, endpoint_name):
    routes = [
        {"served_entity_name": "big", "traffic_percentage": 80},
        {"served_entity_name": "small", "traffic_percentage": 20},
    ]
    create_endpoint(
        gateway, endpoint_name, [entity("big", primary), entity("small", backup)], routes=routes
    )
    served: collections.Counter[str] = collections.Counter()
    with requests.Session() as http:
        for _ in range(1000):
            r = http.post(
                f"{gateway.url}/serving-endpoints/{endpoint_name}/invocations",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers=gateway.headers,
                timeout=30,
            )
            assert r.status_code == 200, r.text
            served[r.headers["served-model-name"]] += 1
    big, small = served["big"] / 10, served["small"] / 10
    print(f"80/20 split over 1000 requests: big {big:.1f}%, small {small:.1f}%")
    assert served["big"] + served["small"] == 1000
    assert 750 <= served["big"] <= 850, served
    assert (len(primary.requests), len(backup.requests)) == (served["big"], served["small"])


def test_fallback_switched_on_through_the_sdk(
    gateway: Server, openai_client: OpenAI, primary, backup, endpoint_name
):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import FallbackConfig

    create_endpoint(gateway, endpoint_name, [entity("first", primary), entity("second", backup)])
    w = WorkspaceClient(host=gateway.url, token=gateway.token)
    answer = w.serving_endpoints.put_ai_gateway(
        endpoint_name, fallback_config=FallbackConfig(enabled=True)
    )
    assert answer.fallback_config is not None and answer.fallback_config.enabled
    got = w.serving_endpoints.get(endpoint_name)
    assert got.ai_gateway is not None and got.ai_gateway.fallback_config.enabled

    primary.fail_next("status:502")
    assert ask(openai_client, endpoint_name) == ("You said: hello", "second")

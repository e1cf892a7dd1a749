"""A secret put through the secrets API is what a provider sends upstream, and its value never
comes back: not in an API response, not in an error, not in a log line."""

from __future__ import annotations

import os
from collections.abc import Iterator

import openai
import pytest
import requests
from databricks.sdk import WorkspaceClient
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.openai import FakeOpenAI

SECRET = "sk-from-the-vault-" + os.urandom(8).hex()
ROTATED = "sk-rotated-" + os.urandom(8).hex()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with kit.running(FakeOpenAI(SECRET)) as upstream:
        yield upstream


def test_secret_reference_is_used_and_never_shown(
    gateway: Server, fake: FakeOpenAI, openai_client: OpenAI, endpoint_name
):
    seen: list[str] = []  # every body the server sent back during the test
    w = WorkspaceClient(host=gateway.url, token=gateway.token)
    scope = f"llm-{os.urandom(4).hex()}"
    w.secrets.create_scope(scope)
    w.secrets.put_secret(scope, "openai", string_value=SECRET)
    seen.append(str([s.as_dict() for s in w.secrets.list_secrets(scope)]))

    config = {
        "openai_api_key": f"{{{{secrets/{scope}/openai}}}}",
        "openai_api_base": f"{fake.url}/v1",
    }
    entity = kit.external("openai", "gpt-4o-mini", config, name="gpt")
    seen.append(str(create_endpoint(gateway, endpoint_name, [entity])))
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "You said: hi"
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
    seen.append(answer.model_dump_json())

    # Rotating the secret applies at once; the provider echoes the key it refused, we do not.
    w.secrets.put_secret(scope, "openai", string_value=ROTATED)
    with pytest.raises(openai.AuthenticationError) as err:
        openai_client.chat.completions.create(
            model=endpoint_name, messages=[{"role": "user", "content": "hi"}]
        )
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {ROTATED}"
    seen.append(err.value.response.text)
    stream = kit.invoke(
        gateway, endpoint_name, {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    assert stream.status_code == 401
    seen.append(stream.text)

    for path in (f"serving-endpoints/{endpoint_name}", "serving-endpoints"):
        seen.append(requests.get(f"{gateway.url}/api/2.0/{path}", headers=gateway.headers).text)
    seen.append(
        requests.get(
            f"{gateway.url}/api/2.0/secrets/get",
            params={"scope": scope, "key": "openai"},
            headers=gateway.headers,
        ).text
    )

    # A deleted secret: the query says which secret is missing, never its old value.
    w.secrets.delete_secret(scope, "openai")
    with pytest.raises(openai.APIStatusError) as gone:
        openai_client.chat.completions.create(
            model=endpoint_name, messages=[{"role": "user", "content": "hi"}]
        )
    assert f"'{scope}/openai'" in gone.value.message
    seen.append(gone.value.response.text)

    for text in [*seen, gateway.log()]:
        assert SECRET not in text and ROTATED not in text
    assert "[REDACTED]" in err.value.message

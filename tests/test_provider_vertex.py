"""The `google-cloud-vertex-ai` provider, driven by the real openai client through a running
server, against a fake Vertex AI that only takes access tokens its own token endpoint issued
for grants signed with the test service account's key (a throwaway RSA key made here)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint
from tests.fakes.gemini import FakeGemini

EMAIL = "modelyard-test@my-project.iam.gserviceaccount.com"
PROJECT, REGION, MODEL = "my-project", "us-central1", "gemini-2.5-flash"
PATH = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def key_file(key: rsa.RSAPrivateKey, token_uri: str, email: str = EMAIL) -> str:
    """A service account JSON key file, as the Cloud console downloads it."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": private_pem(key),
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }
    )


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def fake(account_key: rsa.RSAPrivateKey) -> Iterator[FakeGemini]:
    public = account_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    upstream = FakeGemini(
        "unused-studio-key", public_key_pem=public.decode(), client_email=EMAIL, project=PROJECT
    )
    with kit.running(upstream):
        yield upstream


@pytest.fixture(autouse=True)
def clean(fake: FakeGemini) -> Iterator[None]:
    with kit.checked(fake):
        fake.token_requests = 0
        fake.token_lifetime = 3600
        yield


def vertex_entity(
    fake: FakeGemini,
    key: rsa.RSAPrivateKey,
    task: str = "llm/v1/chat",
    name: str = MODEL,
    **config: object,
) -> dict:
    block = {
        "private_key_plaintext": key_file(key, fake.token_url),
        "project_id": PROJECT,
        "region": REGION,
        "vertex_api_base": fake.url,
        **config,
    }
    return kit.external("google-cloud-vertex-ai", name, block, task, "vertex")


def test_chat_plain_and_streamed_on_one_cached_token(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [vertex_entity(fake, account_key)])
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=20,
    )
    assert answer.choices[0].message.content == "You said: hi"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    sent = fake.requests[-1]
    assert sent.path == f"{PATH}/{MODEL}:generateContent"
    assert sent.headers["Authorization"].removeprefix("Bearer ") in fake.tokens
    assert sent.json()["systemInstruction"] == {"parts": [{"text": "Be brief."}]}

    chunks = kit.chat_chunks(
        openai_client, endpoint_name, "stream me", stream_options={"include_usage": True}
    )
    assert kit.streamed_text(chunks) == "You said: stream me"
    assert fake.requests[-1].path == f"{PATH}/{MODEL}:streamGenerateContent"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "x"}]
    )
    # Three calls, one JWT-bearer exchange: the token is cached until near its expiry.
    assert fake.token_requests == 1
    assert len({r.headers["Authorization"] for r in fake.requests if r.path.startswith(PATH)}) == 1


def test_token_near_expiry_is_refreshed(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    fake.token_lifetime = 60  # inside google-auth's refresh margin: every call refreshes
    create_endpoint(gateway, endpoint_name, [vertex_entity(fake, account_key)])
    for _ in range(2):
        openai_client.chat.completions.create(
            model=endpoint_name, messages=[{"role": "user", "content": "x"}]
        )
    assert fake.token_requests == 2


def test_openai_client_tools_round_trip_plain_and_streamed(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [vertex_entity(fake, account_key)])
    messages: list = [{"role": "user", "content": "Lima"}]
    first = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Lima"}),
        ("get_time", {"place": "Lima"}),
    ]
    streamed_calls = kit.streamed(
        openai_client.chat.completions.create(
            model=endpoint_name,
            messages=messages,
            tools=[kit.WEATHER, kit.TIME_OF_PLACE],
            stream=True,
        )
    ).calls
    names = [c["name"] for c in streamed_calls.values()]
    assert names == ["get_weather", "get_time"] and len(streamed_calls) == 2

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[1].id, "content": "09:00"},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "cloudy"},
    ]
    final = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE]
    )
    assert final.choices[0].message.content == "Results: 09:00; cloudy"
    final_stream = openai_client.chat.completions.create(
        model=endpoint_name, messages=messages, tools=[kit.WEATHER, kit.TIME_OF_PLACE], stream=True
    )
    assert kit.streamed_text(final_stream) == "Results: 09:00; cloudy"


def test_json_schema_stop_length_and_extra_params(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [vertex_entity(fake, account_key)])
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    answer = openai_client.chat.completions.create(
        model=endpoint_name,
        messages=[{"role": "user", "content": "j"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}},
        extra_body={"labels": {"team": "search"}},
    )
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "j"}
    sent = fake.requests[-1].json()
    assert sent["generationConfig"]["responseJsonSchema"] == schema
    assert sent["labels"] == {"team": "search"}  # a Vertex-only field, passed through
    cut = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "a b c"}], max_tokens=2
    )
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("You said:", "length")


def test_embeddings_predict_and_embed_content(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    entity = vertex_entity(fake, account_key, task="llm/v1/embeddings", name="text-embedding-005")
    create_endpoint(gateway, endpoint_name, [entity])
    vectors = openai_client.embeddings.create(
        model=endpoint_name, input=["a b", "abcd"], encoding_format="float"
    )
    assert [d.embedding[0] for d in vectors.data] == [3.0, 4.0]
    assert vectors.usage.prompt_tokens == 3  # the statistics' token counts, added up
    sent = [r for r in fake.requests if r.path.endswith(":predict")]
    assert [r.path for r in sent] == [f"{PATH}/text-embedding-005:predict"]
    assert sent[0].json() == {"instances": [{"content": "a b"}, {"content": "abcd"}]}

    for name, method in (
        ("gemini-embedding-001", "predict"),
        ("gemini-embedding-2", "embedContent"),
    ):
        fake.reset()
        entity = vertex_entity(fake, account_key, task="llm/v1/embeddings", name=name)
        kit.update_config(gateway, endpoint_name, [entity])
        vectors = openai_client.embeddings.create(
            model=endpoint_name, input=["ab", "abc"], encoding_format="float", dimensions=1
        )
        assert [d.embedding for d in vectors.data] == [[2.0], [3.0]]
        # One text per call for the Gemini embedding models.
        paths = [r.path for r in fake.requests if r.path.startswith(PATH)]
        assert paths == [f"{PATH}/{name}:{method}"] * 2


def test_bare_pem_key_with_client_email(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    escaped = private_pem(account_key).replace("\n", "\\n")  # as copied out of the JSON file
    entity = vertex_entity(
        fake,
        account_key,
        private_key_plaintext=escaped,
        client_email=EMAIL,
        vertex_token_uri=fake.token_url,
    )
    create_endpoint(gateway, endpoint_name, [entity])
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "pem"}]
    )
    assert answer.choices[0].message.content == "You said: pem"
    assert fake.token_requests == 1


def test_key_in_a_secret_and_token_uri_override(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    secrets = f"{gateway.url}/api/2.0/secrets"
    requests.post(f"{secrets}/scopes/create", json={"scope": "gcp"}, headers=gateway.headers)
    r = requests.post(
        f"{secrets}/put",
        # The key file names Google's token endpoint; vertex_token_uri points at the fake.
        json={
            "scope": "gcp",
            "key": "vertex",
            "string_value": key_file(account_key, "https://oauth2.googleapis.com/token"),
        },
        headers=gateway.headers,
    )
    assert r.status_code == 200, r.text
    entity = vertex_entity(fake, account_key, vertex_token_uri=fake.token_url)
    block = entity["external_model"]["google_cloud_vertex_ai_config"]
    block.pop("private_key_plaintext")
    block["private_key"] = "{{secrets/gcp/vertex}}"
    create_endpoint(gateway, endpoint_name, [entity])
    answer = openai_client.chat.completions.create(
        model=endpoint_name, messages=[{"role": "user", "content": "secret"}]
    )
    assert answer.choices[0].message.content == "You said: secret"
    assert fake.token_requests == 1


def test_upstream_errors_keep_status_and_message(
    gateway: Server, fake: FakeGemini, openai_client: OpenAI, account_key, endpoint_name: str
) -> None:
    create_endpoint(gateway, endpoint_name, [vertex_entity(fake, new_key())])
    err = kit.chat_error(openai_client, endpoint_name, openai.AuthenticationError)
    assert "Invalid JWT Signature" in str(err)  # the token endpoint's own words
    assert not [r for r in fake.requests if r.path.startswith(PATH)]

    kit.update_config(gateway, endpoint_name, [vertex_entity(fake, account_key)])
    assert kit.invoke(gateway, endpoint_name, {"messages": [{"role": "user", "content": "x"}]}).ok
    kit.assert_rate_limit_kept(gateway, fake, endpoint_name)


def test_fake_refuses_tokens_it_did_not_issue(fake: FakeGemini) -> None:
    r = requests.post(
        f"{fake.url}{PATH}/{MODEL}:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
        headers={"Authorization": "Bearer ya29.forged"},
    )
    assert r.status_code == 401
    assert r.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"project_id": None}, "project_id"),
        ({"region": 5}, "region"),
        ({"private_key_plaintext": None}, "private_key is required"),
        ({"private_key_plaintext": "not a key"}, "not a service account key"),
        ({"private_key_plaintext": '{"type": "authorized_user"}'}, "'authorized_user' credential"),
        (
            {"private_key_plaintext": '{"type": "service_account"}'},
            "lacks client_email, private_key",
        ),
        (
            {"private_key_plaintext": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----"},
            "client_email",
        ),
        ({"client_email": "someone-else@x.iam.gserviceaccount.com"}, "not the key's account"),
        ({"private_key_plaintext": None, "private_key": "literal"}, "must be a secret reference"),
        ({"vertex_api_base": "aiplatform.googleapis.com"}, "vertex_api_base"),
    ],
)
def test_bad_config_is_a_clear_400(
    gateway: Server, fake: FakeGemini, account_key, endpoint_name: str, change: dict, expected: str
) -> None:
    entity = vertex_entity(fake, account_key)
    block = entity["external_model"]["google_cloud_vertex_ai_config"]
    for field, value in change.items():
        if value is None:
            block.pop(field)
        else:
            block[field] = value
    kit.assert_bad_config(gateway, endpoint_name, entity, expected, "PRIVATE KEY")

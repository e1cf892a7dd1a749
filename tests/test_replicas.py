"""Several `modelyard serve` replicas on one PostgreSQL store: a change made on one is in force
on the others within a second — endpoints, their config, tokens and secrets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from databricks.sdk import WorkspaceClient
from tests import provider_kit as kit
from tests.conftest import Server, pg_database, seconds_until, start_server
from tests.fakes.openai import FakeOpenAI

KEY = "sk-replica-key"
fake, clean = kit.fake_fixtures(lambda: FakeOpenAI(KEY))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    with pg_database() as url:
        servers = [
            start_server(tmp_path_factory.mktemp(f"replica{i}"), "--default-model", "",
                         "--database-url", url, extra_env={"MODELYARD_SECRET_KEY": "shared"})
            for i in range(2)
        ]  # fmt: skip
        try:
            yield servers[0], servers[1]
        finally:
            for server in servers:
                server.stop()


def ask(server: Server, endpoint: str, token: str | None = None) -> requests.Response:
    return requests.post(
        f"{server.url}/serving-endpoints/{endpoint}/invocations",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token or server.token}"},
        timeout=30,
    )


def entity(fake: FakeOpenAI, model: str, key: str | None = None) -> dict:
    config = {"openai_api_base": f"{fake.url}/v1"}
    config |= {"openai_api_key": key} if key else {"openai_api_key_plaintext": KEY}
    return kit.external("openai", model, config, name="gpt")


def test_changes_on_one_replica_apply_on_the_other_within_a_second(
    replicas: tuple[Server, Server], fake: FakeOpenAI
):
    a, b = replicas
    endpoint_name = "shared-chat"
    lag: dict[str, float] = {}

    kit.post_endpoint(a, endpoint_name, [entity(fake, "model-one")]).raise_for_status()
    lag["create"] = seconds_until(lambda: ask(b, endpoint_name).status_code == 200)

    kit.update_config(a, endpoint_name, [entity(fake, "model-two")])
    lag["config"] = seconds_until(lambda: ask(b, endpoint_name).json().get("model") == "model-two")

    token = requests.post(f"{a.url}/api/2.0/token/create", json={}, headers=a.headers).json()
    value = token["token_value"]
    lag["token"] = seconds_until(lambda: ask(b, endpoint_name, value).status_code == 200)
    requests.post(
        f"{a.url}/api/2.0/token/delete",
        json={"token_id": token["token_info"]["token_id"]},
        headers=a.headers,
    ).raise_for_status()
    lag["revoke"] = seconds_until(lambda: ask(b, endpoint_name, value).status_code == 403)

    w = WorkspaceClient(host=a.url, token=a.token)
    w.secrets.create_scope("shared")
    w.secrets.put_secret("shared", "openai", string_value=KEY)
    kit.update_config(a, endpoint_name, [entity(fake, "model-3", "{{secrets/shared/openai}}")])
    lag["secret"] = seconds_until(lambda: ask(b, endpoint_name).json().get("model") == "model-3")
    w.secrets.put_secret("shared", "openai", string_value="sk-rotated")
    lag["rotation"] = seconds_until(lambda: ask(b, endpoint_name).status_code == 401)

    requests.delete(f"{a.url}/api/2.0/serving-endpoints/{endpoint_name}", headers=a.headers)
    lag["delete"] = seconds_until(lambda: ask(b, endpoint_name).status_code == 404)

    print("replica lag (s): " + ", ".join(f"{k} {v:.2f}" for k, v in lag.items()))
    assert max(lag.values()) < 1.0, lag

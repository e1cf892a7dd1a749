"""Endpoint permissions through the real databricks-sdk and openai client: who may view,
query and manage, granted to users, groups and service principals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import openai
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, NotFound, PermissionDenied
from databricks.sdk.service import iam
from databricks.sdk.service.serving import (
    ServingEndpointAccessControlRequest as Grant,
)
from databricks.sdk.service.serving import (
    ServingEndpointPermissionLevel as Lvl,
)
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, pg_database, seconds_until, start_server
from tests.fakes.openai import FakeOpenAI

KEY = "sk-permissions-key"
upstream, clean_upstream = kit.fake_fixtures(lambda: FakeOpenAI(KEY))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("permissions"), "--default-model", "")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(srv: Server) -> WorkspaceClient:
    return WorkspaceClient(host=srv.url, token=srv.token)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def entities(fake: FakeOpenAI) -> list[dict]:
    config = {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1"}
    return [kit.external("openai", "gpt-4o", config, name="gpt")]


def create(srv: Server, token: str, fake: FakeOpenAI) -> dict:
    """Create an endpoint on the fake as the owner of `token`; returns it."""
    body = {"name": unique("ep"), "config": {"served_entities": entities(fake)}}
    r = requests.post(
        f"{srv.url}/api/2.0/serving-endpoints",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def query(srv: Server, token: str, name: str) -> requests.Response:
    return requests.post(
        f"{srv.url}/serving-endpoints/{name}/invocations",
        json={"messages": [{"role": "user", "content": "hello"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.fixture
def endpoint(srv: Server, upstream: FakeOpenAI) -> Iterator[dict]:
    """An endpoint created by the admin, deleted afterwards."""
    ep = create(srv, srv.token, upstream)
    yield ep
    requests.delete(
        f"{srv.url}/api/2.0/serving-endpoints/{ep['name']}", headers=srv.headers, timeout=30
    )


def new_user(admin: WorkspaceClient) -> tuple[iam.User, str]:
    user = admin.users.create(user_name=unique("user") + "@example.com")
    assert user.id
    token = admin.token_management.create_obo_token(application_id=user.id).token_value
    assert token
    return user, token


def statuses(srv: Server, tokens: list[str], name: str) -> list[int]:
    return [query(srv, t, name).status_code for t in tokens]


def test_can_query_granted_to_a_user_a_group_and_a_service_principal(
    srv: Server, admin: WorkspaceClient, endpoint: dict
) -> None:
    alice, alice_token = new_user(admin)
    bob, bob_token = new_user(admin)
    team = admin.groups.create(
        display_name=unique("team"), members=[iam.ComplexValue(value=bob.id)]
    )
    bot = admin.service_principals.create(display_name="bot")
    bot_token = admin.token_management.create_obo_token(
        application_id=bot.application_id
    ).token_value
    assert team.display_name and bot.application_id and bot_token
    tokens = [alice_token, bob_token, bot_token]
    name, endpoint_id = endpoint["name"], endpoint["id"]

    assert statuses(srv, tokens, name) == [403, 403, 403]
    denied = query(srv, alice_token, name).json()
    assert denied["error_code"] == "PERMISSION_DENIED"
    assert name in denied["message"] and "CAN_QUERY" in denied["message"]

    admin.serving_endpoints.update_permissions(
        endpoint_id,
        access_control_list=[Grant(user_name=alice.user_name, permission_level=Lvl.CAN_QUERY)],
    )
    assert statuses(srv, tokens, name) == [200, 403, 403]
    answer = query(srv, alice_token, name)
    assert answer.json()["choices"][0]["message"]["content"] == "You said: hello"

    admin.serving_endpoints.update_permissions(
        endpoint_id,
        access_control_list=[Grant(group_name=team.display_name, permission_level=Lvl.CAN_QUERY)],
    )
    assert statuses(srv, tokens, name) == [200, 200, 403]

    acl = admin.serving_endpoints.update_permissions(
        endpoint_id,
        access_control_list=[
            Grant(service_principal_name=bot.application_id, permission_level=Lvl.CAN_QUERY)
        ],
    )
    assert statuses(srv, tokens, name) == [200, 200, 200]

    # The ACL as the SDK parses it: direct grants, and the admins' inherited CAN_MANAGE.
    assert acl.object_id == f"/serving-endpoints/{endpoint_id}"
    assert acl.object_type == "serving-endpoint"
    direct = {
        (e.user_name or e.group_name or e.service_principal_name): e.all_permissions[0]
        for e in acl.access_control_list or []
        if e.all_permissions
    }
    for who in (alice.user_name, team.display_name, bot.application_id):
        assert direct[who].permission_level == Lvl.CAN_QUERY and direct[who].inherited is False
    assert direct["admins"].permission_level == Lvl.CAN_MANAGE and direct["admins"].inherited
    assert admin.serving_endpoints.get_permissions(endpoint_id) == acl

    # The openai client, as each principal: the same answers.
    for token in tokens:
        with OpenAI(base_url=f"{srv.url}/serving-endpoints", api_key=token, max_retries=0) as oai:
            assert [m.id for m in oai.models.list()] == [name]
            reply = oai.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "You said: hi"

    # PUT replaces: only the service principal keeps its grant.
    admin.serving_endpoints.set_permissions(
        endpoint_id,
        access_control_list=[
            Grant(service_principal_name=bot.application_id, permission_level=Lvl.CAN_QUERY)
        ],
    )
    assert statuses(srv, tokens, name) == [403, 403, 200]


def test_membership_changes_apply_to_the_next_request_and_groups_nest(
    srv: Server, admin: WorkspaceClient, endpoint: dict
) -> None:
    carol, token = new_user(admin)
    inner = admin.groups.create(
        display_name=unique("inner"), members=[iam.ComplexValue(value=carol.id)]
    )
    outer = admin.groups.create(
        display_name=unique("outer"), members=[iam.ComplexValue(value=inner.id)]
    )
    admin.serving_endpoints.set_permissions(
        endpoint["id"],
        access_control_list=[Grant(group_name=outer.display_name, permission_level=Lvl.CAN_QUERY)],
    )
    assert query(srv, token, endpoint["name"]).status_code == 200  # through inner → outer

    admin.groups.patch(
        inner.id,
        operations=[iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{carol.id}"]')],
    )
    assert query(srv, token, endpoint["name"]).status_code == 403
    admin.groups.patch(
        outer.id,
        operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": carol.id}])],
    )
    assert query(srv, token, endpoint["name"]).status_code == 200
    admin.groups.delete(outer.id)  # its grants go with it
    assert query(srv, token, endpoint["name"]).status_code == 403
    assert (
        admin.serving_endpoints.get_permissions(endpoint["id"]).access_control_list[0].group_name
        == "admins"
    )


def test_can_view_sees_but_cannot_query_and_lists_show_only_what_may_be_seen(
    srv: Server, admin: WorkspaceClient, upstream: FakeOpenAI, endpoint: dict
) -> None:
    dave, token = new_user(admin)
    hidden = create(srv, srv.token, upstream)
    try:
        admin.serving_endpoints.set_permissions(
            endpoint["id"],
            access_control_list=[Grant(user_name=dave.user_name, permission_level=Lvl.CAN_VIEW)],
        )
        w = WorkspaceClient(host=srv.url, token=token)
        got = w.serving_endpoints.get(endpoint["name"])
        assert got.permission_level is not None and got.permission_level.value == "CAN_VIEW"
        assert [e.name for e in w.serving_endpoints.list()] == [endpoint["name"]]
        assert {e.name for e in admin.serving_endpoints.list()} >= {
            endpoint["name"],
            hidden["name"],
        }
        assert query(srv, token, endpoint["name"]).status_code == 403
        with pytest.raises(PermissionDenied, match="CAN_VIEW"):
            w.serving_endpoints.get(hidden["name"])
        with pytest.raises(PermissionDenied):
            w.serving_endpoints.get_permissions(hidden["id"])
        assert w.serving_endpoints.get_permissions(endpoint["id"]).object_id
        levels = w.serving_endpoints.get_permission_levels(endpoint["id"]).permission_levels
        assert [lv.permission_level for lv in levels or []] == [
            Lvl.CAN_VIEW,
            Lvl.CAN_QUERY,
            Lvl.CAN_MANAGE,
        ]
        # models.list() lists what the caller may query: nothing yet.
        with OpenAI(base_url=f"{srv.url}/serving-endpoints", api_key=token, max_retries=0) as oai:
            assert list(oai.models.list()) == []
            with pytest.raises(openai.PermissionDeniedError):
                oai.chat.completions.create(
                    model=endpoint["name"], messages=[{"role": "user", "content": "hi"}]
                )
        # CAN_VIEW cannot manage: no config change, no grants, no delete.
        with pytest.raises(PermissionDenied, match="CAN_MANAGE"):
            w.serving_endpoints.update_config(endpoint["name"], served_entities=[])
        with pytest.raises(PermissionDenied):
            w.serving_endpoints.update_permissions(
                endpoint["id"],
                access_control_list=[
                    Grant(user_name=dave.user_name, permission_level=Lvl.CAN_MANAGE)
                ],
            )
        with pytest.raises(PermissionDenied):
            w.serving_endpoints.delete(endpoint["name"])
    finally:
        requests.delete(
            f"{srv.url}/api/2.0/serving-endpoints/{hidden['name']}", headers=srv.headers, timeout=30
        )


def test_can_manage_changes_config_and_grants(
    srv: Server, admin: WorkspaceClient, upstream: FakeOpenAI, endpoint: dict
) -> None:
    erin, token = new_user(admin)
    frank, frank_token = new_user(admin)
    admin.serving_endpoints.set_permissions(
        endpoint["id"],
        access_control_list=[Grant(user_name=erin.user_name, permission_level=Lvl.CAN_MANAGE)],
    )
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{srv.url}/api/2.0/serving-endpoints/{endpoint['name']}"
    r = requests.put(
        f"{url}/config", json={"served_entities": entities(upstream)}, headers=headers, timeout=30
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["config"]["config_version"] == 2 and r.json()["permission_level"] == "CAN_MANAGE"
    )
    r = requests.patch(
        f"{url}/tags",
        json={"add_tags": [{"key": "team", "value": "ml"}]},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert query(srv, token, endpoint["name"]).status_code == 200  # CAN_MANAGE includes query

    w = WorkspaceClient(host=srv.url, token=token)
    w.serving_endpoints.update_permissions(
        endpoint["id"],
        access_control_list=[Grant(user_name=frank.user_name, permission_level=Lvl.CAN_QUERY)],
    )
    assert query(srv, frank_token, endpoint["name"]).status_code == 200
    r = requests.put(
        f"{url}/config",
        json={"served_entities": entities(upstream)},
        headers={"Authorization": f"Bearer {frank_token}"},
        timeout=30,
    )
    assert r.status_code == 403 and "CAN_MANAGE" in r.json()["message"]


def test_the_creator_manages_what_it_created(
    srv: Server, admin: WorkspaceClient, upstream: FakeOpenAI
) -> None:
    gina, token = new_user(admin)
    _, other_token = new_user(admin)
    ep = create(srv, token, upstream)
    assert ep["permission_level"] == "CAN_MANAGE" and ep["creator"] == gina.user_name
    assert query(srv, token, ep["name"]).status_code == 200
    assert query(srv, other_token, ep["name"]).status_code == 403
    acl = admin.serving_endpoints.get_permissions(ep["id"])
    assert [
        (e.user_name, e.all_permissions[0].permission_level)
        for e in acl.access_control_list
        if e.user_name
    ] == [(gina.user_name, Lvl.CAN_MANAGE)]
    # The admin may do everything on every endpoint, whoever created it.
    assert admin.serving_endpoints.get(ep["name"]).permission_level.value == "CAN_MANAGE"
    w = WorkspaceClient(host=srv.url, token=token)
    w.serving_endpoints.delete(ep["name"])
    with pytest.raises(NotFound):
        admin.serving_endpoints.get_permissions(ep["id"])


def test_endpoint_configs_use_only_secrets_their_author_may(
    srv: Server, admin: WorkspaceClient, upstream: FakeOpenAI
):
    _, token = new_user(admin)
    as_user = WorkspaceClient(host=srv.url, token=token)
    admins_scope, own_scope = unique("admins"), unique("own")
    admin.secrets.create_scope(admins_scope)
    admin.secrets.put_secret(admins_scope, "openai", string_value=KEY)
    as_user.secrets.create_scope(own_scope)
    as_user.secrets.put_secret(own_scope, "openai", string_value=KEY)

    def body(scope: str) -> dict:
        config = {"openai_api_key": f"{{{{secrets/{scope}/openai}}}}",
                  "openai_api_base": f"{upstream.url}/v1"}  # fmt: skip
        entity = kit.external("openai", "gpt-4o", config, name="gpt")
        return {"name": unique("ep"), "config": {"served_entities": [entity]}}

    url, headers = f"{srv.url}/api/2.0/serving-endpoints", {"Authorization": f"Bearer {token}"}
    refused = requests.post(url, json=body(admins_scope), headers=headers, timeout=30)
    assert refused.status_code == 403
    assert f"may not use secrets of scope '{admins_scope}'" in refused.json()["message"]
    mine = requests.post(url, json=body(own_scope), headers=headers, timeout=30)
    assert mine.status_code == 200, mine.text
    assert query(srv, token, mine.json()["name"]).status_code == 200
    # Nor can the user's own endpoint be switched over to someone else's key.
    switched = requests.put(
        f"{url}/{mine.json()['name']}/config", json=body(admins_scope)["config"], headers=headers
    )
    assert switched.status_code == 403


def test_bad_grants_are_a_4xx_that_says_what_to_fix(
    srv: Server, admin: WorkspaceClient, endpoint: dict
) -> None:
    with pytest.raises(InvalidParameterValue, match=r"nobody@example\.com"):
        admin.serving_endpoints.set_permissions(
            endpoint["id"],
            access_control_list=[
                Grant(user_name="nobody@example.com", permission_level=Lvl.CAN_VIEW)
            ],
        )
    with pytest.raises(NotFound, match="takes its id"):
        admin.serving_endpoints.get_permissions(endpoint["name"])
    url = f"{srv.url}/api/2.0/permissions/serving-endpoints/{endpoint['id']}"
    bad = [
        {"access_control_list": [{"user_name": "admin", "permission_level": "CAN_FLY"}]},
        {"access_control_list": [{"permission_level": "CAN_VIEW"}]},
        {
            "access_control_list": [
                {"user_name": "admin", "group_name": "admins", "permission_level": "CAN_VIEW"}
            ]
        },
    ]
    for body in bad:
        r = requests.patch(url, json=body, headers=srv.headers, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = requests.get(url, timeout=30)
    assert r.status_code == 401


def test_principals_and_grants_reach_another_replica_within_a_second(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI
) -> None:
    with pg_database() as url:
        a, b = (
            start_server(
                tmp_path_factory.mktemp(f"acl-replica{i}"), "--default-model", "",
                "--database-url", url, extra_env={"MODELYARD_SECRET_KEY": "shared"},
            )
            for i in range(2)
        )  # fmt: skip
        try:
            w = WorkspaceClient(host=a.url, token=a.token)
            ep = create(a, a.token, upstream)
            user, token = new_user(w)
            team = w.groups.create(
                display_name=unique("team"), members=[iam.ComplexValue(value=user.id)]
            )
            w.serving_endpoints.set_permissions(
                ep["id"],
                access_control_list=[
                    Grant(group_name=team.display_name, permission_level=Lvl.CAN_QUERY)
                ],
            )
            lag = {"grant": seconds_until(lambda: query(b, token, ep["name"]).status_code == 200)}
            w.groups.patch(
                team.id,
                operations=[
                    iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{user.id}"]')
                ],
            )
            lag["membership"] = seconds_until(
                lambda: query(b, token, ep["name"]).status_code == 403
            )
            print("replica lag (s): " + ", ".join(f"{k} {v:.2f}" for k, v in lag.items()))
            assert max(lag.values()) < 1.0, lag
        finally:
            a.stop()
            b.stop()

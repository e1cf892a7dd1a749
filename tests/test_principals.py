"""Users, groups and service principals: the store on SQLite and PostgreSQL, and the SCIM API
through the real databricks-sdk against a running server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    InvalidParameterValue,
    NotFound,
    PermissionDenied,
    ResourceAlreadyExists,
)
from databricks.sdk.service import iam
from tests.conftest import Server, pg_database, start_server

from modelyard.store import (
    AclRecord,
    EndpointRecord,
    PrincipalRecord,
    Store,
    StoreConflict,
    StoreNotFound,
    TokenRecord,
)

PATCH_OP = [iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP]

# -- the store ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'modelyard.db'}")
        s.migrate()
        yield s
        s.close()
        return
    with pg_database() as url:
        s = Store(url)
        s.migrate()
        yield s
        s.close()


def principal(kind: str, name: str) -> PrincipalRecord:
    return PrincipalRecord(
        id=uuid.uuid4().hex[:16],
        kind=kind,
        name=name,
        display_name=name.title(),
        active=True,
        created_ms=1_729_527_763_000,
        attributes={"emails": [{"value": f"{name}@example.com", "primary": True}]},
    )


def endpoint_record(name: str) -> EndpointRecord:
    return EndpointRecord(
        id=uuid.uuid4().hex,
        name=name,
        creator="admin",
        created_ms=1,
        updated_ms=1,
        config_version=1,
        task="llm/v1/chat",
        endpoint_type="EXTERNAL_MODEL",
        config={"served_entities": []},
        ai_gateway=None,
        tags=[],
        description=None,
        route_optimized=False,
    )


def test_store_principals_and_memberships(store: Store) -> None:
    alice, bot = principal("user", "alice"), principal("service_principal", "app-1")
    store.insert_principal(alice)
    store.insert_principal(bot)
    team = principal("group", "team")
    store.insert_principal(team, [alice.id, bot.id])
    assert {p.name: p for p in store.list_principals()}["alice"] == alice
    assert sorted(store.all_memberships()) == sorted([(team.id, alice.id), (team.id, bot.id)])

    store.set_members(team.id, [bot.id])
    assert store.all_memberships() == [(team.id, bot.id)]

    # Names are unique within a kind only: a group may share a user's name.
    with pytest.raises(StoreConflict):
        store.insert_principal(principal("user", "alice"))
    store.insert_principal(principal("group", "alice"))
    with pytest.raises(StoreNotFound):
        store.set_members(team.id, ["no-such-id"])
    with pytest.raises(StoreNotFound):
        store.insert_principal(principal("group", "ghosts"), ["no-such-id"])
    assert "ghosts" not in {p.name for p in store.list_principals()}

    renamed = PrincipalRecord(**{**alice.__dict__, "display_name": "Alice A.", "active": False})
    store.update_principal(renamed)
    assert {p.id: p for p in store.list_principals()}[alice.id] == renamed


def test_store_delete_principal_takes_memberships_grants_and_tokens(store: Store) -> None:
    alice, team = principal("user", "alice"), principal("group", "team")
    store.insert_principal(alice)
    store.insert_principal(team, [alice.id])
    ep = endpoint_record("chat")
    store.insert_endpoint(ep)
    store.set_acl(ep.id, {alice.id: "CAN_QUERY", team.id: "CAN_VIEW"}, replace=True)
    store.insert_token(TokenRecord(uuid.uuid4().hex, "h" * 64, "alice", None, 1, -1))
    store.insert_token(TokenRecord(uuid.uuid4().hex, "a" * 64, "admin", None, 1, -1))

    assert store.delete_principal(alice.id)
    assert not store.delete_principal(alice.id)
    assert store.all_memberships() == []
    assert store.list_acl() == [AclRecord(ep.id, team.id, "CAN_VIEW")]
    assert [t.owner for t in store.list_tokens()] == ["admin"]

    # A group's members are not users: deleting it keeps every token.
    assert store.delete_principal(team.id)
    assert store.list_acl() == [] and len(store.list_tokens()) == 1


def test_store_acl_replace_patch_and_endpoint_delete(store: Store) -> None:
    alice, bob = principal("user", "alice"), principal("user", "bob")
    store.insert_principal(alice)
    store.insert_principal(bob)
    ep, other = endpoint_record("chat"), endpoint_record("other")
    store.insert_endpoint(ep)
    store.insert_endpoint(other)
    store.set_acl(ep.id, {alice.id: "CAN_MANAGE"}, replace=True)
    store.set_acl(ep.id, {bob.id: "CAN_VIEW", alice.id: "CAN_QUERY"}, replace=False)
    store.set_acl(other.id, {bob.id: "CAN_QUERY"}, replace=True)
    assert {(a.endpoint_id, a.principal_id, a.level) for a in store.list_acl()} == {
        (ep.id, alice.id, "CAN_QUERY"),
        (ep.id, bob.id, "CAN_VIEW"),
        (other.id, bob.id, "CAN_QUERY"),
    }
    store.set_acl(ep.id, {bob.id: "CAN_MANAGE"}, replace=True)
    assert {(a.principal_id, a.level) for a in store.list_acl() if a.endpoint_id == ep.id} == {
        (bob.id, "CAN_MANAGE")
    }
    with pytest.raises(StoreNotFound):
        store.set_acl(ep.id, {"no-such-id": "CAN_VIEW"}, replace=False)

    assert store.delete_endpoint("chat")
    assert store.list_acl() == [AclRecord(other.id, bob.id, "CAN_QUERY")]


# -- the SCIM API through the SDK --------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("principals"), "--default-model", "")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(srv: Server) -> WorkspaceClient:
    return WorkspaceClient(host=srv.url, token=srv.token)


def client(srv: Server, token: str) -> WorkspaceClient:
    return WorkspaceClient(host=srv.url, token=token)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def user_token(admin: WorkspaceClient, user: iam.User) -> str:
    """An admin creates a user's first token (modelyard accepts a user's id here)."""
    assert user.id is not None
    value = admin.token_management.create_obo_token(application_id=user.id).token_value
    assert value
    return value


def test_admin_is_a_member_of_admins_from_the_first_start(admin: WorkspaceClient) -> None:
    me = admin.current_user.me()
    assert me.user_name == "admin" and me.id and me.active
    assert [g.display for g in me.groups or []] == ["admins"]
    (admins,) = admin.groups.list(filter='displayName eq "admins"')
    assert [m.value for m in admins.members or []] == [me.id]


def test_users_create_get_list_patch_delete(srv: Server, admin: WorkspaceClient) -> None:
    name = unique("alice") + "@example.com"
    created = admin.users.create(
        user_name=name,
        display_name="Alice",
        emails=[iam.ComplexValue(value=name, primary=True)],
        name=iam.Name(given_name="Alice", family_name="Liddell"),
    )
    assert created.id and created.id.isdigit() and created.user_name == name
    got = admin.users.get(created.id)
    assert (got.display_name, got.name, got.active) == ("Alice", created.name, True)
    assert got.emails and got.emails[0].value == name
    assert name in {u.user_name for u in admin.users.list()}
    # The SDK pages by startIndex until a page comes back empty.
    assert name in {u.user_name for u in admin.users.list(count=1)}
    assert [u.id for u in admin.users.list(filter=f'userName eq "{name}"')] == [created.id]

    token = user_token(admin, created)
    assert client(srv, token).current_user.me().user_name == name

    # Deactivated: the token stops working at once; reactivated: it works again.
    admin.users.patch(
        created.id,
        operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=[{"value": "false"}])],
        schemas=PATCH_OP,
    )
    assert admin.users.get(created.id).active is False
    with pytest.raises(PermissionDenied, match="deactivated"):
        client(srv, token).current_user.me()
    admin.users.patch(
        created.id, operations=[iam.Patch(op=iam.PatchOp.REPLACE, value={"active": True})]
    )
    assert client(srv, token).current_user.me().user_name == name

    admin.users.delete(created.id)
    with pytest.raises(NotFound):
        admin.users.get(created.id)
    with pytest.raises(PermissionDenied):  # its tokens went with it
        client(srv, token).current_user.me()


def test_groups_with_members_through_patch(admin: WorkspaceClient) -> None:
    alice = admin.users.create(user_name=unique("alice"))
    bob = admin.users.create(user_name=unique("bob"))
    bot = admin.service_principals.create(display_name="bot")
    group = admin.groups.create(
        display_name=unique("team"), members=[iam.ComplexValue(value=alice.id)]
    )
    assert group.id and [m.value for m in group.members or []] == [alice.id]

    # The forms SCIM clients send: a value object, a path with a list, a filtered remove.
    admin.groups.patch(
        group.id,
        operations=[
            iam.Patch(op=iam.PatchOp.ADD, value={"members": [{"value": bob.id}]}),
            iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": bot.id}]),
        ],
        schemas=PATCH_OP,
    )
    got = admin.groups.get(group.id)
    assert {m.value for m in got.members or []} == {alice.id, bob.id, bot.id}
    refs = {m.value: m.ref for m in got.members or []}
    assert refs[bot.id] == f"ServicePrincipals/{bot.id}" and refs[bob.id] == f"Users/{bob.id}"
    assert [g.value for g in admin.users.get(bob.id).groups or []] == [group.id]
    assert [g.value for g in admin.service_principals.get(bot.id).groups or []] == [group.id]

    admin.groups.patch(
        group.id,
        operations=[iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{alice.id}"]')],
    )
    got = admin.groups.get(group.id)
    assert {m.value for m in got.members or []} == {bob.id, bot.id}
    assert admin.users.get(alice.id).groups == []

    # Deleting a member drops it from the group.
    admin.users.delete(bob.id)
    assert [m.value for m in admin.groups.get(group.id).members or []] == [bot.id]
    admin.groups.delete(group.id)
    with pytest.raises(NotFound):
        admin.groups.get(group.id)
    assert admin.service_principals.get(bot.id).groups == []


def test_service_principal_gets_an_application_id_and_a_token(
    srv: Server, admin: WorkspaceClient
) -> None:
    bot = admin.service_principals.create(display_name="ci-bot")
    assert bot.id and bot.application_id and bot.display_name == "ci-bot"
    assert bot.application_id in {s.application_id for s in admin.service_principals.list()}
    obo = admin.token_management.create_obo_token(
        application_id=bot.application_id, lifetime_seconds=3600, comment="ci"
    )
    assert obo.token_value and obo.token_info and obo.token_info.comment == "ci"
    assert obo.token_info.expiry_time > obo.token_info.creation_time
    me = client(srv, obo.token_value).current_user.me()
    assert (me.user_name, me.id) == (bot.application_id, bot.id)

    # A chosen applicationId is kept; it is unique.
    app_id = str(uuid.uuid4())
    assert admin.service_principals.create(application_id=app_id).application_id == app_id
    with pytest.raises(ResourceAlreadyExists):
        admin.service_principals.create(application_id=app_id)


def test_only_admins_manage_principals(srv: Server, admin: WorkspaceClient) -> None:
    alice = admin.users.create(user_name=unique("alice"))
    group = admin.groups.create(display_name=unique("team"))
    bot = admin.service_principals.create(display_name="bot")
    w = client(srv, user_token(admin, alice))

    with pytest.raises(PermissionDenied, match="admin"):
        w.users.create(user_name=unique("eve"))
    with pytest.raises(PermissionDenied):
        w.groups.patch(
            group.id,
            operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": alice.id}])],
        )
    with pytest.raises(PermissionDenied):
        w.service_principals.delete(bot.id)
    with pytest.raises(PermissionDenied):
        w.token_management.create_obo_token(application_id=bot.application_id)
    assert admin.groups.get(group.id).members == []

    # A user makes further tokens of its own; reading the directory is open to everyone.
    own = w.tokens.create(comment="mine", lifetime_seconds=600)
    assert own.token_value and client(srv, own.token_value).current_user.me().id == alice.id
    assert alice.user_name in {u.user_name for u in w.users.list()}


def test_bad_input_is_a_4xx_that_says_what_to_fix(srv: Server, admin: WorkspaceClient) -> None:
    with pytest.raises(InvalidParameterValue, match="userName is required"):
        admin.users.create(display_name="nameless")
    name = unique("dup")
    admin.users.create(user_name=name)
    with pytest.raises(ResourceAlreadyExists, match=name):
        admin.users.create(user_name=name)
    with pytest.raises(InvalidParameterValue, match="displayName is required"):
        admin.groups.create()
    with pytest.raises(InvalidParameterValue, match="no-such-id"):
        admin.groups.create(
            display_name=unique("g"), members=[iam.ComplexValue(value="no-such-id")]
        )
    group = admin.groups.create(display_name=unique("g"))
    with pytest.raises(InvalidParameterValue, match="Unsupported PATCH path"):
        admin.groups.patch(
            group.id, operations=[iam.Patch(op=iam.PatchOp.ADD, path="owner", value="x")]
        )
    with pytest.raises(InvalidParameterValue, match="member of itself"):
        admin.groups.patch(
            group.id,
            operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": group.id}])],
        )
    with pytest.raises(InvalidParameterValue, match="Unsupported filter"):
        list(admin.users.list(filter="userName pr"))
    (admins,) = admin.groups.list(filter='displayName eq "admins"')
    with pytest.raises(InvalidParameterValue, match="built in"):
        admin.groups.delete(admins.id)
    with pytest.raises(NotFound):
        admin.users.get(group.id)  # a group's id is not a user's
    with pytest.raises(NotFound):
        admin.token_management.create_obo_token(application_id="no-such-app")
    r = requests.post(
        f"{srv.url}/api/2.0/preview/scim/v2/Users",
        data=b"{not json",
        headers=srv.headers,
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"

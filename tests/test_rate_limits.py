"""Rate limits: which limits bind whom, the counters' windows, and the limits enforced by real
servers: one with counters in memory, and two replicas sharing PostgreSQL and Redis with the
clients alternating between them; then Redis down, failing closed or open."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import openai
import pytest
import redis
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.iam import ComplexValue
from databricks.sdk.service.serving import (
    RateLimit,
    RateLimitKey,
    RateLimitRenewalPeriod,
    ServingEndpointAccessControlRequest,
    ServingEndpointPermissionLevel,
)
from openai import OpenAI
from tests import provider_kit as kit
from tests.conftest import Server, create_endpoint, free_port, pg_database, start_server
from tests.fakes.openai import FakeOpenAI

from modelyard.gateway.auth import Principal
from modelyard.gateway.counters import Charge, MemoryCounters, RedisCounters
from modelyard.gateway.limit_rules import DEFAULT_MAX_TOKENS, applicable, estimate_tokens
from modelyard.schemas.endpoints import AiGatewayRateLimit
from modelyard.schemas.query import ChatRequest, EmbeddingRequest

KEY = "sk-rate-limits"
REDIS_URL = os.environ.get("MODELYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
CAN_QUERY = ServingEndpointPermissionLevel.CAN_QUERY
LONG_PROMPT = " ".join(f"word{i}" for i in range(50))

upstream, clean_upstream = kit.fake_fixtures(lambda: FakeOpenAI(KEY))


# -- which limits bind whom ------------------------------------------------------------------------


def limits(*specs: dict) -> list[AiGatewayRateLimit]:
    return [AiGatewayRateLimit.model_validate(s) for s in specs]


RULES = limits(
    {"calls": 100, "key": "endpoint"},
    {"calls": 10, "key": "user"},
    {"calls": 50, "key": "user", "principal": "alice"},
    {"calls": 30, "key": "user_group", "principal": "ds"},
    {"tokens": 1000, "key": "user_group", "principal": "ml"},
    {"calls": 5, "key": "service_principal", "principal": "etl-bot"},
)


def bound(principal: Principal) -> set[tuple[str, int]]:
    return {(r.counter, r.limit) for r in applicable("ep", principal, RULES)}


def test_own_limit_beats_groups_which_beat_the_default_and_the_endpoint_limit_always_applies():
    alice = Principal("alice", "t", groups=frozenset({"ds"}))
    assert bound(alice) == {("ep:calls:endpoint", 100), ("ep:calls:user:alice", 50)}
    # Every group limit of every group the caller is in; one shared counter per group.
    bob = Principal("bob", "t", groups=frozenset({"ds", "ml", "admins"}))
    assert bound(bob) == {
        ("ep:calls:endpoint", 100),
        ("ep:calls:group:ds", 30),
        ("ep:tokens:group:ml", 1000),
    }
    carol = Principal("carol", "t", groups=frozenset({"admins"}))
    assert bound(carol) == {("ep:calls:endpoint", 100), ("ep:calls:user:carol", 10)}
    bot = Principal("etl-bot", "t", service_principal=True)
    assert bound(bot) == {("ep:calls:endpoint", 100), ("ep:calls:user:etl-bot", 5)}


def test_limits_on_one_counter_keep_the_tightest():
    rules = applicable(
        "ep",
        Principal("dan", "t"),
        limits({"calls": 10, "key": "user"}, {"calls": 4, "key": "user"}),
    )
    assert [(r.counter, r.limit) for r in rules] == [("ep:calls:user:dan", 4)]


def test_token_estimate_is_a_quarter_of_the_characters_plus_the_completion_allowed():
    chat = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50, "n": 2}
    )
    assert estimate_tokens(chat) == 100 + 4 + 50 * 2
    unset = ChatRequest.model_validate({"messages": [{"role": "user", "content": "abc"}]})
    assert estimate_tokens(unset) == 1 + 4 + DEFAULT_MAX_TOKENS
    assert estimate_tokens(EmbeddingRequest.model_validate({"input": ["a" * 8, "b" * 8]})) == 4


# -- the counters ----------------------------------------------------------------------------------


async def test_memory_window_slides_and_says_when_a_slot_frees():
    now = [1000.0]
    counters = MemoryCounters(clock=lambda: now[0])
    calls = [Charge("ep:calls:user:a", 3, 1)]
    for t in (0, 10, 20):
        now[0] = 1000 + t
        assert await counters.reserve(uuid.uuid4().hex, calls) is None
    now[0] = 1030
    refusal = await counters.reserve("x", calls)
    assert refusal is not None and refusal.wait_us == 30_000_000  # the call at 0 leaves at 60
    now[0] = 1060  # exactly a minute after the first: it no longer counts
    assert await counters.reserve("y", calls) is None
    now[0] = 1065  # but the calls at 10, 20 and 60 still do: never 4 in 60 s
    assert (await counters.reserve("z", calls)).wait_us == 5_000_000


async def test_memory_settle_gives_back_unused_tokens_and_charges_late_overshoot():
    now = [0.0]
    counters = MemoryCounters(clock=lambda: now[0])
    tokens = [Charge("ep:tokens:endpoint", 100, 60, tokens=True)]
    assert await counters.reserve("a", tokens) is None
    assert await counters.reserve("b", tokens) is not None  # 120 > 100
    await counters.settle("a", tokens, 10)
    assert await counters.reserve("b", tokens) is None  # 70
    now[0] = 61  # both expired; "a" settles late with 90 used: the 30 over its 60 is charged
    await counters.settle("a", tokens, 90)
    assert await counters.reserve("c", [Charge("ep:tokens:endpoint", 100, 71)]) is not None
    assert await counters.reserve("c", [Charge("ep:tokens:endpoint", 100, 70)]) is None


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A Redis database, flushed before and after."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


async def test_redis_counters_are_exact_under_concurrency_from_two_clients(redis_db):
    replicas = [RedisCounters(redis_db), RedisCounters(redis_db)]
    calls = [
        Charge("ep:calls:user:a", 60, 1),
        Charge("ep:tokens:endpoint", 10_000, 100, tokens=True),
    ]
    results = await asyncio.gather(*(replicas[i % 2].reserve(f"e{i}", calls) for i in range(100)))
    assert sum(r is None for r in results) == 60
    refusals = [r for r in results if r is not None]
    assert {r.index for r in refusals} == {0}
    assert all(59_000_000 < r.wait_us <= 60_000_000 for r in refusals)
    # Settling gives tokens back: 60 reservations of 100 = 6000; settled at 1 each, 60 are left.
    tokens = calls[1:]
    big = [Charge("ep:tokens:endpoint", 10_000, 9_000, tokens=True)]
    assert await replicas[0].reserve("big", big) is not None
    await asyncio.gather(*(replicas[i % 2].settle(f"e{i}", tokens, 1) for i in range(100)))
    assert await replicas[1].reserve("big", big) is None
    for counters in replicas:
        await counters.close()


# -- servers ---------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """One server or several replicas; request `i` goes to replica `i % n`."""

    servers: list[Server]
    tokens: dict[str, str]  # principal → its token
    endpoints: dict[str, str]  # scenario → endpoint name
    model_of: dict[str, str]  # endpoint name → the upstream model it calls

    def url(self, i: int) -> str:
        return self.servers[i % len(self.servers)].url

    def post(self, i: int, who: str, endpoint: str) -> requests.Response:
        return requests.post(
            f"{self.url(i)}/serving-endpoints/{endpoint}/invocations",
            json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 20},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )

    def client(self, i: int, who: str) -> OpenAI:
        url = f"{self.url(i)}/serving-endpoints"
        return OpenAI(base_url=url, api_key=self.tokens[who], max_retries=0)


SP_APP_ID = "5f0c8a6e-7d1b-4c55-9a41-0e9d7c3b2a10"
SCENARIOS = {
    "calls": [{"calls": 60, "key": "user"}],
    "tokens": [{"tokens": 1000, "key": "user"}],
    "strictest": [
        {"calls": 8, "key": "endpoint"},
        {"calls": 5, "key": "user"},
        {"tokens": 100_000, "key": "endpoint"},
    ],
    "precedence": [
        {"calls": 10, "key": "user"},
        {"calls": 4, "key": "user_group", "principal": "ds"},
        {"calls": 6, "key": "user", "principal": "carol"},
        {"calls": 2, "key": "service_principal", "principal": SP_APP_ID},
    ],
}


def create_principals(server: Server) -> dict[str, str]:
    """Users alice, bob and carol (bob and carol in group ds), service principal etl-bot, and
    a token for each, made through the SDK as an admin would."""
    w = WorkspaceClient(host=server.url, token=server.token)
    ids = {name: w.users.create(user_name=name).id for name in ("alice", "bob", "carol")}
    w.groups.create(
        display_name="ds",
        members=[ComplexValue(value=ids["bob"]), ComplexValue(value=ids["carol"])],
    )
    w.service_principals.create(display_name="etl-bot", application_id=SP_APP_ID)
    tokens = {}
    for who, application_id in [*((n, n) for n in ids), ("etl-bot", SP_APP_ID)]:
        made = w.token_management.create_obo_token(application_id, lifetime_seconds=3600)
        tokens[who] = made.token_value
    return tokens


def create_scenarios(server: Server, fake: FakeOpenAI) -> Cluster:
    w = WorkspaceClient(host=server.url, token=server.token)
    tokens = create_principals(server)
    grants = [
        *(
            ServingEndpointAccessControlRequest(user_name=u, permission_level=CAN_QUERY)
            for u in ("alice", "bob", "carol")
        ),
        ServingEndpointAccessControlRequest(
            service_principal_name=SP_APP_ID, permission_level=CAN_QUERY
        ),
    ]
    endpoints, model_of = {}, {}
    for scenario, rate_limits in SCENARIOS.items():
        name = f"rl-{scenario}-{uuid.uuid4().hex[:6]}"
        model = f"model-{name}"
        entity = kit.external(
            "openai",
            model,
            {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1"},
            name="upstream",
        )
        created = create_endpoint(server, name, [entity], ai_gateway={"rate_limits": rate_limits})
        w.serving_endpoints.set_permissions(created["id"], access_control_list=grants)
        endpoints[scenario], model_of[name] = name, model
    return Cluster([server], tokens, endpoints, model_of)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Cluster]:
    """One server, SQLite, counters in memory."""
    server = start_server(tmp_path_factory.mktemp("single"), "--default-model", "")
    try:
        yield create_scenarios(server, upstream)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Cluster]:
    """Two servers sharing a fresh PostgreSQL database and a flushed Redis database."""
    rdb = redis.Redis.from_url(REDIS_URL)
    rdb.flushdb()
    servers: list[Server] = []
    try:
        with pg_database() as db:
            args = ("--default-model", "", "--database-url", db, "--redis-url", REDIS_URL)
            env = {"MODELYARD_SECRET_KEY": "rate-limit-replicas-share-this-passphrase"}
            servers.append(start_server(tmp_path_factory.mktemp("replica1"), *args, extra_env=env))
            cluster = create_scenarios(servers[0], upstream)
            # Made before the second replica starts, so it loads them all from the store.
            servers.append(start_server(tmp_path_factory.mktemp("replica2"), *args, extra_env=env))
            cluster.servers = servers
            yield cluster
            for server in servers:
                server.stop()
    finally:
        for server in servers:
            server.stop()
        rdb.flushdb()
        rdb.close()


@pytest.fixture(params=["single", "replicas"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return request.getfixturevalue(request.param)


def upstream_calls(fake: FakeOpenAI, cluster: Cluster, endpoint: str) -> int:
    model = cluster.model_of[endpoint]
    return sum(1 for r in fake.requests if r.json().get("model") == model)


def assert_refused(response: requests.Response, started: float, limit_text: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert limit_text in body["message"]
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    # Honest: the first call of the window leaves it 60 s after it was made, not sooner or later.
    elapsed = time.monotonic() - started
    assert 60 - elapsed - 1 <= int(retry_after) <= 60


def test_exactly_the_per_user_call_limit_succeeds(cluster: Cluster, upstream: FakeOpenAI):
    endpoint = cluster.endpoints["calls"]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # concurrent, alternating between the replicas
        responses = list(pool.map(lambda i: cluster.post(i, "alice", endpoint), range(75)))
    assert sorted(r.status_code for r in responses) == [200] * 60 + [429] * 15
    for response in responses:
        if response.status_code == 429:
            assert_refused(response, started, "per-user limit of 60 calls per minute")
    assert upstream_calls(upstream, cluster, endpoint) == 60  # refusals never went upstream
    # Per user: bob has his own 60.
    assert cluster.post(0, "bob", endpoint).status_code == 200
    assert cluster.post(1, "bob", endpoint).status_code == 200


def test_token_limit_holds_to_within_one_reservation(cluster: Cluster, upstream: FakeOpenAI):
    endpoint = cluster.endpoints["tokens"]
    messages = [{"role": "user", "content": LONG_PROMPT}]
    reservation = estimate_tokens(ChatRequest(messages=messages, max_tokens=400))
    used, refusals, started = [], [], time.monotonic()
    for i in range(14):
        with cluster.client(i, "alice") as client:
            try:
                if i % 2:  # streamed answers are settled too
                    stream = client.chat.completions.create(
                        model=endpoint,
                        messages=messages,
                        max_tokens=400,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    used += [c.usage.total_tokens for c in stream if c.usage]
                else:
                    answer = client.chat.completions.create(
                        model=endpoint, messages=messages, max_tokens=400
                    )
                    used.append(answer.usage.total_tokens)
            except openai.RateLimitError as exc:
                refusals.append(exc)
    # Without giving back the unused part of each reservation, only 2 would fit in 1000.
    assert reservation > 400 and len(used) > 2
    assert 1000 - reservation < sum(used) <= 1000
    assert len(used) + len(refusals) == 14 and refusals
    for exc in refusals:
        assert_refused(exc.response, started, "per-user limit of 1000 tokens per minute")
        assert f"this request reserves {reservation}" in exc.response.json()["message"]


def test_the_strictest_applicable_limit_wins(cluster: Cluster):
    endpoint = cluster.endpoints["strictest"]
    started = time.monotonic()
    alice = [cluster.post(i, "alice", endpoint) for i in range(6)]
    assert [r.status_code for r in alice] == [200] * 5 + [429]
    assert_refused(alice[-1], started, "per-user limit of 5 calls per minute")
    bob = [cluster.post(i, "bob", endpoint) for i in range(4)]  # the endpoint has 3 calls left
    assert [r.status_code for r in bob] == [200] * 3 + [429]
    assert_refused(bob[-1], started, "endpoint's limit of 8 calls per minute")


def test_own_limits_beat_group_limits_which_beat_the_default(cluster: Cluster):
    endpoint = cluster.endpoints["precedence"]
    started = time.monotonic()
    # bob and carol are in ds, whose 4 calls they share; carol's own 6 beat it.
    bob = [cluster.post(i, "bob", endpoint) for i in range(5)]
    assert [r.status_code for r in bob] == [200] * 4 + [429]
    assert_refused(bob[-1], started, "the limit of group 'ds' of 4 calls per minute")
    carol = [cluster.post(i, "carol", endpoint) for i in range(7)]
    assert [r.status_code for r in carol] == [200] * 6 + [429]
    assert_refused(carol[-1], started, "your limit (user 'carol') of 6 calls per minute")
    # alice is in no group with a limit: the default per-user 10.
    assert [cluster.post(i, "alice", endpoint).status_code for i in range(11)] == [200] * 10 + [429]
    # The service principal's own limit, by application id.
    bot = [cluster.post(i, "etl-bot", endpoint) for i in range(3)]
    assert [r.status_code for r in bot] == [200, 200, 429]
    assert_refused(bot[-1], started, f"(service_principal '{SP_APP_ID}') of 2 calls per minute")


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_limit", "expected"),
    [
        ({"key": "user"}, "ai_gateway.rate_limits[0]: a rate limit needs calls or tokens"),
        ({"calls": 5, "key": "user_group"}, "with key 'user_group' needs principal"),
        ({"calls": 5, "principal": "bob"}, "key 'endpoint' takes no principal"),
        ({"calls": "5"}, "ai_gateway.rate_limits[0].calls"),
        ({"calls": 0}, "ai_gateway.rate_limits[0].calls"),
        ({"calls": 5, "key": "team"}, "ai_gateway.rate_limits[0].key"),
        ({"calls": 5, "renewal_period": "hour"}, "ai_gateway.rate_limits[0].renewal_period"),
        ({"call": 5}, "ai_gateway.rate_limits[0].call"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(single: Cluster, rate_limit, expected):
    server = single.servers[0]
    body = {
        "name": "never-created",
        "config": {"served_entities": [{"entity_name": "smollm2-135m-instruct"}]},
        "ai_gateway": {"rate_limits": [rate_limit]},
    }
    r = requests.post(
        f"{server.url}/api/2.0/serving-endpoints", json=body, headers=server.headers, timeout=30
    )
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in r.json()["message"]


def test_at_most_twenty_limits(single: Cluster):
    server = single.servers[0]
    endpoint = single.endpoints["calls"]
    block = {"rate_limits": [{"calls": 100 + i, "key": "user"} for i in range(21)]}
    r = requests.put(
        f"{server.url}/api/2.0/serving-endpoints/{endpoint}/ai-gateway",
        json=block,
        headers=server.headers,
        timeout=30,
    )
    assert r.status_code == 400 and "rate_limits" in r.json()["message"], r.text


def test_legacy_rate_limits_through_the_sdk(single: Cluster, upstream: FakeOpenAI):
    server = single.servers[0]
    w = WorkspaceClient(host=server.url, token=server.token)
    name = f"rl-legacy-{uuid.uuid4().hex[:6]}"
    entity = kit.external(
        "openai",
        "legacy",
        {"openai_api_key_plaintext": KEY, "openai_api_base": f"{upstream.url}/v1"},
    )
    created = create_endpoint(server, name, [entity], rate_limits=[{"calls": 9, "key": "endpoint"}])
    grants = [
        ServingEndpointAccessControlRequest(user_name=u, permission_level=CAN_QUERY)
        for u in ("alice", "bob")
    ]
    w.serving_endpoints.set_permissions(created["id"], access_control_list=grants)
    got = w.serving_endpoints.get(name)
    assert [(r.calls, r.key.value) for r in got.ai_gateway.rate_limits] == [(9, "endpoint")]

    put = w.serving_endpoints.put(
        name,
        rate_limits=[
            RateLimit(calls=2, key=RateLimitKey.USER, renewal_period=RateLimitRenewalPeriod.MINUTE)
        ],
    )
    assert [(r.calls, r.key, r.renewal_period) for r in put.rate_limits] == [
        (2, RateLimitKey.USER, RateLimitRenewalPeriod.MINUTE)
    ]
    cluster = replace(single, endpoints={})
    assert [cluster.post(0, "alice", name).status_code for _ in range(3)] == [200, 200, 429]
    assert cluster.post(0, "bob", name).status_code == 200

    # Removing them lifts the limit; a tokens field is not part of the legacy shape.
    assert w.serving_endpoints.put(name, rate_limits=[]).rate_limits == []
    assert cluster.post(0, "alice", name).status_code == 200
    r = requests.put(
        f"{server.url}/api/2.0/serving-endpoints/{name}/rate-limits",
        json={"rate_limits": [{"tokens": 5, "key": "user"}]},
        headers=server.headers,
        timeout=30,
    )
    assert r.status_code == 400 and "rate_limits[0].calls" in r.json()["message"], r.text
    w.serving_endpoints.delete(name)


# -- Redis down ------------------------------------------------------------------------------------


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A private redis-server (the shared one must stay up for everyone else)."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    return process


def limited_endpoint(server: Server, fake: FakeOpenAI, rate_limits: list[dict]) -> str:
    name = f"rl-{uuid.uuid4().hex[:8]}"
    entity = kit.external(
        "openai", "m", {"openai_api_key_plaintext": KEY, "openai_api_base": f"{fake.url}/v1"}
    )
    create_endpoint(
        server, name, [entity], ai_gateway={"rate_limits": rate_limits} if rate_limits else None
    )
    return name


def ask(server: Server, endpoint: str) -> requests.Response:
    return requests.post(
        f"{server.url}/serving-endpoints/{endpoint}/invocations",
        json={"messages": [{"role": "user", "content": "hello"}]},
        headers=server.headers,
        timeout=30,
    )


def test_redis_stopped_fails_closed_logs_once_and_recovers(tmp_path: Path, upstream: FakeOpenAI):
    port = free_port()
    redis_server = start_redis(port)
    server = start_server(
        tmp_path, "--default-model", "", "--redis-url", f"redis://127.0.0.1:{port}/0"
    )
    try:
        limited = limited_endpoint(server, upstream, [{"calls": 100, "key": "user"}])
        unlimited = limited_endpoint(server, upstream, [])
        assert ask(server, limited).status_code == 200

        redis_server.terminate()
        redis_server.wait(10)
        for _ in range(3):
            r = ask(server, limited)
            assert r.status_code == 503, r.text
            assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert f"Redis at 127.0.0.1:{port}/0 is unreachable" in r.json()["message"]
        assert ask(server, unlimited).status_code == 200  # no limits, nothing to check
        assert server.log().count("is unreachable") == 1
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert "modelyard_rate_limit_redis_down 1.0" in metrics
        assert "modelyard_rate_limit_redis_errors_total 3.0" in metrics

        redis_server = start_redis(port)
        assert ask(server, limited).status_code == 200
        assert server.log().count("is reachable again") == 1
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert "modelyard_rate_limit_redis_down 0.0" in metrics
    finally:
        server.stop()
        redis_server.terminate()
        redis_server.wait(10)


def test_unreachable_redis_fails_open_when_configured(tmp_path: Path, upstream: FakeOpenAI):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    server = start_server(
        tmp_path,
        "--default-model",
        "",
        "--redis-url",
        closed,
        extra_env={"MODELYARD_RATE_LIMIT_ON_REDIS_ERROR": "open"},
    )
    try:
        limited = limited_endpoint(server, upstream, [{"calls": 1, "key": "user"}])
        assert [ask(server, limited).status_code for _ in range(3)] == [200, 200, 200]
        log = server.log()
        assert log.count("is unreachable") == 1, log
        assert "let through unchecked" in log
    finally:
        server.stop()

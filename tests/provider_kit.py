"""What the provider tests share: the tools they offer, the entities they serve, the fixtures of a
fake upstream, chatting through the openai client and reading its streamed answers, and the REST
calls and checks they make on the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import openai
import pytest
import requests
from openai import OpenAI
from tests.conftest import Server
from tests.fakes.harness import FakeUpstream

Fake = TypeVar("Fake", bound=FakeUpstream)
Error = TypeVar("Error", bound=openai.APIError)

# -- tools -----------------------------------------------------------------------------------------


def function(name: str, prop: str, description: str | None = None) -> dict:
    """An OpenAI function tool whose one argument, `prop`, is a required string."""
    spec: dict = {"name": name}
    if description is not None:
        spec["description"] = description
    spec["parameters"] = {
        "type": "object",
        "properties": {prop: {"type": "string"}},
        "required": [prop],
    }
    return {"type": "function", "function": spec}


WEATHER = function("get_weather", "city", "Weather in a city")
TIME = function("get_time", "city")
# The same tool with an argument of another name: each call must get its own arguments.
TIME_OF_PLACE = function("get_time", "place")

# -- served entities -------------------------------------------------------------------------------


def external(
    provider: str, model: str, config: dict, task: str = "llm/v1/chat", name: str | None = None
) -> dict:
    """A served entity of `provider`'s `model`, whose config block (`<provider>_config`) is
    `config`; unnamed unless `name` is given."""
    block = "custom_provider" if provider == "custom" else provider.replace("-", "_")
    model_spec = {"provider": provider, "name": model, "task": task, f"{block}_config": config}
    named = {} if name is None else {"name": name}
    return {**named, "external_model": model_spec}


# -- fake upstreams --------------------------------------------------------------------------------


@contextlib.contextmanager
def running(fake: Fake) -> Iterator[Fake]:
    """`fake`, started, and stopped afterwards."""
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@contextlib.contextmanager
def checked(fake: FakeUpstream) -> Iterator[None]:
    """Reset `fake`, then fail if a request strayed from the provider's API reference."""
    fake.reset()
    yield
    fake.assert_clean()


def fake_fixtures(make: Callable[[], Fake]) -> tuple[Any, Any]:
    """A fake upstream's two fixtures, for a test module to assign to names of its choosing:

        fake, clean = fake_fixtures(lambda: FakeCohere(KEY))

    The first (module scope) starts `make()` for the module; the second resets it before each
    test and checks it after. Both are autouse, so every test of the module is checked."""
    started: list[Fake] = []

    @pytest.fixture(scope="module", autouse=True)
    def fake() -> Iterator[Fake]:
        with running(make()) as upstream:
            started.append(upstream)
            yield upstream
        started.clear()

    @pytest.fixture(autouse=True)
    def clean() -> Iterator[None]:
        with checked(started[0]):
            yield

    return fake, clean


def sent(fake: FakeUpstream, index: int = -1) -> dict[str, Any]:
    """The JSON body of the last request `fake` got (or of the one at `index`)."""
    return fake.requests[index].json()


# -- chat through the openai client ----------------------------------------------------------------


def chat_error(client: OpenAI, endpoint: str, error: type[Error], **options: Any) -> Error:
    """The `error` the openai client raises when it says "x" to `endpoint` with `options`."""
    with pytest.raises(error) as raised:
        client.chat.completions.create(
            model=endpoint, messages=[{"role": "user", "content": "x"}], **options
        )
    return raised.value


def chat_chunks(client: OpenAI, endpoint: str, content: str, **options: Any) -> list:
    """The chunks of `endpoint`'s streamed answer to a user saying `content`."""
    return list(
        client.chat.completions.create(
            model=endpoint, messages=[{"role": "user", "content": content}], stream=True, **options
        )
    )


def tool_replies(message: Any, *contents: str) -> list[dict]:
    """The assistant's `message` that called tools, then a tool message answering each of its
    calls, in order, with `contents`: the turns that carry tool results back."""
    return [
        message.model_dump(exclude_none=True),
        *(
            {"role": "tool", "tool_call_id": call.id, "content": content}
            for call, content in zip(message.tool_calls, contents, strict=True)
        ),
    ]


# -- streamed answers ------------------------------------------------------------------------------


class Streamed(NamedTuple):
    """A streamed chat answer, put together from its chunks."""

    text: str
    calls: dict[int, dict[str, str]]  # tool calls by index: {"id", "name", "arguments"}
    finishes: list[str]  # the finish reasons given, in order


def streamed(chunks: Iterable[Any]) -> Streamed:
    """Put a streamed answer together (every choice's text, in one string)."""
    text, calls, finishes = "", {}, []
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finishes += [choice.finish_reason] if choice.finish_reason else []
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.id or ""
                call["name"] += (tc.function.name or "") if tc.function else ""
                call["arguments"] += (tc.function.arguments or "") if tc.function else ""
    return Streamed(text, dict(sorted(calls.items())), finishes)


def streamed_text(chunks: Iterable[Any]) -> str:
    """The text of a streamed answer."""
    return streamed(chunks).text


# -- the gateway's REST API ------------------------------------------------------------------------


def post_endpoint(gateway: Server, name: str, entities: list[dict]) -> requests.Response:
    """Ask for a new endpoint, whatever the answer (`create_endpoint` wants a 200)."""
    body = {"name": name, "config": {"served_entities": entities}}
    return requests.post(
        f"{gateway.url}/api/2.0/serving-endpoints", json=body, headers=gateway.headers, timeout=30
    )


def update_config(gateway: Server, name: str, entities: list[dict]) -> None:
    """Serve `entities` on endpoint `name` instead of what it served."""
    r = requests.put(
        f"{gateway.url}/api/2.0/serving-endpoints/{name}/config",
        json={"served_entities": entities},
        headers=gateway.headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text


def invoke(gateway: Server, name: str, body: dict) -> requests.Response:
    """POST `body` to endpoint `name`'s invocations, as a plain HTTP client."""
    return requests.post(
        f"{gateway.url}/serving-endpoints/{name}/invocations",
        json=body,
        headers=gateway.headers,
        timeout=30,
    )


def assert_error(r: requests.Response, status: int, message: str, code: str | None = None) -> None:
    """`r` has this status (and error code, when given), and its message says `message`."""
    assert r.status_code == status
    if code is not None:
        assert r.json()["error_code"] == code
    assert message in r.json()["message"]


def assert_rate_limit_kept(gateway: Server, fake: FakeUpstream, endpoint: str, **body: Any) -> None:
    """An upstream 429 reaches a plain HTTP client as a 429 REQUEST_LIMIT_EXCEEDED, with the
    upstream's message (`body` adds to the chat request, e.g. `stream=True`)."""
    fake.fail_next("status:429")
    r = invoke(gateway, endpoint, {"messages": [{"role": "user", "content": "x"}], **body})
    assert_error(r, 429, "injected failure with status 429", "REQUEST_LIMIT_EXCEEDED")


def assert_bad_config(gateway: Server, name: str, entity: dict, expected: str, secret: str) -> None:
    """Creating an endpoint serving `entity` is a clear 400: INVALID_PARAMETER_VALUE, with a
    message naming `expected`, and no `secret` in the answer."""
    r = post_endpoint(gateway, name, [entity])
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in r.json()["message"]
    assert secret not in r.text

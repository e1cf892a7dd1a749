"""The `openai` package (3.x), unmodified, against a real `modelyard serve`: sync and async."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from conftest import DEFAULT_ENDPOINT, Server

EP = DEFAULT_ENDPOINT
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
# llama.cpp option, passed through: generate exactly max_tokens.
IGNORE_EOS: Any = {"extra_params": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[OpenAI]:
    # No retries: a failure must show as the server's answer, not as a retry's.
    with OpenAI(
        base_url=f"{server.url}/serving-endpoints", api_key=server.token, max_retries=0, timeout=300
    ) as c:
        yield c


def async_client(server: Server) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{server.url}/serving-endpoints", api_key=server.token, max_retries=0, timeout=300
    )


def check_usage(usage: Any, max_completion: int) -> None:
    assert usage is not None, "a non-stream answer must carry usage"
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= max_completion
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# --- plain chat -------------------------------------------------------------------------------


def test_chat(client: OpenAI) -> None:
    r = client.chat.completions.create(model=EP, messages=HELLO, max_tokens=16)
    assert r.object == "chat.completion"
    assert r.id
    assert r.created > 0
    assert r.model == "smollm2-135m-instruct"  # the underlying model id
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    check_usage(r.usage, 16)


async def test_chat_async(server: Server) -> None:
    async with async_client(server) as c:
        r = await c.chat.completions.create(model=EP, messages=HELLO, max_tokens=16)
    assert r.choices[0].message.content and r.choices[0].message.content.strip()
    check_usage(r.usage, 16)


def test_text_parts_content(client: OpenAI) -> None:
    """`content` as a list of text parts is accepted (the templates get the joined text)."""
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    r = client.chat.completions.create(model=EP, messages=messages, max_tokens=8)
    assert r.choices[0].message.content


# --- streaming --------------------------------------------------------------------------------


def check_stream(chunks: list[Any], *, usage_expected: bool, max_tokens: int) -> str:
    """The OpenAI streaming contract; returns the assembled text."""
    assert chunks, "no chunks"
    assert {c.id for c in chunks} == {chunks[0].id}, "chunk ids must be constant"
    assert {c.created for c in chunks} == {chunks[0].created}, "created must be constant"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in with_choices]
    assert finish[-1] in ("stop", "length"), finish
    assert all(f is None for f in finish[:-1]), "only the last choice chunk has finish_reason"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text.strip()
    if usage_expected:
        last = chunks[-1]
        assert last.choices == [], "the usage chunk has empty choices"
        check_usage(last.usage, max_tokens)
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.usage is None for c in chunks), "usage sent without include_usage"
        assert all(c.choices for c in chunks)
    return text


def test_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(model=EP, messages=HELLO, max_tokens=16, stream=True)
    with stream:
        chunks = list(stream)
    check_stream(chunks, usage_expected=False, max_tokens=16)


def test_stream_include_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=EP,
        messages=HELLO,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    text = check_stream(chunks, usage_expected=True, max_tokens=16)
    assert text


async def test_stream_async(server: Server) -> None:
    async with async_client(server) as c:
        stream = await c.chat.completions.create(
            model=EP,
            messages=HELLO,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    check_stream(chunks, usage_expected=True, max_tokens=16)


def test_stream_role_when_first_token_is_an_emoji(client: OpenAI) -> None:
    """llama.cpp drops its role chunk when the first token is part of a multi-byte character."""
    with client.chat.completions.create(
        model=EP,
        messages=[{"role": "user", "content": "Reply with only a star emoji."}],
        max_tokens=4,
        temperature=0,
        stream=True,
    ) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "🌟" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_same_text_as_non_stream(client: OpenAI) -> None:
    """Greedy decoding: streaming must not lose or reorder text."""
    kwargs: Any = {"model": EP, "messages": HELLO, "max_tokens": 16, "temperature": 0, "seed": 7}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    with client.chat.completions.create(**kwargs, stream=True) as stream:
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == whole


# --- sampling options -------------------------------------------------------------------------


def test_n_two_choices(client: OpenAI) -> None:
    r = client.chat.completions.create(model=EP, messages=HELLO, max_tokens=8, n=2)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(c.message.content for c in r.choices)
    check_usage(r.usage, 2 * 8)


def test_n_usage_counts_every_choice(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=EP, messages=HELLO, max_tokens=4, n=2, extra_body=IGNORE_EOS
    )
    assert [c.finish_reason for c in r.choices] == ["length", "length"]
    assert r.usage is not None and r.usage.completion_tokens == 2 * 4


def test_n_stream_one_final_usage_chunk(client: OpenAI) -> None:
    with client.chat.completions.create(
        model=EP,
        messages=HELLO,
        max_tokens=4,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=IGNORE_EOS,
    ) as stream:
        chunks = list(stream)
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    with_usage = [c for c in chunks if c.usage is not None]
    assert with_usage == [chunks[-1]]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2 * 4


def test_max_completion_tokens(client: OpenAI) -> None:
    """The newer limit name is honoured: with EOS ignored the model stops exactly there."""
    r = client.chat.completions.create(
        model=EP,
        messages=[{"role": "user", "content": "Count from one to one hundred."}],
        max_completion_tokens=3,
        extra_body=IGNORE_EOS,
    )
    assert r.usage is not None
    assert r.usage.completion_tokens == 3
    assert r.choices[0].finish_reason == "length"


def test_json_schema(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "population": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
        },
        "required": ["name", "population"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=EP,
        # Unconstrained, the model answers this in prose.
        messages=[{"role": "user", "content": "Describe a city."}],
        max_tokens=64,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    answer = json.loads(r.choices[0].message.content or "")
    assert set(answer) == {"name", "population"}
    assert isinstance(answer["name"], str) and len(answer["name"]) <= 20
    assert isinstance(answer["population"], int) and not isinstance(answer["population"], bool)
    assert 0 <= answer["population"] <= 100_000_000


def test_json_object(client: OpenAI) -> None:
    # Unconstrained, the model answers "Say hello." with "Hello! ..."; constrained, with JSON.
    r = client.chat.completions.create(
        model=EP,
        messages=HELLO,
        max_tokens=4,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert (r.choices[0].message.content or "").lstrip().startswith("{")
    r = client.chat.completions.create(
        model=EP,
        messages=[
            {
                "role": "user",
                "content": 'Reply with a JSON object that has the key "ok" set to true.',
            }
        ],
        max_tokens=32,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


def test_logprobs(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=EP, messages=HELLO, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    logprobs = r.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert r.usage is not None and len(logprobs.content) == r.usage.completion_tokens
    for token in logprobs.content:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 2
        assert all(t.logprob <= 0 for t in token.top_logprobs)
    assert "".join(t.token for t in logprobs.content) == r.choices[0].message.content


# --- models, completions, headers, errors ------------------------------------------------------


def test_v1_alias_base_url(server: Server) -> None:
    """Some clients and gateways put `/v1` in the base URL."""
    with OpenAI(
        base_url=f"{server.url}/serving-endpoints/v1", api_key=server.token, max_retries=0
    ) as c:
        assert EP in [m.id for m in c.models.list()]
        r = c.chat.completions.create(model=EP, messages=HELLO, max_tokens=4)
        assert r.choices[0].message.content
        assert c.completions.create(model=EP, prompt="Hi", max_tokens=4).choices[0].text


def test_models_list(client: OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert EP in models
    assert models[EP].object == "model"


def test_completions(client: OpenAI) -> None:
    r = client.completions.create(model=EP, prompt="Once upon a time", max_tokens=8)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    check_usage(r.usage, 8)


def test_completions_stream(client: OpenAI) -> None:
    with client.completions.create(
        model=EP, prompt="Once upon a time", max_tokens=8, stream=True
    ) as stream:
        text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text


def test_response_headers(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=EP, messages=HELLO, max_tokens=4, extra_headers={"x-request-id": "my-request-42"}
    )
    assert raw.headers["served-model-name"] == EP
    assert raw.headers["x-request-id"] == "my-request-42"
    assert raw.parse().choices[0].message.content
    raw = client.chat.completions.with_raw_response.create(model=EP, messages=HELLO, max_tokens=4)
    assert len(raw.headers["x-request-id"]) >= 16, "a generated id when the client sends none"


def test_stream_response_headers(client: OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=EP, messages=HELLO, max_tokens=4, stream=True
    ) as raw:
        assert raw.headers["served-model-name"] == EP
        assert raw.headers["x-request-id"]
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["cache-control"] == "no-cache"
        lines = [line for line in raw.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"


def test_errors_are_typed(client: OpenAI, server: Server) -> None:
    with pytest.raises(openai.NotFoundError, match="Endpoint with name 'no-such-ep' does not"):
        client.chat.completions.create(model="no-such-ep", messages=HELLO, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=EP, messages=HELLO, max_tokens=4, temperature=5)
    with (
        OpenAI(
            base_url=f"{server.url}/serving-endpoints", api_key="dapi-wrong", max_retries=0
        ) as bad,
        pytest.raises(openai.PermissionDeniedError, match="Invalid access token"),
    ):
        bad.chat.completions.create(model=EP, messages=HELLO, max_tokens=4)


# --- a client that goes away ------------------------------------------------------------------


def worker_pid(server: Server) -> int:
    """The serve process's engine worker (the one local model), found through /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    workers = [
        p for p in children if b"modelyard.engine.worker" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, workers
    return workers[0]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid`, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_rate(pid: int, window: float = 1.0) -> float:
    """CPU seconds per second that `pid` burns over the next `window` seconds."""
    before = cpu_seconds(pid)
    time.sleep(window)
    return (cpu_seconds(pid) - before) / window


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_disconnect_mid_stream_stops_generation(client: OpenAI, server: Server) -> None:
    """Closing a stream frees the engine: its CPU use falls to idle long before 1500 tokens.

    The gateway exposes no slot state (the engine's /slots is private to it), and with 8 slots a
    follow-up request would be served even if the abandoned one kept generating, so its latency
    proves nothing. The engine worker's CPU time does: decoding keeps it busy, idle it is ~0.
    """
    pid = worker_pid(server)
    assert cpu_rate(pid, 0.5) < 0.2, "engine busy before the test: the measurement would lie"
    stream = client.chat.completions.create(
        model=EP,
        messages=[{"role": "user", "content": "Tell me a very long story."}],
        max_tokens=1500,
        stream=True,
        extra_body=IGNORE_EOS,
    )
    chunks = iter(stream)
    content = 0
    while content < 2:
        chunk = next(chunks)
        content += bool(chunk.choices and chunk.choices[0].delta.content)
    busy = cpu_rate(pid, 1.0)
    assert busy > 0.3, f"the engine should be decoding now, but burns only {busy:.2f} CPU-s/s"
    stream.close()
    closed = time.monotonic()
    rates = []
    while time.monotonic() - closed < 10:
        rates.append(round(cpu_rate(pid, 1.0), 2))
        if rates[-1] < 0.1:
            break
    stopped_after = time.monotonic() - closed
    assert rates[-1] < 0.1, f"engine still busy after the client left; CPU-s/s: {rates}"
    # Not a finish that would have come anyway: time 32 tokens now, and extrapolate.
    before = time.monotonic()
    follow_up = client.chat.completions.create(
        model=EP, messages=HELLO, max_tokens=32, extra_body=IGNORE_EOS
    )
    assert follow_up.usage is not None and follow_up.usage.completion_tokens == 32
    remaining = (time.monotonic() - before) / 32 * (1500 - content)
    assert stopped_after < remaining / 2, (
        f"stopped {stopped_after:.1f} s after close, but generating the rest takes only "
        f"~{remaining:.1f} s: this machine is too fast for the test to tell"
    )

"""`modelyard chat ENDPOINT MESSAGE`: stream one answer to the terminal through the HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable

import click


@click.command()
@click.argument("endpoint")
@click.argument("message")
@click.option(
    "--host",
    envvar="DATABRICKS_HOST",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Server URL [env: DATABRICKS_HOST].",
)
@click.option(
    "--token", envvar="DATABRICKS_TOKEN", default=None, help="Access token [env: DATABRICKS_TOKEN]."
)
@click.option("--system", default=None, help="A system prompt.")
@click.option("--max-tokens", default=512, show_default=True, type=int)
@click.option("--temperature", default=None, type=float)
def chat(
    endpoint: str,
    message: str,
    host: str,
    token: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float | None,
) -> None:
    """Ask ENDPOINT one question and print the answer as it is generated."""
    if not token:
        raise click.ClickException(
            "No token: set DATABRICKS_TOKEN (serve prints one on first start) or pass --token."
        )
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": message}
    ]
    body: dict[str, object] = {"messages": messages, "max_tokens": max_tokens, "stream": True}
    if temperature is not None:
        body["temperature"] = temperature
    request = urllib.request.Request(
        f"{host.rstrip('/')}/serving-endpoints/{endpoint}/invocations",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            _print_stream(response)
    except urllib.error.HTTPError as exc:
        raise click.ClickException(_error_text(exc)) from exc
    except urllib.error.URLError as exc:
        raise click.ClickException(
            f"Cannot reach {host}: {exc.reason}. Is `modelyard serve` running?"
        ) from exc


def _print_stream(response: Iterable[bytes]) -> None:
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise click.ClickException(chunk["error"].get("message", "the stream failed"))
        for choice in chunk.get("choices", []):
            click.echo(choice.get("delta", {}).get("content") or "", nl=False)
    click.echo()


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return f"{body.get('error_code', exc.code)}: {body.get('message', '')}"
    except (ValueError, OSError):
        return f"HTTP {exc.code}"

"""Guardrails on what goes in and what comes out of an endpoint (`ai_gateway.guardrails`).

Each direction runs, in order: `invalid_keywords` (case-insensitive, whole words), `pii` (BLOCK
or MASK, see `pii.py`), then `safety` and `valid_topics`, judged by the server's judge endpoint
on the text as masked. A block is a 400 naming the guardrail and never the matched text.

What is screened: on input, the text of every message (any role, text parts included), the
arguments of assistant tool calls in the history, a completions prompt and an embeddings input;
the judges see the non-assistant messages (safety) and the user messages (valid_topics). On
output, each choice's content or text and its tool-call arguments (a tool call can leak data as
well as a reply can); the judges see the content. Tool-call arguments are screened as JSON: each
string value (and integer, for card numbers) is masked on its own, so the arguments stay JSON.

Streams: with any output guardrail on, the whole answer is collected first, screened as one
body, then sent as a short stream (content, tool calls, finish reason, usage). Masking is then
exact across chunk boundaries and blocked text is never sent; the price is that the client gets
the answer at the end (and a block arrives as the stream's error event). Without output
guardrails a stream passes through untouched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelyard.errors import BadRequest, Unavailable
from modelyard.gateway.assemble import assemble_stream
from modelyard.gateway.endpoints import LiveEndpoint
from modelyard.gateway.judge import Judge
from modelyard.gateway.pii import find_pii, mask_pii
from modelyard.gateway.texts import body_texts, map_body, map_request, rechunk, request_texts
from modelyard.providers.base import Json
from modelyard.schemas.endpoints import AiGateway, GuardrailParameters, GuardrailsConfig
from modelyard.schemas.query import QueryRequest
from modelyard.schemas.validation import describe_validation_error


def check_guardrails(ai_gateway: AiGateway | None, judge_endpoint: str | None) -> None:
    """Config time: safety and valid_topics need a judge endpoint in the server's settings."""
    config = ai_gateway.guardrails if ai_gateway else None
    if config is None or judge_endpoint:
        return
    for direction, params in (("input", config.input), ("output", config.output)):
        for field in ("safety", "valid_topics"):
            if params is not None and getattr(params, field):
                raise BadRequest(
                    f"ai_gateway.guardrails.{direction}.{field} needs a judge endpoint, and this "
                    "server has none: start it with --guardrail-endpoint NAME (or set "
                    "MODELYARD_GUARDRAIL_ENDPOINT), naming a chat endpoint that answers yes or no."
                )


@dataclass(frozen=True)
class Rules:
    """One direction's guardrails, ready to apply."""

    direction: str  # "input" | "output"
    keywords: re.Pattern[str] | None
    pii: str  # BLOCK | MASK | NONE
    safety: bool
    topics: tuple[str, ...]

    @classmethod
    def of(cls, direction: str, params: GuardrailParameters | None) -> Rules | None:
        if params is None:
            return None
        words = sorted(set(params.invalid_keywords or ()), key=len, reverse=True)
        rules = cls(
            direction,
            # Lookarounds, not \b: a keyword may begin or end with a non-word character.
            re.compile(rf"(?<!\w)(?:{'|'.join(map(re.escape, words))})(?!\w)", re.IGNORECASE)
            if words
            else None,
            params.pii.behavior if params.pii else "NONE",
            bool(params.safety),
            tuple(params.valid_topics or ()),
        )
        return rules if rules.active else None

    @property
    def active(self) -> bool:
        return bool(self.keywords or self.pii != "NONE" or self.safety or self.topics)

    @property
    def subject(self) -> str:
        return "request" if self.direction == "input" else "answer"

    def blocked(self, guardrail: str, reason: str) -> BadRequest:
        return BadRequest(
            f"Blocked by the {self.direction} {guardrail} guardrail: the {self.subject} {reason}.",
            error_code="BAD_REQUEST",
        )

    def screen(self, text: str) -> str:
        """`text` as it may pass (masked if need be), or a BadRequest naming the guardrail."""
        if self.keywords is not None and self.keywords.search(text):
            raise self.blocked("keyword", "contains a blocked keyword")
        if self.pii == "NONE":
            return text
        matches = find_pii(text)
        if matches and self.pii == "BLOCK":
            kinds = list(dict.fromkeys(m.kind.described for m in matches))
            raise self.blocked("PII", "contains " + " and ".join(kinds))
        return mask_pii(text, matches) if matches else text

    async def judge(self, judge: Judge | None, safety_text: str, topic_text: str) -> None:
        """Raise if the judge finds the text unsafe or off every allowed topic."""
        if not (self.safety or self.topics):
            return
        if judge is None:  # stored before the server lost its judge: fail closed
            raise Unavailable(
                f"The {self.direction} safety and valid_topics guardrails of this endpoint need "
                "a judge endpoint: restart the server with --guardrail-endpoint NAME."
            )
        checks = []
        if self.safety and safety_text.strip():
            checks.append(judge.is_unsafe(safety_text))
        if self.topics and topic_text.strip():
            checks.append(judge.is_on_topic(topic_text, self.topics))
        verdicts = await asyncio.gather(*checks)
        if self.safety and safety_text.strip() and verdicts[0]:
            raise self.blocked("safety", "was judged unsafe")
        if self.topics and topic_text.strip() and not verdicts[-1]:
            raise self.blocked(
                "topic", "is not about an allowed topic (" + "; ".join(self.topics) + ")"
            )


@dataclass(frozen=True)
class Policy:
    input: Rules | None
    output: Rules | None


class Guardrails:
    """Screens requests and answers by the endpoint's guardrails; a judge for safety and topics."""

    def __init__(self, judge: Judge | None = None) -> None:
        self.judge = judge
        # Endpoint name → (the guardrails block it was built from, the policy).
        self._policies: dict[str, tuple[Any, Policy]] = {}

    def check_config(self, ai_gateway: AiGateway | None) -> None:
        """Config-time check, for EndpointService."""
        check_guardrails(ai_gateway, self.judge.name if self.judge else None)

    async def screen_input(self, endpoint: LiveEndpoint, request: QueryRequest) -> QueryRequest:
        """The request to send on (masked if need be), or BadRequest naming the guardrail."""
        rules = self._policy(endpoint).input
        if rules is None:
            return request
        request = map_request(request, rules.screen)
        safety, topics = request_texts(request)
        await rules.judge(self.judge, safety, topics)
        return request

    async def screen_output(self, endpoint: LiveEndpoint, body: Json) -> Json:
        """The answer to return (masked if need be), or BadRequest naming the guardrail."""
        rules = self._policy(endpoint).output
        if rules is None:
            return body
        return await self._screen_body(rules, body)

    def screen_stream(
        self, endpoint: LiveEndpoint, chunks: AsyncIterator[Json]
    ) -> AsyncIterator[Json]:
        """The stream to return: untouched, or collected, screened whole and sent again."""
        rules = self._policy(endpoint).output
        if rules is None:
            return chunks
        return self._buffered(rules, chunks)

    async def _screen_body(self, rules: Rules, body: Json) -> Json:
        body = map_body(body, rules.screen)
        text = "\n\n".join(body_texts(body))
        await rules.judge(self.judge, text, text)
        return body

    async def _buffered(self, rules: Rules, chunks: AsyncIterator[Json]) -> AsyncIterator[Json]:
        async with aclosing(chunks):  # type: ignore[type-var]
            seen = [chunk async for chunk in chunks]
        if not seen:
            return
        for chunk in rechunk(await self._screen_body(rules, assemble_stream(seen)), seen[0]):
            yield chunk

    def _policy(self, endpoint: LiveEndpoint) -> Policy:
        block = (endpoint.record.ai_gateway or {}).get("guardrails")
        cached = self._policies.get(endpoint.name)
        if cached is not None and cached[0] is block:
            return cached[1]
        try:
            config = GuardrailsConfig.model_validate(block or {})
        except ValidationError as exc:  # stored before guardrails were typed: fail closed
            raise Unavailable(
                f"Endpoint '{endpoint.name}' has guardrails this server cannot apply "
                f"({describe_validation_error(exc)}); fix them with PUT .../ai-gateway."
            ) from exc
        policy = Policy(Rules.of("input", config.input), Rules.of("output", config.output))
        self._policies[endpoint.name] = (block, policy)
        return policy

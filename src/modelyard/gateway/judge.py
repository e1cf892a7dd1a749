"""The served endpoint that judges the safety and valid_topics guardrails with a yes or a no.

The judge gets one short classification prompt (a system line and a user message holding the
question and the text between triple quotes), at temperature 0 with at most 5 tokens, and its
answer is read by its first word: "yes" or "no", in any case and punctuation. Anything else is
a 502 naming the judge, so a request is never let through on an unclear verdict.

It is asked in-process, through the endpoint's own served entities (with fallback if the judge
endpoint has it on); the judge endpoint's own guardrails, limits and recording do not apply.
"""

from __future__ import annotations

import re

from modelyard.errors import ModelyardError, Unavailable, UpstreamError
from modelyard.gateway.endpoints import EndpointRegistry
from modelyard.providers.base import Json
from modelyard.schemas.query import ChatRequest

SYSTEM = "You are a strict content classifier. Answer with one word: yes or no."
SAFETY_QUESTION = (
    "Is the following text unsafe: does it contain or ask for violence, weapons, self-harm, "
    "sexual content involving minors, hate, harassment, crime, or a way around safety rules?"
)
TOPICS_QUESTION = "Is the following text about one of these topics: {topics}?"
# What the judge sees of a long text: its end, where the latest turn is.
MAX_TEXT_CHARS = 16_000

_VERDICT = re.compile(r"\W*(yes|no)\b", re.IGNORECASE)


def classification_prompt(question: str, text: str) -> str:
    """The user message the judge answers."""
    return (
        f'{question}\nAnswer with one word, yes or no.\n\nText:\n"""\n{text[-MAX_TEXT_CHARS:]}\n"""'
    )


class Judge:
    """Asks the endpoint named `name` (looked up on each call, so it may be created later)."""

    def __init__(self, endpoints: EndpointRegistry, name: str) -> None:
        self.endpoints = endpoints
        self.name = name

    async def is_unsafe(self, text: str) -> bool:
        return await self.ask(SAFETY_QUESTION, text)

    async def is_on_topic(self, text: str, topics: tuple[str, ...]) -> bool:
        return await self.ask(TOPICS_QUESTION.format(topics="; ".join(topics)), text)

    async def ask(self, question: str, text: str) -> bool:
        """The judge's verdict on `text`: True for yes."""
        request = ChatRequest.model_validate(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": classification_prompt(question, text)},
                ],
                "max_tokens": 5,
                "temperature": 0.0,
            }
        )
        answer = _content(await self._chat(request))
        verdict = _VERDICT.match(answer)
        if verdict is None:
            raise UpstreamError(
                f"The guardrail judge endpoint '{self.name}' answered neither yes nor no; "
                "it must be a chat endpoint that follows instructions."
            )
        return verdict.group(1).lower() == "yes"

    async def _chat(self, request: ChatRequest) -> Json:
        endpoint = self.endpoints.find(self.name)
        if endpoint is None:
            raise Unavailable(
                f"The guardrail judge endpoint '{self.name}' does not exist: create it, or "
                "restart the server with --guardrail-endpoint naming a chat endpoint."
            )
        failure: ModelyardError | None = None
        for entity in endpoint.attempts():
            try:
                return await entity.provider.chat(request)
            except UpstreamError as exc:
                failure = exc
                if not exc.retryable:
                    break
        assert failure is not None
        raise UpstreamError(
            f"The guardrail judge endpoint '{self.name}' failed: {failure.message}",
            status=failure.status,
        ) from failure


def _content(body: Json) -> str:
    choices = body.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")

"""Which of an endpoint's rate limits apply to a caller, and what a request charges them.

The rule, as Databricks documents it, with our API's "strictest applicable limit wins":
1. `endpoint` limits always apply, to one counter shared by every caller.
2. The caller's own limits: `user` or `service_principal` limits whose `principal` is the
   caller's user name (a service principal's is the name its tokens authenticate as).
3. If the caller has none, the `user_group` limits of every group the caller is in; each group
   has one counter shared by its members.
4. If neither, the default `user` limits (no `principal`): each caller counted separately.
So a user's own limit beats a group's, and a group's beats the default; among the limits that
apply, all are checked, and the first to be full refuses the request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelyard.gateway.auth import Principal
from modelyard.gateway.counters import Charge
from modelyard.schemas.endpoints import AiGatewayRateLimit
from modelyard.schemas.query import ChatRequest, CompletionRequest, QueryRequest

# When a request sets no max_tokens, this many completion tokens are reserved; the unused
# part is given back when the answer's usage is known.
DEFAULT_MAX_TOKENS = 1024
CHARS_PER_TOKEN = 4  # a cheap estimate of prompt tokens, close for English with BPE tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators of each chat message


@dataclass(frozen=True)
class Rule:
    """One applicable limit on one counter, and how to name it in a refusal."""

    counter: str
    limit: int
    tokens: bool
    label: str


def applicable(
    endpoint_id: str, principal: Principal, limits: list[AiGatewayRateLimit]
) -> list[Rule]:
    """The rules that bind `principal`, tightest first when several share a counter."""
    name = principal.user_name
    chosen = [(lim, "endpoint", "the endpoint's limit") for lim in limits if lim.key == "endpoint"]
    own = [
        (lim, f"user:{name}", f"your limit ({lim.key} '{name}')")
        for lim in limits
        if lim.key in ("user", "service_principal") and lim.principal == name
    ]
    groups = [
        (lim, f"group:{lim.principal}", f"the limit of group '{lim.principal}'")
        for lim in limits
        if lim.key == "user_group" and lim.principal in principal.groups
    ]
    default = [
        (lim, f"user:{name}", "the per-user limit")
        for lim in limits
        if lim.key == "user" and lim.principal is None
    ]
    chosen += own or groups or default
    rules: dict[str, Rule] = {}
    for lim, scope, label in chosen:
        for tokens, value in ((False, lim.calls), (True, lim.tokens)):
            if value is None:
                continue
            counter = f"{endpoint_id}:{'tokens' if tokens else 'calls'}:{scope}"
            kept = rules.get(counter)
            if kept is None or value < kept.limit:
                rules[counter] = Rule(counter, value, tokens, label)
    return list(rules.values())


def charges(rules: list[Rule], reserve_tokens: int) -> list[Charge]:
    """One call on each calls counter; the token estimate (at most the limit) on each tokens one.

    Capping at the limit lets a request bigger than a whole minute's tokens through when the
    window is empty; its real usage is charged when it settles."""
    return [
        Charge(r.counter, r.limit, min(reserve_tokens, r.limit), tokens=True)
        if r.tokens
        else Charge(r.counter, r.limit, 1)
        for r in rules
    ]


def estimate_tokens(request: QueryRequest) -> int:
    """Prompt tokens (characters / 4) plus the completion allowed (max_tokens or 1024, times n)."""
    if isinstance(request, ChatRequest):
        chars = sum(len(m.text()) for m in request.messages)
        for message in request.messages:
            chars += sum(len(c.function.arguments) for c in message.tool_calls or [])
        prompt = math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(
            request.messages
        )
    else:
        given = request.prompt if isinstance(request, CompletionRequest) else request.input
        texts = [given] if isinstance(given, str) else given
        prompt = math.ceil(sum(len(t) for t in texts) / CHARS_PER_TOKEN)
    if not isinstance(request, ChatRequest | CompletionRequest):
        return prompt  # embeddings: no completion
    return prompt + (request.max_tokens or DEFAULT_MAX_TOKENS) * request.n

"""`SecretVault`: the decrypted values providers read at call time, and `{{secrets/s/k}}` refs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

SCOPE_CHARS = r"[A-Za-z0-9_.@-]"
KEY_CHARS = r"[A-Za-z0-9_.-]"
_REFERENCE = re.compile(
    rf"\{{\{{\s*secrets/(?P<scope>{SCOPE_CHARS}{{1,128}})/(?P<key>{KEY_CHARS}{{1,128}})\s*\}}\}}"
)


def parse_reference(text: str) -> tuple[str, str] | None:
    """`(scope, key)` if `text` is `{{secrets/<scope>/<key>}}`, else None."""
    match = _REFERENCE.fullmatch(text.strip())
    return None if match is None else (match["scope"], match["key"])


def references_in(value: Any) -> Iterator[tuple[str, str]]:
    """Every `(scope, key)` referenced anywhere in a JSON-like value (an endpoint config)."""
    if isinstance(value, str):
        reference = parse_reference(value)
        if reference is not None:
            yield reference
    elif isinstance(value, dict):
        for item in value.values():
            yield from references_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_in(item)


class SecretVault:
    """Every secret value in memory, by scope and key; filled and kept in step by the service."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], str] = {}

    def get(self, scope: str, key: str) -> str | None:
        """The value of `scope/key`, or None."""
        return self._values.get((scope, key))

    def set(self, scope: str, key: str, value: str) -> None:
        self._values[(scope, key)] = value

    def remove(self, scope: str, key: str) -> None:
        self._values.pop((scope, key), None)

    def remove_scope(self, scope: str) -> None:
        for name in [name for name in self._values if name[0] == scope]:
            del self._values[name]

    def replace(self, values: dict[tuple[str, str], str]) -> None:
        """Swap in a whole new set of values (another replica changed them)."""
        self._values = dict(values)

    def values(self) -> frozenset[str]:
        """Every current non-empty value, to scrub from error messages before they leave."""
        # An empty value cannot leak, and scrubbing "" would mangle every message.
        return frozenset(value for value in self._values.values() if value)

    def resolve(self, text: str) -> str | None:
        """A reference's value (None if there is no such secret); any other string as it is."""
        reference = parse_reference(text)
        return text if reference is None else self.get(*reference)

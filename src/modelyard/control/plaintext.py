"""`*_plaintext` credentials in endpoint configs: sealed in the store, redacted in responses."""

from __future__ import annotations

from typing import Any, Protocol

from modelyard.errors import BadRequest

SEALED_PREFIX = "sealed:"
REDACTED = "[REDACTED]"


class Box(Protocol):
    def encrypt(self, value: str) -> str: ...
    def decrypt(self, value: str) -> str: ...


def _is_plaintext(key: str, value: Any) -> bool:
    return key.endswith("_plaintext") and isinstance(value, str)


def _map_plaintexts(config: Any, change: Any) -> Any:
    if isinstance(config, dict):
        return {
            k: change(v) if _is_plaintext(k, v) else _map_plaintexts(v, change)
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_map_plaintexts(v, change) for v in config]
    return config


def seal_plaintexts(config: dict[str, Any], box: Box) -> dict[str, Any]:
    """`config` with every `*_plaintext` value encrypted, as the store keeps it."""
    return _map_plaintexts(
        config, lambda v: v if v.startswith(SEALED_PREFIX) else SEALED_PREFIX + box.encrypt(v)
    )


def unseal_plaintexts(config: dict[str, Any], box: Box) -> dict[str, Any]:
    """`config` with sealed values decrypted (to compare configs, never to show them)."""
    return _map_plaintexts(config, lambda v: unseal(v, box))


def unseal(value: str, box: Box) -> str:
    """One sealed value decrypted; a value that was never sealed is returned as is."""
    return box.decrypt(value[len(SEALED_PREFIX) :]) if value.startswith(SEALED_PREFIX) else value


def redact_plaintexts(config: dict[str, Any]) -> dict[str, Any]:
    """`config` as the API shows it: no `*_plaintext` value, sealed or not, ever leaves."""
    return _map_plaintexts(config, lambda _: REDACTED)


def restore_redacted(
    entities: list[dict[str, Any]], stored: list[dict[str, Any]], box: Box
) -> list[dict[str, Any]]:
    """Served entities sent back as a GET showed them: a `[REDACTED]` credential keeps the
    value stored for the entity of the same name, so a read-modify-write keeps the keys."""
    previous = {e.get("name"): unseal_plaintexts(e, box) for e in stored}

    def restore(new: Any, old: Any, where: str) -> Any:
        if isinstance(new, dict):
            return {
                k: _restored(v, old, k, where) if _is_plaintext(k, v) and v == REDACTED
                else restore(v, old.get(k) if isinstance(old, dict) else None, f"{where}.{k}")
                for k, v in new.items()
            }  # fmt: skip
        return new

    def _restored(value: str, old: Any, key: str, where: str) -> str:
        kept = old.get(key) if isinstance(old, dict) else None
        if not isinstance(kept, str):
            raise BadRequest(
                f"{where}.{key} is '{REDACTED}', but no value is stored for it: send the value."
            )
        return kept

    return [restore(e, previous.get(e.get("name")), "served_entities") for e in entities]

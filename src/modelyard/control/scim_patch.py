"""SCIM PATCH (RFC 7644 section 3.5.2) on a principal's attributes, in the forms the Databricks
SDK, Azure AD and Okta send."""

from __future__ import annotations

import re
from typing import Any

from modelyard.errors import BadRequest
from modelyard.gateway.directory import GROUP
from modelyard.schemas.scim import PatchOperation

_SCALARS = {"displayName", "active", "externalId"}
_LISTS = {"members", "emails", "entitlements", "roles"}
_FILTERED_PATH = re.compile(r'^(\w+)\[value eq "([^"]*)"\]$')


def apply_patch(doc: dict[str, Any], op: PatchOperation, kind: str) -> None:
    """One SCIM PATCH operation on the principal's attributes (RFC 7644 section 3.5.2)."""
    if op.path is None:
        if op.op == "remove" or not isinstance(op.value, dict):
            raise BadRequest("A PATCH operation without 'path' needs a 'value' object.")
        for attr, value in op.value.items():
            apply_patch(doc, PatchOperation(op=op.op, path=attr, value=value), kind)
        return
    filtered = _FILTERED_PATH.match(op.path.strip())
    if filtered:
        attr, value = filtered.groups()
        if op.op != "remove" or attr not in _LISTS:
            raise BadRequest(f"Unsupported PATCH path '{op.path}': only remove filters a list.")
        doc[attr] = [v for v in doc.get(attr) or [] if _value_of(v) != value]
        return
    attr = op.path.strip()
    if attr == "members" and kind != GROUP:
        raise BadRequest("Only groups have members; add users to a group by patching the group.")
    if attr not in _SCALARS | _LISTS:
        raise BadRequest(
            f"Unsupported PATCH path '{attr}'; supported: {sorted(_SCALARS | _LISTS)}."
        )
    if attr in _SCALARS:
        doc[attr] = None if op.op == "remove" else _scalar(attr, op.value)
        return
    given = _list(attr, op.value)
    current = doc.get(attr) or []
    if op.op == "replace":
        doc[attr] = given
    elif op.op == "add":
        doc[attr] = current + [v for v in given if v not in current]
    elif op.value is None:
        doc[attr] = []
    else:
        gone = {_value_of(v) for v in given}
        doc[attr] = [v for v in current if _value_of(v) not in gone]


def _scalar(attr: str, value: Any) -> Any:
    # Databricks' docs wrap scalars as [{"value": ...}]; accept both forms.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("value")
    if attr == "active" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _list(attr: str, value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if attr != "members":
        return [v for v in items if v is not None]
    ids = []
    for item in items:
        member = _value_of(item)
        if not member:
            raise BadRequest("Each member is an object with the member's id: {'value': '<id>'}.")
        ids.append(member)
    return ids


def _value_of(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("value")
        return None if value is None else str(value)
    return None if item is None else str(item)

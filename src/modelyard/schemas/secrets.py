"""Secrets API bodies (/api/2.0/secrets/...). Errors name fields, never echo a value."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, PrivateAttr, StrictStr, field_validator, model_validator


class _Body(BaseModel):
    # Fields we have no use for (ACL principals, Azure Key Vault metadata) are ignored.
    model_config = ConfigDict(extra="ignore", strict=True)


class ScopeCreate(_Body):
    scope: StrictStr
    initial_manage_principal: StrictStr | None = None
    scope_backend_type: StrictStr | None = None

    @field_validator("scope_backend_type")
    @classmethod
    def _databricks_only(cls, value: str | None) -> str | None:
        if value not in (None, "DATABRICKS"):
            raise ValueError("modelyard stores secrets itself; only DATABRICKS is supported")
        return value


class ScopeDelete(_Body):
    scope: StrictStr


class SecretPut(_Body):
    scope: StrictStr
    key: StrictStr
    string_value: StrictStr | None = None
    bytes_value: StrictStr | None = None  # base64
    _value: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _one_value(self) -> SecretPut:
        if (self.string_value is None) == (self.bytes_value is None):
            raise ValueError("send exactly one of string_value or bytes_value (base64)")
        self._value = self.string_value or _decode(self.bytes_value or "")
        return self

    @property
    def value(self) -> str:
        """The secret's value as text, whichever field carried it."""
        return self._value


class SecretDelete(_Body):
    scope: StrictStr
    key: StrictStr


def _decode(bytes_value: str) -> str:
    """The text in base64 `bytes_value`; providers use secrets as text credentials."""
    try:
        return base64.b64decode(bytes_value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        # `from None`: the decoding error would quote the value's bytes.
        raise ValueError("bytes_value must be base64 of UTF-8 text") from None

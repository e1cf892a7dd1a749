"""Secrets: Databricks secret scopes, values encrypted at rest, decrypted only into memory.

`SecretBox` seals values with the server's key, `SecretVault` holds the decrypted values that
providers resolve `{{secrets/<scope>/<key>}}` references against, `SecretService` changes both.
"""

from modelyard.secrets.box import SecretBox, SecretKeyError, load_secret_box
from modelyard.secrets.service import SecretInfo, SecretService
from modelyard.secrets.vault import SecretVault, parse_reference

__all__ = [
    "SecretBox",
    "SecretInfo",
    "SecretKeyError",
    "SecretService",
    "SecretVault",
    "load_secret_box",
    "parse_reference",
]

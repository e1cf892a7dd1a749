"""`SecretBox`: secret values encrypted at rest with Fernet, under a key kept outside the store."""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from modelyard.errors import ModelyardError
from modelyard.settings import Settings

log = logging.getLogger("modelyard.secrets")

KEY_FILE_NAME = "secret.key"
KEY_ENV = "MODELYARD_SECRET_KEY"
# A fixed salt: the same passphrase must give the same key on every replica and every start.
# Passphrases are low-entropy, so a slow KDF (OWASP's PBKDF2-SHA256 work factor) stretches them.
_PASSPHRASE_SALT = b"modelyard secrets v1"
_PASSPHRASE_ITERATIONS = 600_000
# 43 urlsafe base64 characters and one '=' encode exactly the 32 bytes of a Fernet key.
_FERNET_KEY = re.compile(r"[A-Za-z0-9_-]{43}=")


class SecretKeyError(ModelyardError):
    """A stored value cannot be decrypted: the key changed since it was written."""


class SecretBox:
    """Encrypts and decrypts secret values; `source` says where the key came from, for errors."""

    def __init__(self, key: bytes, *, key_file: Path, source: str) -> None:
        self._fernet = Fernet(key)
        self.key_file = key_file
        self.source = source

    def encrypt(self, value: str) -> str:
        """`value` as a Fernet token (ASCII), safe to store."""
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The value sealed in `token`; `SecretKeyError` if another key sealed it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            # `from None`: a decode error quotes bytes of the plaintext; keep it out of logs.
            raise SecretKeyError(
                f"A stored secret cannot be decrypted: the key in {self.key_file} or "
                f"{KEY_ENV} differs from the one the value was written with (this server's key "
                f"comes from {self.source}). Start the server with the original key; if it is "
                "lost, so are the values: empty the store's `secrets` table and put them again."
            ) from None


def load_secret_box(settings: Settings) -> SecretBox:
    """The box for `settings.secret_key` (MODELYARD_SECRET_KEY), else `<data dir>/secret.key`.

    The key file is created on first start; replicas sharing one PostgreSQL store need one key,
    so give them all the same MODELYARD_SECRET_KEY. The key itself is never logged.
    """
    key_file = settings.data_dir / KEY_FILE_NAME
    if settings.secret_key:
        return SecretBox(fernet_key(settings.secret_key), key_file=key_file, source=KEY_ENV)
    text = _read_or_create_key_file(key_file)
    return SecretBox(fernet_key(text), key_file=key_file, source=str(key_file))


def fernet_key(text: str) -> bytes:
    """`text` itself if it is a Fernet key (urlsafe base64 of 32 bytes), else derived from it."""
    text = text.strip()
    if _FERNET_KEY.fullmatch(text):
        return text.encode("ascii")
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=32,
        salt=_PASSPHRASE_SALT,
        iterations=_PASSPHRASE_ITERATIONS,
    )
    return base64.urlsafe_b64encode(kdf.derive(text.encode()))


def _read_or_create_key_file(path: Path) -> str:
    """The key in `path`, created (mode 0600) if missing; servers starting together agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Under a lock, and checked again: two servers on one data dir must not each write
        # their own key, or one would lose every secret the other encrypts.
        with path.with_name(path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                _write_new_key(path)
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; run: chmod 600 %s", path, path)
    text = path.read_text().strip()
    if not text:
        raise SecretKeyError(f"{path} is empty; restore the key it held or set {KEY_ENV}.")
    return text


def _write_new_key(path: Path) -> None:
    """A fresh Fernet key at `path`, atomically: readers see no file or the whole key."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)  # left by a crash of an earlier process with this pid
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    log.info("created the secrets key %s; back it up with the database", path)

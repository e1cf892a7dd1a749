"""Server settings: command-line flags over environment variables over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"


def default_data_dir() -> Path:
    """`MODELYARD_DATA_DIR`, else `~/.modelyard`."""
    return Path(os.environ.get("MODELYARD_DATA_DIR") or Path.home() / ".modelyard")


def default_models_dir(data_dir: Path) -> Path:
    """`MODELYARD_MODELS_DIR`, else `<data dir>/models`; several servers may share one."""
    env = os.environ.get("MODELYARD_MODELS_DIR")
    return Path(env) if env else data_dir / "models"


@dataclass(frozen=True)
class Settings:
    """Everything `modelyard serve` needs to know, fixed for the life of the process."""

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    models_dir: Path | None = None
    config_file: Path | None = None
    admin_token: str | None = None
    # MODELYARD_SECRET_KEY: a Fernet key or any passphrase; kept out of repr() and so of logs.
    secret_key: str | None = field(default=None, repr=False)
    default_model: str | None = DEFAULT_MODEL
    max_body_bytes: int = 16 * 1024 * 1024
    engine_threads: int | None = None
    engine_parallel: int = 8
    engine_ctx_per_slot: int = 2048
    # The served endpoint that judges the safety and valid_topics guardrails; None: they are off.
    guardrail_endpoint: str | None = None
    # Usage and payload rows waiting for the database; when full, "wait" or "drop" (counted).
    record_queue_size: int = 10_000
    record_queue_full: str = "wait"
    # Shared rate-limit counters (replicas); None: in this process's memory. May hold a password.
    redis_url: str | None = field(default=None, repr=False)
    # When Redis is unreachable: "closed" refuses rate-limited requests (503), "open" lets them by.
    rate_limit_on_redis_error: str = "closed"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or default_models_dir(self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'modelyard.db'}"

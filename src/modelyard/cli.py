"""The `modelyard` command."""

from __future__ import annotations

import click

from modelyard import __version__
from modelyard.commands.chat import chat
from modelyard.commands.models import models
from modelyard.commands.serve import serve
from modelyard.commands.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelyard")
def cli() -> None:
    """modelyard: serve chat models behind the Databricks Model Serving API."""


cli.add_command(serve)
cli.add_command(models)
cli.add_command(chat)
cli.add_command(usage)


def main() -> None:
    cli()

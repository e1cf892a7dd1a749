"""Subcommands of the `modelyard` command, one click group per module."""

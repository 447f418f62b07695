"""`catalogue duplicates`: listings that show the same product."""

from __future__ import annotations

from pipeline.cli.args import AddCommand


def add_commands(add: AddCommand) -> None:
    """(commands follow)"""

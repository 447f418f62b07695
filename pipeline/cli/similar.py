"""`catalogue similar`: the products nearest to a catalogued picture or to a photo."""

from __future__ import annotations

from pipeline.cli.args import AddCommand


def add_commands(add: AddCommand) -> None:
    """(commands follow)"""

"""What the commands' arguments mean, said once: image sizes, dates, shards, ATTRIBUTE=VALUE pairs.

A value a command cannot use ends in a `UsageError` that says what to write instead.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import date
from typing import Protocol

from pipeline.errors import CatalogueError

IMAGE_SIZE_HELP = "WIDTHxHEIGHT in pixels, e.g. 1080x1350"


class UsageError(CatalogueError, ValueError):
    """A command was given something it cannot use; the message says what to write."""


def image_size(value: str | None, option: str = "--image-size") -> tuple[int, int] | None:
    """WIDTHxHEIGHT as the command line writes it, as the (height, width) the code uses."""
    if not value:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
    if not match or not int(match[1]) or not int(match[2]):
        raise UsageError(f"{option} '{value}': write WIDTHxHEIGHT in pixels, e.g. 1080x1350")
    width, height = int(match[1]), int(match[2])
    return height, width


def written_size(size: tuple[int, int]) -> str:
    """A (height, width) as the command line writes it: WIDTHxHEIGHT."""
    height, width = size
    return f"{width}x{height}"


def a_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} '{value}' is not a date: write YYYY-MM-DD") from None


def shard(value: str | None) -> tuple[int, int]:
    """I/N: the images whose id modulo N is I; none given: every image (0/1)."""
    if not value:
        return 0, 1
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise UsageError(f"--shard {value}: give I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """ATTRIBUTE=VALUE options (repeatable) as a dict."""
    found = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"{option} '{value}': write ATTRIBUTE=VALUE, e.g. colour=family")
        found[name] = rest
    return found


Handler = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    def __call__(
        self, name: str, handler: Handler | None, help_text: str, *, tensorflow: bool = False
    ) -> argparse.ArgumentParser: ...


def sub_commands(
    parser: argparse.ArgumentParser,
    *,
    dest: str = "action",
    metavar: str = "ACTION",
    required: bool = True,
) -> AddCommand:
    """The adder of `parser`'s sub-commands: each runs its handler, says what it does in its
    help, and accepts only its own options. `tensorflow`: the command loads models (main quiets
    TensorFlow's start-up notices first)."""
    commands = parser.add_subparsers(dest=dest, required=required, metavar=metavar)

    def add(
        name: str, handler: Handler | None, help_text: str, *, tensorflow: bool = False
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if handler is not None:  # None: a group whose sub-commands name theirs
            sub.set_defaults(handler=handler)
        if tensorflow:
            sub.set_defaults(starts_tensorflow=True)
        return sub

    return add

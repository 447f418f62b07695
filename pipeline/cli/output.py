"""What the commands print: one escaped line at a time, and the exit codes they end with."""

from __future__ import annotations

import sys

from pipeline.terminal import printable

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def say(message: str) -> None:
    """One line for the user; names, captions and reasons from outside cannot drive the terminal."""
    print(printable(message), flush=True)


def complain(message: object) -> None:
    print(f"catalogue: {printable(message)}", file=sys.stderr, flush=True)

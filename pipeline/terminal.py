"""Text from outside (folder names, captions, CSV cells, server answers) made safe for a terminal.

Anything the catalogue prints may hold what others wrote: an archive's folder name, a caption, a
shortcode in a moderator's CSV, the reason a server gave. A control character in it would reach
the terminal as a command (ESC starts colour changes, cursor moves, title changes, clipboard
writes), and a bidirectional override would show the rest of the line reversed. `printable`
writes each of them as a visible escape (`\\x1b`, `\\u202e`), so the line reads as what it holds.
"""

from __future__ import annotations

import logging
import re

# C0 controls (tab and newline included: one message is one line), DEL, C1 controls, the
# bidirectional marks, embeddings, overrides and isolates, the line and paragraph separators, and
# lone surrogates (undecodable bytes of a file name, which printing would refuse).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` with every control, bidi and unprintable character written as a visible escape."""
    return _UNSAFE.sub(_escape, str(text))


class PrintableFormatter(logging.Formatter):
    """A log formatter whose messages and tracebacks cannot drive the terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return "\n".join(printable(line) for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(printable(line) for line in stack_info.splitlines())

"""Text from outside cannot drive the terminal: every control and bidi character is escaped."""

from __future__ import annotations

import logging

import pytest

from pipeline.terminal import PrintableFormatter, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("\x1b[2Jshop", "\\x1b[2Jshop", id="esc"),
        pytest.param("a\x07b\x00c", "a\\x07b\\x00c", id="bell-nul"),
        pytest.param("line\nfake line\r", "line\\nfake line\\r", id="newline"),
        pytest.param("tab\there", "tab\\there", id="tab"),
        pytest.param("del\x7f", "del\\x7f", id="del"),
        pytest.param("csi\x9b31m", "csi\\x9b31m", id="c1"),
        pytest.param("\u202egnp.exe", "\\u202egnp.exe", id="rtl-override"),
        pytest.param("\u2066x\u2069", "\\u2066x\\u2069", id="isolate"),
        pytest.param("caf\udce9", "caf\\udce9", id="undecodable-byte"),
        pytest.param("Ünïcödé 👗 #sale, 'quoted'", "Ünïcödé 👗 #sale, 'quoted'", id="plain"),
    ],
)
def test_printable_escapes_what_would_drive_a_terminal(text, shown):
    assert printable(text) == shown
    printable(text).encode("utf-8")  # printable everywhere, even undecodable names


def test_log_lines_are_escaped_too():
    formatter = PrintableFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "skipped %s", ("\x1b]0;t\x07",), None
    )
    assert formatter.format(record) == "WARNING skipped \\x1b]0;t\\x07"

"""Text Postgres refuses (NUL, lone surrogates), taken out before a row is written."""

from __future__ import annotations

import re
from typing import Any

# What Postgres refuses in text and JSON strings (NUL), and what psycopg2 cannot encode (a lone
# surrogate, which JSON's "\\ud800" escapes decode to).
_REFUSED_TEXT = re.compile("[\x00\ud800-\udfff]")


def _clean_text(match: re.Match[str]) -> str:
    return "" if match.group() == "\x00" else "\ufffd"


def for_postgres(value: Any) -> tuple[Any, bool]:
    """`value` (text, or lists and dicts of it, keys included) with what Postgres refuses in text
    taken out: NUL removed, a lone surrogate replaced by U+FFFD; and whether anything was. The
    value itself comes back when nothing was (no copy)."""
    if isinstance(value, str):
        if _REFUSED_TEXT.search(value) is None:
            return value, False
        return _REFUSED_TEXT.sub(_clean_text, value), True
    if isinstance(value, list):
        items = [for_postgres(item) for item in value]
        if not any(changed for _, changed in items):
            return value, False
        return [item for item, _ in items], True
    if isinstance(value, dict):
        pairs = [(for_postgres(k), for_postgres(v)) for k, v in value.items()]
        if not any(kc or vc for (_, kc), (_, vc) in pairs):
            return value, False
        return {k: v for (k, _), (v, _) in pairs}, True
    return value, False

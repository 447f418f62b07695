"""The catalogue database: its schemas, the engine, clear connection errors, schema migrations."""

from __future__ import annotations

from pipeline.db.models import SCHEMAS
from pipeline.db.session import (
    DatabaseCredentialsRefused,
    DatabaseError,
    DatabaseMissing,
    DatabaseUnreachable,
    get_engine,
)

__all__ = [
    "SCHEMAS",
    "DatabaseCredentialsRefused",
    "DatabaseError",
    "DatabaseMissing",
    "DatabaseUnreachable",
    "get_engine",
]

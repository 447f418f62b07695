"""The catalogue database: typed models, engine and sessions, schema migrations."""

from __future__ import annotations

from pipeline.db.models import SCHEMAS, Base
from pipeline.db.session import (
    DatabaseCredentialsRefused,
    DatabaseError,
    DatabaseMissing,
    DatabaseUnreachable,
    get_engine,
    session_scope,
)

__all__ = [
    "SCHEMAS",
    "Base",
    "DatabaseCredentialsRefused",
    "DatabaseError",
    "DatabaseMissing",
    "DatabaseUnreachable",
    "get_engine",
    "session_scope",
]

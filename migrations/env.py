"""Alembic environment: the URL comes from the settings, never from alembic.ini.

Migrations run under a Postgres advisory lock, so two processes upgrading at once (two Airflow
tasks, `catalogue up` twice) take turns instead of racing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from pipeline.config import load_settings
from pipeline.db.models import SCHEMAS
from pipeline.db.session import get_engine

MIGRATION_LOCK_ID = 7_301_244_001  # any constant shared by every migrating process

config = context.config


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    if type_ == "schema":
        return name in SCHEMAS
    return True


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = get_engine(load_settings().database_url)
        with engine.connect() as connection:
            _migrate(connection)
    else:
        _migrate(connection)


def _migrate(connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    connection.commit()
    try:
        context.configure(
            connection=connection,
            # no metadata: `alembic revision --autogenerate` refuses rather than write a revision
            # dropping every table; the hand-written revisions describe the schema
            target_metadata=None,
            include_schemas=True,
            include_name=include_name,
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()

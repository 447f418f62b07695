"""Schema migrations, run programmatically (`catalogue db upgrade|downgrade|current`)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from pipeline.config import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "migrations"


def _config(engine: Engine, connection, role_names: dict[str, str]) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["role_names"] = role_names
    return config


def upgrade(engine: Engine, *, role_names: dict[str, str], revision: str = "head") -> None:
    with engine.connect() as connection:
        command.upgrade(_config(engine, connection, role_names), revision)


def downgrade(engine: Engine, *, role_names: dict[str, str], revision: str = "base") -> None:
    with engine.connect() as connection:
        command.downgrade(_config(engine, connection, role_names), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()

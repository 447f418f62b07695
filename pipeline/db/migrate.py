"""Schema migrations, run programmatically (`catalogue db upgrade|downgrade|current`)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from pipeline.config import REPO_ROOT
from pipeline.db.session import DatabaseError

MIGRATIONS_DIR = REPO_ROOT / "migrations"
VECTOR_FROM = "0012"  # the first revision that needs pgvector


class VectorExtensionMissing(DatabaseError):
    """The server lacks pgvector, or this role may not enable it in the database."""


def _config(engine: Engine, connection, role_names: dict[str, str]) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["role_names"] = role_names
    return config


def upgrade(engine: Engine, *, role_names: dict[str, str], revision: str = "head") -> None:
    with engine.connect() as connection:
        if revision == "head" or revision >= VECTOR_FROM:
            require_vector_extension(connection)
        command.upgrade(_config(engine, connection, role_names), revision)


def require_vector_extension(connection) -> None:
    """Refuse, in one line naming what to install, a server without pgvector (the `vector`
    extension the similar-items search stores embeddings with) or a role that cannot enable
    it; the catalogue's migrations need it from revision 0012."""
    database = connection.engine.url.database
    installed, available, may_create = connection.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector'), "
            "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector'), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
            "OR (has_database_privilege(current_database(), 'CREATE') AND EXISTS ("
            "SELECT 1 FROM pg_available_extension_versions WHERE name = 'vector' AND trusted))"
        )
    ).one()
    connection.rollback()
    if installed:
        return
    if not available:
        raise VectorExtensionMissing(
            f"the Postgres serving database {database!r} lacks the pgvector extension "
            "(`vector`), which the catalogue needs for similar items: install it on that server "
            "(Debian/Ubuntu: the postgresql-<version>-pgvector package; Docker: the "
            "pgvector/pgvector image docker-compose.yml names; a managed service: enable "
            "the `vector` extension in its settings), or leave CATALOGUE_DATABASE_URL unset "
            "to use the embedded Postgres, which has it"
        )
    if not may_create:
        raise VectorExtensionMissing(
            f"pgvector is installed on the server but not enabled in database {database!r}, "
            "and this role may not enable it: ask an administrator to run "
            f'`CREATE EXTENSION vector;` in "{database}", then run the upgrade again'
        )


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

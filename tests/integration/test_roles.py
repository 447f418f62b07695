"""The database roles, proven by connecting as a login member of each."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError


@pytest.fixture(scope="module")
def login_as(services, migrated, settings):
    """Create a login role that is a member of a group role; yield an engine connected as it."""
    created: list[str] = []
    engines = []

    def connect(group: str):
        login = f"{services.role_prefix}_login_{secrets.token_hex(3)}"
        with migrated.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(
                text(f"CREATE ROLE {login} LOGIN PASSWORD 'test-only' IN ROLE {group}")
            )
        created.append(login)
        engine = create_engine(
            services.database_url.set(username=login, password="test-only"),
            connect_args={"connect_timeout": 5},
        )
        engines.append(engine)
        return engine

    yield connect
    for engine in engines:
        engine.dispose()
    with migrated.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for login in created:
            connection.execute(text(f"DROP OWNED BY {login}"))
            connection.execute(text(f"DROP ROLE {login}"))


def _can(engine, statement: str) -> bool:
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
            raise _Rollback  # prove the permission without leaving rows behind
    except _Rollback:
        return True
    except ProgrammingError as exc:
        assert "permission denied" in str(exc)
        return False


class _Rollback(Exception):
    pass


PRODUCT_INSERT = (
    "INSERT INTO marketplace.products (image_id, shortcode, position, account, image_key) "
    "VALUES (-1, 'x', 0, 'x', 'x')"
)


def test_reader_reads_catalogue_and_marketplace_but_cannot_write(login_as, settings):
    reader = login_as(settings.role_names["reader"])
    assert _can(reader, "SELECT count(*) FROM marketplace.products")
    assert _can(reader, "SELECT count(*) FROM catalogue.taxonomy_versions")
    assert not _can(reader, "SELECT count(*) FROM raw.posts")
    assert not _can(reader, "UPDATE marketplace.products SET colour = 'Red'")
    assert not _can(reader, "DELETE FROM marketplace.products")
    assert not _can(
        reader,
        "INSERT INTO catalogue.taxonomy_versions (checksum, name, document) "
        "VALUES ('x', 'x', '{}')",
    )


def test_reader_can_read_tables_that_later_migrations_add(login_as, settings, migrated):
    with migrated.begin() as connection:
        connection.execute(text("CREATE TABLE catalogue.later_table (id int)"))
    try:
        reader = login_as(settings.role_names["reader"])
        assert _can(reader, "SELECT * FROM catalogue.later_table")
        assert not _can(reader, "INSERT INTO catalogue.later_table VALUES (1)")
    finally:
        with migrated.begin() as connection:
            connection.execute(text("DROP TABLE catalogue.later_table"))


def test_moderator_reads_but_writes_nothing_before_labels_exist(login_as, settings):
    moderator = login_as(settings.role_names["moderator"])
    assert _can(moderator, "SELECT count(*) FROM raw.images")
    assert _can(moderator, "SELECT count(*) FROM marketplace.products")
    assert not _can(moderator, PRODUCT_INSERT)
    assert not _can(moderator, "DELETE FROM raw.posts")


def test_application_role_writes_the_catalogue(login_as, settings):
    app = login_as(settings.role_names["app"])
    assert _can(app, "INSERT INTO raw.accounts (username) VALUES ('app_can_write')")
    assert not _can(app, "CREATE TABLE raw.not_allowed (id int)")


@pytest.mark.parametrize("group", ["reader", "moderator"])
def test_only_the_application_reads_the_workbench_people_and_sessions(login_as, settings, group):
    """Password hashes and session tokens are nobody's data: the default privileges that give
    analysts and moderators every new catalogue table stop short of these."""
    other = login_as(settings.role_names[group])
    for table in ("moderators", "web_sessions", "login_failures"):
        assert not _can(other, f"SELECT count(*) FROM catalogue.{table}")
    app = login_as(settings.role_names["app"])
    assert _can(app, "SELECT count(*) FROM catalogue.moderators")

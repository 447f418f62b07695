"""What a user sees when a setting is wrong: one line naming it, a non-zero exit, nothing written."""

from __future__ import annotations

import socket
import subprocess

import pytest
from sqlalchemy import inspect

from tests.cli import catalogue


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_clear_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_check_passes_on_good_settings(services, migrated):
    result = catalogue(services.env(), "check")
    assert result.returncode == 0, result.stderr
    assert "database  ok" in result.stdout and "s3        ok" in result.stdout


def test_database_unreachable(services, migrated):
    url = services.database_url.set(host="127.0.0.1", port=_closed_port(), query={})
    env = services.env(CATALOGUE_DATABASE_URL=url.render_as_string(hide_password=False))
    _one_clear_line(catalogue(env, "check"), "cannot reach the database", "CATALOGUE_DATABASE_URL")


def test_database_missing(services, migrated):
    url = services.database_url.set(database="no_such_catalogue_db")
    env = services.env(CATALOGUE_DATABASE_URL=url.render_as_string(hide_password=False))
    _one_clear_line(catalogue(env, "check"), "does not exist", "CATALOGUE_DATABASE_URL")


def test_database_unknown_user(services, migrated):
    url = services.database_url.set(username="nobody_" + services.role_prefix)
    env = services.env(CATALOGUE_DATABASE_URL=url.render_as_string(hide_password=False))
    _one_clear_line(catalogue(env, "check"), "refused the credentials", "CATALOGUE_DATABASE_URL")


def test_database_wrong_password(password_postgres, services, migrated):
    url = password_postgres.set(password="wrong-password")
    env = services.env(CATALOGUE_DATABASE_URL=url.render_as_string(hide_password=False))
    line = _one_clear_line(
        catalogue(env, "check"), "refused the credentials", "CATALOGUE_DATABASE_URL"
    )
    assert "wrong-password" not in line


def test_s3_unreachable(services, migrated):
    env = services.env(CATALOGUE_S3_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    _one_clear_line(catalogue(env, "check"), "cannot reach the S3 server", "CATALOGUE_S3_ENDPOINT")


def test_s3_wrong_keys(services, migrated):
    env = services.env(CATALOGUE_S3_SECRET_KEY="wrong-secret-key")
    line = _one_clear_line(catalogue(env, "check"), "refused the keys", "CATALOGUE_S3_SECRET_KEY")
    assert "wrong-secret-key" not in line


def test_bucket_missing(services, migrated):
    env = services.env(CATALOGUE_S3_BUCKET_IMAGES=f"{services.role_prefix}-absent")
    _one_clear_line(catalogue(env, "check"), "does not exist", "CATALOGUE_S3_BUCKET_IMAGES")


def test_malformed_setting_exits_with_configuration_error(services):
    result = catalogue(services.env(CATALOGUE_DATABASE_URL="postgresql://host-only"), "check")
    assert result.returncode == 2
    _one_clear_line(result, "CATALOGUE_DATABASE_URL")


def test_upgrade_with_bad_s3_keys_writes_nothing(services, fresh_database):
    env = services.env(
        CATALOGUE_DATABASE_URL=fresh_database.render_as_string(hide_password=False),
        CATALOGUE_S3_SECRET_KEY="wrong-secret-key",
    )
    _one_clear_line(catalogue(env, "db", "upgrade"), "CATALOGUE_S3_SECRET_KEY")
    from pipeline.db import get_engine

    assert inspect(get_engine(fresh_database)).get_table_names() == []


def test_upgrade_twice_is_harmless(services, fresh_database):
    env = services.env(CATALOGUE_DATABASE_URL=fresh_database.render_as_string(hide_password=False))
    first, second = catalogue(env, "db", "upgrade"), catalogue(env, "db", "upgrade")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    from pipeline.db.migrate import head_revision

    head = head_revision()
    assert f"revision {head} (head {head})" in second.stdout


def test_downgrade_needs_a_revision(services, migrated):
    result = catalogue(services.env(), "db", "downgrade")
    assert result.returncode == 2
    assert "catalogue db downgrade base" in result.stderr


@pytest.fixture(scope="module")
def password_postgres(services):
    """A Postgres that checks passwords (the harness's own trusts local users)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    server = pgserver.get_server(services.work_dir / "pg-password", cleanup_mode="stop")
    server.psql("ALTER USER postgres PASSWORD 'right-password';")
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
    server.psql("SELECT pg_reload_conf();")
    from sqlalchemy.engine import make_url

    url = make_url(server.get_uri("postgres")).set(drivername="postgresql+psycopg2")
    yield url.set(password="right-password")
    server.cleanup()


@pytest.fixture
def postgres_without_pgvector(services):
    """A fresh database on a server that lacks pgvector (the system Postgres on 5432 of this
    machine kind), or a skip where none answers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import DEFAULT_POSTGRES, _has_pgvector

    if _has_pgvector(DEFAULT_POSTGRES) is not False:
        pytest.skip("no Postgres without pgvector answers on 127.0.0.1:5432")
    server = make_url(DEFAULT_POSTGRES)
    name = f"{services.role_prefix}_novector"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def test_a_postgres_without_pgvector_is_named_with_what_to_install(
    services, postgres_without_pgvector
):
    from sqlalchemy import create_engine, inspect

    url = postgres_without_pgvector.render_as_string(hide_password=False)
    result = catalogue(services.env(CATALOGUE_DATABASE_URL=url), "db", "upgrade")
    _one_clear_line(result, "lacks the pgvector extension", "pgvector", "embedded Postgres")
    engine = create_engine(postgres_without_pgvector)
    try:
        assert inspect(engine).get_schema_names().count("catalogue") == 0  # nothing half-made
    finally:
        engine.dispose()

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

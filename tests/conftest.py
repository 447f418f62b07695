"""The test harness: real Postgres and a real S3 server, created for the session and removed after.

Postgres, in this order: the server in CATALOGUE_TEST_POSTGRES_URL; the one on 127.0.0.1:5432
(user postgres) when it answers; otherwise an embedded server from the `pgserver` wheel. The
catalogue needs pgvector: a server that lacks it is passed over for the embedded one (which has
it), and the session says which it chose and why. Each session works in its own database
`catalogue_test_<id>` with its own role prefix, so sessions on one cluster never collide.

S3: the server in CATALOGUE_TEST_S3_ENDPOINT (with CATALOGUE_TEST_S3_ACCESS_KEY/SECRET_KEY), or
SeaweedFS's `weed mini` started on a free port for the session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from pipeline.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@dataclass
class Services:
    server_url: URL  # maintenance database on the test server
    database_url: URL  # this session's catalogue database
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    role_prefix: str
    work_dir: Path
    created_databases: list[str] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment a `catalogue` subprocess needs to use the test services."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGUE_")}
        env.update(
            CATALOGUE_DATABASE_URL=self.database_url.render_as_string(hide_password=False),
            CATALOGUE_S3_ENDPOINT=self.s3_endpoint,
            CATALOGUE_S3_ACCESS_KEY=self.s3_access_key,
            CATALOGUE_S3_SECRET_KEY=self.s3_secret_key,
            CATALOGUE_S3_BUCKET_IMAGES=f"{self.role_prefix.replace('_', '-')}-images",
            CATALOGUE_S3_BUCKET_MODELS=f"{self.role_prefix.replace('_', '-')}-models",
            CATALOGUE_ROLE_PREFIX=self.role_prefix,
            CATALOGUE_STATE_DIR=str(self.work_dir / "state"),
        )
        env.update(overrides)
        return env

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env(self.env(**overrides))

    def create_database(self, name: str | None = None) -> URL:
        name = name or f"catalogue_test_{secrets.token_hex(4)}"
        engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        self.created_databases.append(name)
        return self.server_url.set(database=name)

    def drop_database(self, name: str) -> None:
        from pipeline.db.session import _engine

        _engine.cache_clear()  # close pooled connections to it
        engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _has_pgvector(url: str | URL) -> bool | None:
    """Whether the server offers pgvector; None when it does not answer."""
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
            ).scalar_one()
        engine.dispose()
        return bool(found)
    except Exception:
        return None


def _choose_postgres() -> tuple[URL | None, str]:
    """The server to test on (None: start the embedded one) and why."""
    configured = os.environ.get("CATALOGUE_TEST_POSTGRES_URL")
    if os.environ.get("CATALOGUE_TEST_EMBEDDED_POSTGRES") == "1":
        return None, "embedded (CATALOGUE_TEST_EMBEDDED_POSTGRES=1)"
    candidates = [("CATALOGUE_TEST_POSTGRES_URL", configured)] if configured else []
    candidates.append(("127.0.0.1:5432", DEFAULT_POSTGRES))
    reasons = []
    for name, url in candidates:
        found = _has_pgvector(make_url(url).set(drivername="postgresql+psycopg2"))
        if found:
            return make_url(url).set(drivername="postgresql+psycopg2"), f"{name} (has pgvector)"
        reasons.append(f"{name} {'lacks pgvector' if found is False else 'does not answer'}")
    return None, f"embedded, with pgvector ({'; '.join(reasons)})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    from infra.processes import stop_process
    from infra.s3_server import start_s3_server

    work_dir = Path(tempfile.mkdtemp(prefix="catalogue-tests-"))
    work_dir.chmod(0o755)  # the embedded Postgres runs as its own user when we are root
    embedded = None
    chosen, why = _choose_postgres()
    if chosen is not None:
        server_url = chosen
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            embedded = pgserver.get_server(work_dir / "postgres", cleanup_mode="stop")
        server_url = make_url(embedded.get_uri("postgres")).set(drivername="postgresql+psycopg2")
    print(
        f"\ntest Postgres: {server_url.render_as_string(hide_password=True)}: {why}",
        file=sys.stderr,
    )

    s3_entry = None
    endpoint = os.environ.get("CATALOGUE_TEST_S3_ENDPOINT")
    if endpoint:
        access_key = os.environ["CATALOGUE_TEST_S3_ACCESS_KEY"]
        secret_key = os.environ["CATALOGUE_TEST_S3_SECRET_KEY"]
    else:
        s3_entry = start_s3_server(work_dir / "s3", port=_free_port(), log_path=work_dir / "s3.log")
        endpoint = s3_entry["endpoint"]
        access_key, secret_key = s3_entry["access_key"], s3_entry["secret_key"]

    token = secrets.token_hex(4)
    services = Services(
        server_url=server_url,
        database_url=server_url,
        s3_endpoint=endpoint,
        s3_access_key=access_key,
        s3_secret_key=secret_key,
        role_prefix=f"ct{token}",
        work_dir=work_dir,
    )
    services.database_url = services.create_database(f"catalogue_test_{token}")
    try:
        yield services
    finally:
        for name in services.created_databases:
            services.drop_database(name)
        _drop_roles(server_url, services.role_prefix)
        if s3_entry is not None:
            stop_process(s3_entry)
        if embedded is not None:
            embedded.cleanup()
        shutil.rmtree(work_dir, ignore_errors=True)


def _drop_roles(server_url: URL, prefix: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        roles = connection.execute(
            text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": f"{prefix}%"}
        ).scalars()
        for role in list(roles):
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    engine.dispose()


@pytest.fixture(scope="session")
def settings(services: Services) -> Settings:
    return services.settings()


@pytest.fixture(scope="session")
def migrated(services: Services, settings: Settings):
    """The session's catalogue database at the latest migration, with its buckets."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade
    from pipeline.storage import ObjectStore

    engine = get_engine(settings.database_url)
    upgrade(engine, role_names=settings.role_names)
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        store.ensure_bucket()
    return engine


@pytest.fixture
def fresh_database(services: Services) -> Iterator[URL]:
    """An empty database of its own, dropped after the test."""
    url = services.create_database()
    yield url
    services.drop_database(url.database)
    services.created_databases.remove(url.database)


@pytest.fixture(scope="session")
def airflow(services: Services, migrated):
    """A migrated Airflow metadata database for this session; returns the environment to use."""
    from tests.airflow_harness import airflow_env, migrate_airflow

    url = services.create_database(f"{services.database_url.database}_airflow")
    env = airflow_env(
        services.env(), services.work_dir / "airflow", url.render_as_string(hide_password=False)
    )
    migrate_airflow(env)
    return env


def dataset_dir() -> Path:
    """The shared fashion product photos (or CATALOGUE_DATASET_DIR)."""
    configured = os.environ.get("CATALOGUE_DATASET_DIR")
    return (
        Path(configured)
        if configured
        else REPO_ROOT.parent / "shared" / "data" / "fashion-products"
    )


def clothing_photos_dir() -> Path:
    """The shared real clothing photos (or CATALOGUE_CLOTHING_PHOTOS_DIR)."""
    configured = os.environ.get("CATALOGUE_CLOTHING_PHOTOS_DIR")
    return (
        Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "clothing-photos"
    )


@pytest.fixture(scope="session")
def clothing_photos() -> Path:
    path = clothing_photos_dir()
    if not (path / "images.csv").is_file() or not (path / "images").is_dir():
        pytest.skip(
            f"the clothing photos are not at {path} (images.csv + images/): "
            "set CATALOGUE_CLOTHING_PHOTOS_DIR to run these tests"
        )
    return path


@pytest.fixture(scope="session")
def dataset() -> Path:
    path = dataset_dir()
    if not (path / "styles.csv").exists():
        pytest.skip(
            f"the fashion product photos are not at {path}: put the Kaggle 'Fashion Product "
            "Images (Small)' layout (images/, styles.csv) there or set CATALOGUE_DATASET_DIR"
        )
    return path

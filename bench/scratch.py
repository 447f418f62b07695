"""What every benchmark needs: a scratch database and bucket on the configured services, removed
afterwards (the result file's header is bench/header.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text

from pipeline.db import get_engine
from pipeline.db.migrate import upgrade
from pipeline.storage import ObjectStore


def scratch_database(settings) -> tuple[str, Engine]:
    """A new, migrated database beside the configured one."""
    name = f"catalogue_bench_{secrets.token_hex(4)}"
    admin = create_engine(
        settings.database_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = get_engine(settings.database_url.set(database=name))
    upgrade(engine, role_names=settings.role_names)
    return name, engine


def drop_database(settings, name: str) -> None:
    from pipeline.db.session import _engine

    _engine.cache_clear()
    admin = create_engine(
        settings.database_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def scratch_bucket(settings, bucket: str) -> ObjectStore:
    store = ObjectStore(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        bucket=bucket,
        region=settings.s3_region,
    )
    store.ensure_bucket()
    return store


def empty_bucket(store: ObjectStore) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda o: store.delete(o.key), store.list("")))
    store._client.remove_bucket(store.bucket)


@contextmanager
def scratch_services(settings, bucket: str) -> Iterator[tuple[ObjectStore, Engine]]:
    """A scratch bucket and a scratch database for one measured phase, both removed after it."""
    store = scratch_bucket(settings, bucket)
    db, engine = scratch_database(settings)
    try:
        yield store, engine
    finally:
        drop_database(settings, db)
        empty_bucket(store)

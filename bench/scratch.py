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


def add_images_of_posts(connection) -> None:
    """One 60x80 JPEG row per post of the scratch catalogue (rows only, no picture)."""
    connection.execute(
        text(
            "INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width, "
            "height, bytes, content_type) SELECT media_id, id, 0, 'images/' || media_id || "
            "'.jpg', md5(media_id::text) || md5('x' || media_id), 60, 80, 1000, 'image/jpeg' "
            "FROM raw.posts"
        )
    )


def add_category_champion(
    connection, *, version: str, architecture: str, image_size: tuple[int, int]
) -> int:
    """A category champion's registry row (and the snapshot it names) with no artefact: what
    embeddings and groups are keyed by. Returns its id."""
    snapshot = connection.execute(
        text(
            "INSERT INTO catalogue.dataset_snapshots (checksum, manifest_key, "
            "taxonomy_version_id, attributes, counts, images, created_by) SELECT "
            "md5('bench'), 'snapshots/bench.json', max(id), '{}', '{}', 0, 'bench' "
            "FROM catalogue.taxonomy_versions RETURNING id"
        )
    ).scalar_one()
    return connection.execute(
        text(
            "INSERT INTO catalogue.model_versions (attribute, version, run, artefact_key, "
            "architecture, snapshot_id, backend, classes, image_size, metrics, status, "
            "created_by, promoted_at, promoted_by) VALUES ('category', :v, 'bench', "
            "'models/bench', :a, :s, 'tensorflow', '[]', CAST(:size AS integer[]), '{}', "
            "'champion', 'bench', now(), 'bench') RETURNING id"
        ),
        {"v": version, "a": architecture, "s": snapshot, "size": list(image_size)},
    ).scalar_one()

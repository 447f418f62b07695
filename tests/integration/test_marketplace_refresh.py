"""The marketplace refresh (`catalogue.refresh_products`) costs what the pictures asked for cost.

A relabel job refreshes every picture it touches, and predict refreshes each batch: work that
grows faster than the pictures asked for (0011's temporary table joined to itself) turned a
100,000-picture job into minutes. Measured in pages read (Postgres's buffer counts), not time."""

from __future__ import annotations

import json

from sqlalchemy import Engine, text

from bench.scratch import add_images_of_posts
from pipeline.db import get_engine
from pipeline.db.migrate import upgrade

# freshly loaded tables, before autovacuum has analysed them: what a big import or the first
# predict pass of a new catalogue meets
UNANALYSED = ("raw.images", "raw.posts", "catalogue.predictions", "catalogue.labels",
              "marketplace.products")  # fmt: skip


def _pages_read(engine, ids: list[int]) -> int:
    """Shared and local buffers the refresh of `ids` touched, its statements included."""
    with engine.begin() as connection:
        plan = connection.execute(
            text(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                "SELECT catalogue.refresh_products(CAST(:ids AS bigint[]))"
            ),
            {"ids": ids},
        ).scalar_one()
    root = (plan if isinstance(plan, list) else json.loads(plan))[0]
    counts = [root["Plan"], root.get("Planning", {})]
    return sum(
        part.get(f"{kind} {what} Blocks", 0)
        for part in counts
        for kind in ("Shared", "Local")
        for what in ("Hit", "Read")
    )


def _unanalysed_catalogue(url, settings) -> tuple[Engine, list[int]]:
    """80,000 pictures of 20 shops, each with predictions and a third with a moderator's colour,
    none in the marketplace yet, and no table analysed: as a bulk load leaves them."""
    engine = get_engine(url)
    upgrade(engine, role_names=settings.role_names)
    with engine.begin() as connection:
        for table in UNANALYSED:
            connection.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    with engine.begin() as connection:  # 80,000 single-picture posts of 20 shops
        connection.execute(
            text(
                "INSERT INTO raw.accounts (username, is_business) "
                "SELECT 'shop_' || n, true FROM generate_series(0, 19) AS n"
            )
        )
        connection.execute(
            text(
                """
                INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type,
                                       node, source)
                SELECT 'R' || n, n, a.id, timestamptz '2026-01-01' + n * interval '1 minute',
                       'image', '{}', 'archive'
                FROM generate_series(1, 80000) AS n
                JOIN raw.accounts a ON a.username = 'shop_' || (n % 20)
                """
            )
        )
    with engine.begin() as connection:
        add_images_of_posts(connection)
        ids = connection.execute(text("SELECT id FROM raw.images ORDER BY id")).scalars().all()
        connection.execute(
            text(
                """
                INSERT INTO catalogue.predictions (image_id, attribute, value, confidence,
                                                   margin, top, needs_review, model_version)
                SELECT i.id, a.name, v.value, 0.8, 0.5, '[]', false, 'test-1'
                FROM raw.images i
                CROSS JOIN catalogue.attributes a
                CROSS JOIN LATERAL (SELECT value FROM catalogue.attribute_values av
                                    WHERE av.attribute = a.name ORDER BY value LIMIT 1) v
                """
            )
        )
        # as a bulk load leaves them: labels in, the marketplace not refreshed yet
        connection.execute(
            text("ALTER TABLE catalogue.labels DISABLE TRIGGER labels_reach_marketplace")
        )
        job = connection.execute(
            text("INSERT INTO catalogue.label_jobs (kind, created_by) VALUES ('import', 'test') "
                 "RETURNING id")
        ).scalar_one()  # fmt: skip
        connection.execute(
            text(
                """
                INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator,
                                              created_by, job_id)
                SELECT i.id, 'colour', v.value, 'import', 'test', 'test', :job
                FROM raw.images i
                CROSS JOIN LATERAL (SELECT value FROM catalogue.attribute_values av
                                    WHERE av.attribute = 'colour' ORDER BY value DESC LIMIT 1) v
                WHERE i.id % 3 = 0
                """
            ),
            {"job": job},
        )
        connection.execute(
            text("ALTER TABLE catalogue.labels ENABLE TRIGGER labels_reach_marketplace")
        )

    return engine, ids


def test_refresh_grows_with_the_pictures_asked_for_not_faster(fresh_database, settings):
    engine, ids = _unanalysed_catalogue(fresh_database, settings)
    small = _pages_read(engine, ids[:2500])
    large = _pages_read(engine, ids[:20000])  # 8x the pictures
    with engine.connect() as connection:
        listed = connection.execute(text("SELECT count(*) FROM marketplace.products")).scalar()
    assert listed == 20000
    # linear work reads about 8x the pages (indexes deepen a little); quadratic work, 64x
    assert large < 16 * small, (small, large)

"""Migrations from an empty database and back, on the real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from pipeline.db import SCHEMAS, get_engine
from pipeline.db.migrate import current_revision, downgrade, head_revision, upgrade

EXPECTED_TABLES = {
    "raw": {
        "accounts",
        "account_names",
        "posts",
        "images",
        "quarantine",
        "purges",
        "instagram_requests",
    },
    "catalogue": {
        "taxonomy_versions",
        "attributes",
        "attribute_values",
        "value_aliases",
        "label_jobs",
        "labels",
        "predictions",
        "dataset_snapshots",
        "model_versions",
        "model_predictions",
        "unscorable_images",
        "image_embeddings",
        "image_hashes",
        "image_duplicates",
        "duplicate_checks",
        "moderators",
        "web_sessions",
        "login_failures",
    },
    "marketplace": {"products", "product_attributes"},
}


def _tables(engine) -> dict[str, set[str]]:
    inspector = inspect(engine)
    present = set(inspector.get_schema_names())
    return {s: set(inspector.get_table_names(schema=s)) for s in SCHEMAS if s in present}


def test_upgrade_downgrade_upgrade_from_empty(fresh_database, settings):
    engine = get_engine(fresh_database)
    assert _tables(engine) == {}

    upgrade(engine, role_names=settings.role_names)
    assert _tables(engine) == EXPECTED_TABLES
    assert current_revision(engine) == head_revision()

    upgrade(engine, role_names=settings.role_names)  # a second time is harmless
    assert current_revision(engine) == head_revision()

    downgrade(engine, role_names=settings.role_names, revision="base")
    assert _tables(engine) == {}
    assert current_revision(engine) is None

    upgrade(engine, role_names=settings.role_names)
    assert _tables(engine) == EXPECTED_TABLES


def test_marketplace_products_follow_the_contract(migrated):
    columns = {c["name"] for c in inspect(migrated).get_columns("products", schema="marketplace")}
    contract = {
        "shortcode", "position", "account", "image_key", "colour", "colour_source",
        "colour_confidence", "category", "category_source", "category_confidence",
        "model_version", "needs_review", "updated_at",
    }  # fmt: skip
    assert contract <= columns


def _account(connection, username: str) -> int:
    return connection.execute(
        text("INSERT INTO raw.accounts (username) VALUES (:u) RETURNING id"), {"u": username}
    ).scalar_one()


def _post(connection, account_id: int, shortcode: str, media_id: int) -> int:
    return connection.execute(
        text(
            "INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type, node) "
            "VALUES (:s, :m, :a, now(), 'sidecar', '{}') RETURNING id"
        ),
        {"s": shortcode, "m": media_id, "a": account_id},
    ).scalar_one()


def _image(connection, post_id: int, media_id: int, position: int) -> int:
    return connection.execute(
        text(
            "INSERT INTO raw.images (media_id, post_id, position, object_key, sha256, width, "
            "height, bytes, content_type) VALUES (:m, :p, :pos, 'images/x.jpg', :sha, 60, 80, 1, "
            "'image/jpeg') RETURNING id"
        ),
        {"m": media_id, "p": post_id, "pos": position, "sha": "a" * 64},
    ).scalar_one()


def test_an_image_keeps_its_identity_when_a_carousel_slide_goes(migrated):
    """Images are keyed on their own media id; a removed slide frees its position."""
    with migrated.begin() as connection:
        account = _account(connection, "shop_identity")
        post = _post(connection, account, "SIDECAR1", 9_000_001)
        first = _image(connection, post, 9_100_001, 0)
        second = _image(connection, post, 9_100_002, 1)
        connection.execute(
            text("UPDATE raw.images SET removed_at = now() WHERE id = :id"), {"id": first}
        )
        connection.execute(
            text("UPDATE raw.images SET position = 0 WHERE id = :id"), {"id": second}
        )
        rows = connection.execute(
            text(
                "SELECT media_id, position, removed_at IS NULL FROM raw.images "
                "WHERE post_id = :p ORDER BY media_id"
            ),
            {"p": post},
        ).all()
    assert rows == [(9_100_001, 0, False), (9_100_002, 0, True)]


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        pytest.param(
            "INSERT INTO raw.accounts (username) VALUES ('UpperCase')",
            "ck_accounts_username_lowercase",
            id="username-lowercase",
        ),
        pytest.param(
            "INSERT INTO raw.accounts (username, status) VALUES ('x1', 'sleepy')",
            "ck_accounts_status",
            id="account-status",
        ),
    ],
)
def test_constraints_refuse_bad_rows(migrated, statement, constraint):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError, match=constraint), migrated.begin() as connection:
        connection.execute(text(statement))


def test_duplicate_posts_are_refused_by_instagram_ids(migrated):
    from sqlalchemy.exc import IntegrityError

    with migrated.begin() as connection:
        account = _account(connection, "shop_dupes")
        _post(connection, account, "DUPE1", 9_000_100)
    with pytest.raises(IntegrityError, match="uq_posts_media_id"), migrated.begin() as connection:
        _post(connection, account, "DUPE2", 9_000_100)


def _function_source(engine, signature: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT pg_get_functiondef(to_regprocedure(:f)) "
                "WHERE to_regprocedure(:f) IS NOT NULL"
            ),
            {"f": signature},
        ).scalar_one_or_none()


def test_downgrading_the_shared_conditions_gives_back_the_previous_functions(
    fresh_database, settings
):
    """0011 redefines `refresh_products`; going back restores 0010's text and drops its
    objects, and upgrading again is the same as the first time."""
    engine = get_engine(fresh_database)
    upgrade(engine, role_names=settings.role_names, revision="0010")
    before = _function_source(engine, "catalogue.refresh_products(bigint[])")
    upgrade(engine, role_names=settings.role_names)
    after = _function_source(engine, "catalogue.refresh_products(bigint[])")
    assert "catalogue.shown_label" in after and "raw.live_images" in after

    downgrade(engine, role_names=settings.role_names, revision="0010")
    assert _function_source(engine, "catalogue.refresh_products(bigint[])") == before
    assert _function_source(engine, "catalogue.shown_label(text,text,real,text,boolean)") is None
    with engine.connect() as connection:
        views = connection.execute(
            text("SELECT to_regclass('raw.live_images'), to_regclass('raw.post_images')")
        ).one()
    assert views == (None, None)

    upgrade(engine, role_names=settings.role_names)
    assert _function_source(engine, "catalogue.refresh_products(bigint[])") == after


@pytest.mark.parametrize(
    ("label", "prediction", "needs_review", "shown"),
    [
        pytest.param(
            "Blue", "Red", True, ("Blue", "moderator", None, None, False), id="label-outranks"
        ),
        pytest.param("Blue", None, None, ("Blue", "moderator", None, None, False), id="label"),
        pytest.param(None, "Red", False, ("Red", "model", 0.75, "v1", False), id="sure-model"),
        pytest.param(None, "Red", True, ("Red", "model", 0.75, "v1", True), id="unsure-model"),
        pytest.param(None, None, None, (None, None, None, None, True), id="neither"),
    ],
)
def test_a_moderators_label_outranks_the_models_prediction(
    migrated, label, prediction, needs_review, shown
):
    with migrated.connect() as connection:
        row = connection.execute(
            text(
                "SELECT * FROM catalogue.shown_label(:label, :prediction, "
                "CASE WHEN CAST(:prediction AS text) IS NOT NULL THEN CAST(0.75 AS real) END, "
                "CASE WHEN CAST(:prediction AS text) IS NOT NULL THEN 'v1' END, :needs_review)"
            ),
            {"label": label, "prediction": prediction, "needs_review": needs_review},
        ).one()
    assert tuple(row) == shown


def test_live_images_leave_out_removed_slides_and_unavailable_posts(migrated):
    with migrated.connect() as connection:  # rolled back when closed
        account = _account(connection, "shop_live_images")
        listed = _post(connection, account, "LIVE1", 9_200_001)
        gone = _post(connection, account, "GONE1", 9_200_002)
        kept = _image(connection, listed, 9_210_001, 0)
        removed = _image(connection, listed, 9_210_002, 1)
        hidden = _image(connection, gone, 9_210_003, 0)
        connection.execute(
            text("UPDATE raw.images SET removed_at = now() WHERE id = :id"), {"id": removed}
        )
        connection.execute(
            text("UPDATE raw.posts SET unavailable_since = now() WHERE id = :id"), {"id": gone}
        )
        ids = [kept, removed, hidden]
        every = connection.execute(
            text(
                "SELECT id, shortcode, account FROM raw.post_images WHERE id = ANY(:ids) "
                "ORDER BY id"
            ),
            {"ids": ids},
        ).all()
        live = connection.execute(
            text("SELECT id FROM raw.live_images WHERE id = ANY(:ids)"), {"ids": ids}
        ).scalars()
        assert every == [
            (kept, "LIVE1", "shop_live_images"),
            (removed, "LIVE1", "shop_live_images"),
            (hidden, "GONE1", "shop_live_images"),
        ]
        assert list(live) == [kept]


@pytest.mark.parametrize("view", ["raw.post_images", "raw.live_images"])
def test_the_views_are_read_by_those_who_read_the_raw_tables(migrated, settings, view):
    roles = settings.role_names
    with migrated.connect() as connection:
        can = {
            kind: connection.execute(
                text(
                    "SELECT has_table_privilege(:role, :view, 'SELECT'), "
                    "has_table_privilege(:role, 'raw.images', 'SELECT')"
                ),
                {"role": role, "view": view},
            ).one()
            for kind, role in roles.items()
        }
    assert can == {"app": (True, True), "moderator": (True, True), "reader": (False, False)}

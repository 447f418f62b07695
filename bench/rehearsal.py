"""A million pictures: a scratch catalogue filled with synthetic rows, and every statement the
product runs per stage timed on it (issue 26).

    env -u CATALOGUE_DATABASE_URL CATALOGUE_STATE_DIR=/tmp/rehearsal .venv/bin/catalogue up --no-airflow
    export CATALOGUE_STATE_DIR=/tmp/rehearsal   # and no CATALOGUE_DATABASE_URL: the local stack's
    .venv/bin/python bench/rehearsal.py fill --pictures 100000      # into database rehearsal_100000
    .venv/bin/python bench/rehearsal.py measure --pictures 100000   # -> bench/results/rehearsal-100000.json
    .venv/bin/python bench/rehearsal.py fill --pictures 1000000
    .venv/bin/python bench/rehearsal.py measure --pictures 1000000
    .venv/bin/python bench/rehearsal.py drop --pictures 1000000

`fill` makes database `rehearsal_<pictures>` beside the configured one (kept between runs, so a
new migration is measured on the same rows: `measure` upgrades it to the tree's head first).

The rows (no pictures: object keys point at nothing) follow the real schema and what the stages
write: accounts (one per 100 pictures unless `--accounts`), posts taken over three years (7 in 10
single pictures, the rest carousels of 2 to 4 slides; 1 % no longer listed, 3 % of later slides
taken out), their images; two model versions per attribute (the retired first, the champion),
both of whose scores of every picture but the newest 1 % are in `catalogue.model_predictions`,
the champion's in `catalogue.predictions`; labels of colour and category for 30 % of the pictures
(in 80 % of the accounts) from import and workbench jobs of 2,500 pictures, then the history of
three relabel jobs (a colour rename, a category move over 2 % of the accounts, a colour clear
over 1 % of them) and the undo of the clear; the marketplace rows `catalogue.refresh_products`
would leave (decided by `catalogue.shown_label`), and pairs of near-duplicates across accounts
for 2 % of the pictures. Values are drawn from the taxonomy's leaves with a skew (a few common
colours and articles); the champion agrees with the label 87 % of the time.

The rows are made by the server (INSERT ... SELECT over generate_series, which is faster here
than COPY from the client), with triggers and foreign-key checks off for the load
(`session_replication_role = replica`: it needs a superuser, as the embedded server's is), then
VACUUM ANALYZE.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import Connection, Engine, create_engine, event, text  # noqa: E402

SLIDE_POST = (0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 8, 8, 9, 9, 9, 9)  # 16 pictures in 10 posts
SLIDE_POSITION = (0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 1, 2, 3)
LABELLED_SHARE = 0.30
LABELLED_ACCOUNTS = 5  # every fifth account has no label (the review queue's "new account")
JOB_PICTURES = 2_500
UNSCORED_SHARE = 0.01
CHAMPION_ACCURACY = 0.87
RETIRED_ACCURACY = 0.80
MODERATORS = 20
DAYS = 3 * 365


def uniform(expr: str, salt: int, seed: int) -> str:
    """SQL for a number in [0, 1) fixed by `expr`, `salt` and `seed`."""
    return (
        f"((hashint8extended(({expr})::bigint, {seed * 1000 + salt}) & 4294967295)::float8 "
        "/ 4294967296.0)"
    )


def fill(engine: Engine, *, pictures: int, accounts: int | None = None, seed: int = 0) -> dict:
    """Fill an empty, migrated catalogue with `pictures` pictures' rows (see the module's
    docstring) in `accounts` accounts (default: one per 100 pictures). Returns the rows per
    table."""
    accounts = accounts or max(1, pictures // 100)
    posts = (pictures // 16) * 10 + (SLIDE_POST[(pictures - 1) % 16] + 1 if pictures % 16 else 0)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text("SET LOCAL work_mem = '256MB'"))
        # each step reads what the one before wrote: the planner needs its statistics
        _raw(connection, pictures=pictures, accounts=accounts, posts=posts, seed=seed)
        connection.execute(text("ANALYZE raw.accounts, raw.posts, raw.images"))
        versions = _models(connection)
        _predictions(connection, pictures=pictures, versions=versions, seed=seed)
        connection.execute(text("ANALYZE catalogue.model_predictions, catalogue.predictions"))
        _labels(connection, pictures=pictures, seed=seed)
        connection.execute(text("ANALYZE catalogue.labels, catalogue.label_jobs"))
        _marketplace(connection, pictures=pictures)
        _sequences(connection)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    with engine.connect() as connection:
        counts = {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in (
                "raw.accounts", "raw.posts", "raw.images", "raw.live_images",
                "catalogue.model_predictions", "catalogue.predictions", "catalogue.labels",
                "catalogue.label_jobs", "catalogue.image_duplicates", "marketplace.products",
                "catalogue.unscorable_images",
            )
        }  # fmt: skip
        counts["labelled_pictures"] = connection.execute(
            text("SELECT count(DISTINCT image_id) FROM catalogue.current_labels")
        ).scalar_one()
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts


def _raw(connection: Connection, *, pictures: int, accounts: int, posts: int, seed: int) -> None:
    u = lambda expr, salt: uniform(expr, salt, seed)  # noqa: E731
    connection.execute(
        text(
            f"""
            INSERT INTO raw.accounts (id, username, instagram_id, full_name, is_business,
                follower_count, created_at, updated_at, last_attempt_at, last_success_at)
            SELECT a, 'shop_' || a, 5000000000 + a, 'Shop ' || a, true,
                   (1000 + 200000 * {u("a", 1)} ^ 3)::bigint,
                   timestamptz '2024-01-01 00:00+00', now(), now(), now()
            FROM generate_series(1, {accounts}) AS a
            """
        )
    )
    connection.execute(
        text(
            "INSERT INTO raw.account_names (account_id, username, seen_from, seen_until) "
            "SELECT id, username, created_at, updated_at FROM raw.accounts"
        )
    )
    taken = f"timestamptz '2023-12-01 00:00+00' + (p - 1) * interval '{DAYS} days' / {posts}"
    connection.execute(
        text(
            f"""
            INSERT INTO raw.posts (id, shortcode, media_id, account_id, taken_at, caption,
                hashtags, like_count, comment_count, media_type, node, source, collected_at,
                listed_at, unavailable_since)
            SELECT p, substr(md5('{seed}/' || p), 1, 6) || p, 2000000000000 + p,
                   1 + floor({accounts} * {u("p", 2)})::bigint, {taken},
                   'post ' || p, ARRAY['shop', 'new'], (500 * {u("p", 3)})::bigint, 3,
                   CASE WHEN (p - 1) % 10 >= 7 THEN 'sidecar' ELSE 'image' END, '{{}}',
                   'instagram', {taken} + interval '1 day', {taken} + interval '1 day',
                   CASE WHEN {u("p", 4)} < 0.01 THEN now() - interval '3 days' END
            FROM generate_series(1, {posts}) AS p
            """
        )
    )
    connection.execute(
        text(
            f"""
            INSERT INTO raw.images (id, media_id, post_id, position, object_key, sha256, width,
                height, bytes, content_type, created_at, removed_at)
            SELECT s.n, 1000000000000 + s.n, s.p, s.position,
                   'images/' || left(s.sha, 2) || '/' || s.sha || '.jpg', s.sha, 1080, 1350,
                   (120000 + 80000 * {u("s.n", 5)})::bigint, 'image/jpeg',
                   {taken.replace("(p - 1)", "(s.p - 1)")} + interval '1 day',
                   CASE WHEN s.position > 0 AND {u("s.n", 6)} < 0.03
                        THEN now() - interval '2 days' END
            FROM (
                SELECT n, ((n - 1) / 16) * 10 + (CAST(:post AS int[]))[(n - 1) % 16 + 1] + 1 AS p,
                       (CAST(:position AS int[]))[(n - 1) % 16 + 1] AS position,
                       md5('{seed}/' || n) || md5('{seed}/x' || n) AS sha
                FROM generate_series(1, {pictures}) AS n
            ) AS s
            """
        ),
        {"post": list(SLIDE_POST), "position": list(SLIDE_POSITION)},
    )


def _models(connection: Connection) -> dict[str, list[tuple[int, str, float]]]:
    """Two versions per active attribute: (id, version, accuracy), the retired one first."""
    snapshot = connection.execute(
        text(
            "INSERT INTO catalogue.dataset_snapshots (checksum, manifest_key, "
            "taxonomy_version_id, attributes, counts, images, created_by) SELECT "
            "md5('rehearsal'), 'snapshots/rehearsal.json', max(id), '{}', '{}', 0, 'rehearsal' "
            "FROM catalogue.taxonomy_versions RETURNING id"
        )
    ).scalar_one()
    versions: dict[str, list[tuple[int, str, float]]] = {}
    attributes = connection.execute(
        text("SELECT name FROM catalogue.attributes WHERE active ORDER BY position")
    ).scalars()
    for attribute in attributes:
        versions[attribute] = []
        for number, (status, accuracy) in enumerate(
            (("retired", RETIRED_ACCURACY), ("champion", CHAMPION_ACCURACY)), start=1
        ):
            version = f"{attribute}-rehearsal-{number}"
            version_id = connection.execute(
                text(
                    "INSERT INTO catalogue.model_versions (attribute, version, run, "
                    "artefact_key, architecture, snapshot_id, backend, classes, image_size, "
                    "metrics, status, created_by, promoted_at, promoted_by, retired_at) VALUES "
                    "(:a, :v, 'rehearsal', 'models/' || :v, 'mobilenet_v2_050', :s, "
                    "'tensorflow', '[]', ARRAY[160, 160], CAST(:m AS jsonb), :status, "
                    "'rehearsal', now(), 'rehearsal', CASE WHEN :status = 'retired' THEN now() "
                    "END) RETURNING id"
                ),
                {"a": attribute, "v": version, "s": snapshot, "status": status,
                 "m": json.dumps(_metrics(accuracy))},
            ).scalar_one()  # fmt: skip
            versions[attribute].append((version_id, version, accuracy))
    return versions


def _metrics(accuracy: float) -> dict:
    """A test split's metrics as training records them (`pipeline.report` reads these keys)."""
    return {
        "accuracy": accuracy, "macro_f1": accuracy - 0.08, "top2_accuracy": accuracy + 0.07,
        "majority_accuracy": 0.12, "random_accuracy": 0.02, "test_images": 4000,
        "classes": [], "automation": {"threshold": 0.4, "target_precision": 0.95,
                                      "coverage": 0.8, "precision": 0.95},
    }  # fmt: skip


def _leaves(attribute: str) -> str:
    """A FROM item: the attribute's leaf values (what labels and the models name), as the
    array `leaves`."""
    return f"""(SELECT array_agg(v.value ORDER BY v.value) FROM catalogue.attribute_values v
                WHERE v.attribute = '{attribute}' AND v.retired_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM catalogue.attribute_values c
                                  WHERE c.attribute = v.attribute AND c.parent = v.value))
               AS lv(leaves)"""


def _true_value(attribute: str, salt: int, seed: int) -> str:
    """SQL for picture n's true value of the attribute, from `leaves`: a skewed choice."""
    return f"leaves[1 + floor(cardinality(leaves) * {uniform('n', salt, seed)} ^ 2)::int]"


def _predictions(
    connection: Connection, *, pictures: int, versions: dict, seed: int
) -> None:  # fmt: skip
    scored = int(pictures * (1 - UNSCORED_SHARE))
    for a, (attribute, attribute_versions) in enumerate(versions.items()):
        for v, (version_id, _, accuracy) in enumerate(attribute_versions):
            salt = 100 + 10 * a + v
            u = lambda expr, offset, salt=salt: uniform(expr, salt * 10 + offset, seed)  # noqa: E731
            connection.execute(
                text(
                    f"""
                    INSERT INTO catalogue.model_predictions (model_version_id, image_id, value,
                        confidence, margin, top, needs_review, predicted_at)
                    SELECT {version_id}, n, value, confidence, margin,
                           jsonb_build_array(
                               jsonb_build_object('value', value, 'confidence', confidence),
                               jsonb_build_object('value', second, 'confidence',
                                                  confidence - margin),
                               jsonb_build_object('value', third, 'confidence',
                                                  (confidence - margin) / 2)),
                           confidence < 0.4, now() - interval '1 day' * {len(attribute_versions) - v}
                    FROM (
                        SELECT n,
                               CASE WHEN {u("n", 1)} < {accuracy} THEN truth
                                    ELSE leaves[1 + floor(cardinality(leaves) * {u("n", 2)})::int]
                               END AS value,
                               leaves[1 + floor(cardinality(leaves) * {u("n", 3)})::int] AS second,
                               leaves[1 + floor(cardinality(leaves) * {u("n", 4)})::int] AS third,
                               round((0.25 + 0.75 * {u("n", 5)})::numeric, 4)::real AS confidence,
                               {u("n", 6)} AS share
                        FROM (SELECT n, leaves, {_true_value(attribute, a, seed)} AS truth
                              FROM generate_series(1, {scored}) AS n,
                                   {_leaves(attribute)}) AS t
                    ) AS s, LATERAL (SELECT (confidence * share)::real AS margin) AS m
                    """
                )
            )
        champion_id = attribute_versions[-1][0]
        connection.execute(
            text(
                """
                INSERT INTO catalogue.predictions (image_id, attribute, value, confidence,
                    margin, top, needs_review, model_version, predicted_at)
                SELECT mp.image_id, v.attribute, mp.value, mp.confidence, mp.margin, mp.top,
                       mp.needs_review, v.version, mp.predicted_at
                FROM catalogue.model_predictions mp
                JOIN catalogue.model_versions v ON v.id = mp.model_version_id
                WHERE v.id = :v
                """
            ),
            {"v": champion_id},
        )
    # a few of the newest, not yet scored pictures cannot be decoded
    connection.execute(
        text(
            f"""
            INSERT INTO catalogue.unscorable_images (image_id, kind, reason)
            SELECT n, 'undecodable', 'UnidentifiedImageError: cannot identify image file'
            FROM generate_series({scored + 1}, {pictures}) AS n
            WHERE {uniform("n", 7, seed)} < 0.05
            """
        )
    )


def _labels(connection: Connection, *, pictures: int, seed: int) -> None:
    """Import and workbench jobs labelling 30 % of the pictures, then three relabel jobs and
    the undo of the last one."""
    within = LABELLED_SHARE * LABELLED_ACCOUNTS / (LABELLED_ACCOUNTS - 1)
    connection.execute(
        text(
            f"""
            CREATE TEMP TABLE labelled ON COMMIT DROP AS
            SELECT i.id AS picture, p.account_id,
                   (row_number() OVER (ORDER BY i.id) - 1) / {JOB_PICTURES} + 1 AS job
            FROM raw.images i JOIN raw.posts p ON p.id = i.post_id
            WHERE p.account_id % {LABELLED_ACCOUNTS} <> 0 AND {uniform("i.id", 8, seed)} < {within}
            """
        )
    )
    jobs = connection.execute(text("SELECT COALESCE(max(job), 0) FROM labelled")).scalar_one()
    connection.execute(
        text(
            f"""
            INSERT INTO catalogue.label_jobs (id, kind, arguments, created_by, db_role, origin,
                labels_written, created_at)
            SELECT j, CASE WHEN j % 5 = 0 THEN 'label' ELSE 'import' END,
                   CASE WHEN j % 5 = 0 THEN '{{}}'::jsonb
                        ELSE jsonb_build_object('file', 'labels-' || j || '.csv') END,
                   'moderator-' || (j % {MODERATORS}), current_user,
                   CASE WHEN j % 5 = 0 THEN 'web' ELSE 'cli' END, 0,
                   timestamptz '2024-01-01 00:00+00' + (j - 1) * interval '{DAYS - 40} days'
                       / GREATEST({jobs}, 1)
            FROM generate_series(1, {jobs}) AS j
            """
        )
    )
    for a, attribute in enumerate(("colour", "category")):
        connection.execute(
            text(
                f"""
                INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator,
                    created_by, db_role, job_id, created_at)
                SELECT x.n, '{attribute}', {_true_value(attribute, a, seed)},
                       catalogue.label_source(j.kind), j.created_by, j.created_by, current_user,
                       j.id, j.created_at
                FROM labelled l JOIN catalogue.label_jobs j ON j.id = l.job,
                     {_leaves(attribute)}, LATERAL (SELECT l.picture) AS x(n)
                ORDER BY x.n
                """
            )
        )
    # three relabel jobs, then the undo of the third
    common = connection.execute(
        text(
            "SELECT value FROM catalogue.labels WHERE attribute = :a GROUP BY value "
            "ORDER BY count(*) DESC, value LIMIT 2"
        ),
        {"a": "colour"},
    ).scalars().all()  # fmt: skip
    article = connection.execute(
        text(
            "SELECT value FROM catalogue.labels WHERE attribute = 'category' GROUP BY value "
            "ORDER BY count(*) DESC, value LIMIT 1"
        )
    ).scalar()
    if len(common) < 2 or article is None:  # too few pictures for a history
        return
    relabels = [
        ("rename", "colour", common[1], {"attribute": "colour", "from": [common[0]],
                                         "to": common[1]},
         f"l.value = '{common[0]}'"),
        ("move", "category", article, {"attribute": "category", "to": article,
                                       "filter": {"account": "2 % of the accounts"}},
         "l.image_id IN (SELECT picture FROM labelled WHERE account_id % 50 = 1)"),
        ("clear", "colour", None, {"attribute": "colour", "filter": {"account": "1 %"}},
         "l.image_id IN (SELECT picture FROM labelled WHERE account_id % 100 = 7)"),
    ]  # fmt: skip
    for number, (kind, attribute, value, arguments, where) in enumerate(relabels, start=1):
        job = _add_job(connection, jobs + number, kind, arguments)
        connection.execute(
            text(
                f"""
                INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator,
                    created_by, db_role, replaces_label_id, job_id, created_at)
                SELECT l.image_id, l.attribute, CAST(:value AS text), 'relabel', j.created_by,
                       j.created_by, current_user, l.label_id, j.id, j.created_at
                FROM catalogue.current_labels l, catalogue.label_jobs j
                WHERE j.id = :job AND l.attribute = :attribute AND ({where})
                  AND l.value IS DISTINCT FROM CAST(:value AS text)
                ORDER BY l.image_id
                """
            ),
            {"job": job, "attribute": attribute, "value": value},
        )
    undo = _add_job(connection, jobs + 4, "undo", {"job": jobs + 3}, undoes=jobs + 3)
    connection.execute(
        text(
            """
            INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator,
                created_by, db_role, note, replaces_label_id, job_id, created_at)
            SELECT n.image_id, n.attribute, old.value, 'undo', old.moderator, j.created_by,
                   current_user, 'undo of job ' || n.job_id, n.id, j.id, j.created_at
            FROM catalogue.labels n
            JOIN catalogue.labels old ON old.id = n.replaces_label_id
            CROSS JOIN catalogue.label_jobs j
            WHERE n.job_id = :undone AND j.id = :job
            ORDER BY n.image_id
            """
        ),
        {"undone": jobs + 3, "job": undo},
    )
    connection.execute(
        text(
            "UPDATE catalogue.label_jobs j SET labels_written = c.n FROM (SELECT job_id, "
            "count(*) AS n FROM catalogue.labels GROUP BY job_id) AS c WHERE j.id = c.job_id"
        )
    )


def _add_job(
    connection: Connection, job: int, kind: str, arguments: dict, undoes: int | None = None
) -> int:
    return connection.execute(
        text(
            f"""
            INSERT INTO catalogue.label_jobs (id, kind, arguments, created_by, db_role, origin,
                labels_written, undoes_job_id, created_at)
            VALUES (:job, :kind, CAST(:arguments AS jsonb), 'moderator-1', current_user, 'cli',
                    0, :undoes, timestamptz '2024-01-01 00:00+00' + interval '{DAYS - 40} days'
                                + :job * interval '1 hour')
            RETURNING id
            """
        ),
        {"job": job, "kind": kind, "arguments": json.dumps(arguments), "undoes": undoes},
    ).scalar_one()


def _marketplace(connection: Connection, *, pictures: int) -> None:
    """What `catalogue.refresh_products` leaves for every live picture, decided by the same
    `catalogue.shown_label`; then pairs of near-duplicates across accounts."""
    connection.execute(
        text(
            "CREATE TEMP TABLE shown_labels ON COMMIT DROP AS "
            "SELECT image_id, attribute, value FROM catalogue.current_labels"
        )
    )
    connection.execute(text("ANALYZE shown_labels"))
    connection.execute(
        text(
            """
            INSERT INTO marketplace.products (image_id, shortcode, position, account, image_key,
                colour, colour_source, colour_confidence, category, category_source,
                category_confidence, model_version, needs_review, updated_at)
            SELECT i.id, i.shortcode, i.position, i.account, i.object_key,
                   c.value, c.source, c.confidence, g.value, g.source, g.confidence,
                   COALESCE(c.model_version, g.model_version),
                   c.needs_review OR g.needs_review, now()
            FROM raw.live_images i
            LEFT JOIN shown_labels cl ON cl.image_id = i.id AND cl.attribute = 'colour'
            LEFT JOIN catalogue.predictions cp ON cp.image_id = i.id AND cp.attribute = 'colour'
            LEFT JOIN shown_labels gl ON gl.image_id = i.id AND gl.attribute = 'category'
            LEFT JOIN catalogue.predictions gp
                   ON gp.image_id = i.id AND gp.attribute = 'category'
            CROSS JOIN LATERAL catalogue.shown_label(cl.value, cp.value, cp.confidence,
                                                     cp.model_version, cp.needs_review) AS c
            CROSS JOIN LATERAL catalogue.shown_label(gl.value, gp.value, gp.confidence,
                                                     gp.model_version, gp.needs_review) AS g
            WHERE c.value IS NOT NULL OR g.value IS NOT NULL
            """
        )
    )
    pairs = max(1, pictures // 100)
    step = max(1, pictures // pairs)
    partner = pictures // 2 + 3
    connection.execute(
        text(
            f"""
            INSERT INTO catalogue.image_duplicates (image_id, group_id)
            SELECT image_id, group_id FROM (
                SELECT n AS group_id, unnest(ARRAY[n, (n + {partner} - 1) % {pictures} + 1])
                       AS image_id
                FROM generate_series(1, {pictures}, {step}) AS n
            ) AS d
            ON CONFLICT (image_id) DO NOTHING
            """
        )
    )
    connection.execute(
        text(
            "UPDATE marketplace.products m SET duplicate_group = d.group_id "
            "FROM catalogue.image_duplicates d WHERE d.image_id = m.image_id"
        )
    )


def _sequences(connection: Connection) -> None:
    for table, column in (
        ("raw.accounts", "id"), ("raw.posts", "id"), ("raw.images", "id"),
        ("catalogue.labels", "id"), ("catalogue.label_jobs", "id"),
    ):  # fmt: skip
        connection.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"(SELECT COALESCE(max({column}), 0) + 1 FROM {table}), false)"
            )
        )


# ---------------------------------------------------------------- measuring

BATCH = 128  # the predict stage's batch (CATALOGUE_PREDICT_BATCH_SIZE's default)
REVIEW_PAGE = 200  # the workbench's grid (pipeline/web/labelling.py GRID_LIMIT)
ANALYSTS = {
    # the analysts' common queries (docs/moderation.md)
    "analysts: products by category and colour": """
        SELECT shortcode, position, account, image_key, colour_confidence, category_confidence
        FROM marketplace.products WHERE category = :category AND colour = :colour
        ORDER BY updated_at DESC, image_id DESC LIMIT 100""",
    "analysts: products per category and colour": """
        SELECT category, colour, count(*) FROM marketplace.products GROUP BY 1, 2""",
    "analysts: one account's catalogue": """
        SELECT shortcode, position, colour, colour_source, category, category_source,
               needs_review
        FROM marketplace.products WHERE account = :account ORDER BY shortcode, position""",
}


@dataclass
class Call:
    statement: str
    parameters: Any
    seconds: float


@contextmanager
def recorded(engine: Engine) -> Iterator[list[Call]]:
    """Every statement the product runs through `engine` inside the block, with its time."""
    calls: list[Call] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("rehearsal_started", []).append(time.perf_counter())

    def after(conn, cursor, statement, parameters, context, executemany):
        started = conn.info["rehearsal_started"].pop()
        calls.append(Call(statement, parameters, time.perf_counter() - started))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield calls
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _walk(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def explain(engine: Engine, statement: str, parameters: Any, repeat: int) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) `repeat` times, rolled back: the best and median execution
    time, the top node, buffers and the relations read whole (sequential scans) of the best."""
    raw = engine.raw_connection()
    plans = []
    try:
        with raw.cursor() as cursor:
            for _ in range(repeat):
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters)
                plans.append(cursor.fetchone()[0][0])
        raw.rollback()
    finally:
        raw.close()
    times = sorted(p["Execution Time"] for p in plans)
    best = min(plans, key=lambda p: p["Execution Time"])
    top = best["Plan"]
    return {
        "best_ms": round(times[0], 2),
        "median_ms": round(statistics.median(times), 2),
        "planning_ms": round(best["Planning Time"], 2),
        "top_node": top["Node Type"],
        "rows": top.get("Actual Rows"),
        "shared_hit": top.get("Shared Hit Blocks"),
        "shared_read": top.get("Shared Read Blocks"),
        "temp_written": top.get("Temp Written Blocks"),
        "seq_scans": sorted({n["Relation Name"] for n in _walk(top)
                             if n["Node Type"] == "Seq Scan" and "Relation Name" in n}),
        "statement": " ".join(statement.split())[:300],
    }  # fmt: skip


def _explained(engine: Engine, calls: list[Call], repeat: int) -> list[dict]:
    """The plans of the reads among `calls` (the statements a temp table feeds are timed by the
    wall clock only)."""
    found = []
    for call in calls:
        head = call.statement.lstrip().split(None, 1)[0].upper()
        if head in ("SELECT", "WITH") and "wanted_labels" not in call.statement:
            found.append(explain(engine, call.statement, call.parameters, repeat))
    return found


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _stage(
    results: dict, name: str, kind: str, target_ms: float | None, engine: Engine,
    action: Callable[[], Any], repeat: int, *, explain_main: bool = True,
) -> None:  # fmt: skip
    """Time `action` (wall, best and median of `repeat` runs, the first recording the statements
    it runs and their times) and EXPLAIN its reads; the slowest plan is the stage's statement.
    Stages whose name has none of `results["only"]` are left out."""
    if results["only"] and not any(part in name for part in results["only"]):
        return
    with recorded(engine) as calls:
        times = [_timed(action)]
    times += [_timed(action) for _ in range(repeat - 1)]
    wall = {"best_ms": round(min(times), 1), "median_ms": round(statistics.median(times), 1)}
    entry: dict[str, Any] = {"kind": kind, "target_ms": target_ms, "wall": wall}
    if explain_main:
        plans = _explained(engine, calls, repeat)
        entry["plans"] = plans
        if plans:
            entry["main"] = max(plans, key=lambda p: p["best_ms"])
    entry["statements"] = [
        {"ms": round(c.seconds * 1000, 1), "statement": " ".join(c.statement.split())[:160]}
        for c in calls
    ]
    results["stages"][name] = entry
    main = entry.get("main", {})
    print(f"{name:<52} wall {entry['wall']['best_ms']:>9.1f} ms"
          + (f"   plan {main['best_ms']:>9.1f} ms {main['top_node']}"
             f" seq {','.join(main['seq_scans']) or '-'}" if main else ""), flush=True)  # fmt: skip


def measure(
    engine: Engine, *, settings, pictures: int, repeat: int = 3, only: list[str] | None = None
) -> dict:
    """Time every stage's statements on the filled catalogue (see the module's docstring)."""
    from pipeline.labels.history import Who
    from pipeline.labels.jobs import Selection, run_job, undo_job
    from pipeline.labels.label_csv import export_labels
    from pipeline.labels.review import COUNT_CAP, review_page
    from pipeline.predict.pictures import count_wanted, wanted_pages
    from pipeline.predict.writeback import Score, write_scores
    from pipeline.report import catalogue_report
    from pipeline.train.snapshot import SnapshotOptions, snapshot_dataset

    results: dict[str, Any] = {"pictures": pictures, "repeat": repeat, "stages": {},
                               "only": only or []}  # fmt: skip
    with engine.connect() as connection:
        champions = connection.execute(
            text("SELECT id, attribute FROM catalogue.model_versions WHERE status = 'champion' "
                 "ORDER BY id")
        ).all()  # fmt: skip
        leaves = {
            a: connection.execute(text(f"SELECT leaves FROM {_leaves(a)}")).scalar_one()
            for _, a in champions
        }
        account = connection.execute(
            text("SELECT username FROM raw.accounts WHERE id % :n = 1 ORDER BY id LIMIT 1"),
            {"n": LABELLED_ACCOUNTS},
        ).scalar_one()
        common = connection.execute(
            text("SELECT category, colour FROM marketplace.products GROUP BY 1, 2 "
                 "ORDER BY count(*) DESC LIMIT 1")
        ).one()  # fmt: skip
        posts = connection.execute(text("SELECT count(*) FROM raw.posts")).scalar_one()
        since = connection.execute(
            text("SELECT taken_at::date FROM raw.posts ORDER BY taken_at DESC OFFSET :o LIMIT 1"),
            {"o": posts // 10},
        ).scalar_one()
        scored = connection.execute(
            text("SELECT max(image_id) FROM catalogue.model_predictions")
        ).scalar_one()
    version_ids = [c.id for c in champions]
    rng = random.Random(pictures)
    results["account"], results["since"] = account, str(since)

    # predict
    _stage(results, "predict: first page not scored yet", "per batch", 50, engine,
           lambda: next(wanted_pages(engine=engine, version_ids=version_ids, everything=False,
                                     shard=0, shards=1, page=BATCH), None), repeat)  # fmt: skip
    _stage(results, "predict: count not scored yet (progress)", "whole catalogue", None,
           engine, lambda: count_wanted(engine=engine, version_ids=version_ids,
                                        everything=False), repeat)  # fmt: skip

    def batch_ids() -> list[int]:
        return sorted(rng.sample(range(1, scored + 1), BATCH))

    def write_back() -> None:
        ids = batch_ids()
        scores = []
        for version_id, attribute in champions:
            for image_id in ids:
                value, second = rng.choice(leaves[attribute]), rng.choice(leaves[attribute])
                confidence = round(rng.uniform(0.3, 1.0), 4)
                scores.append(Score(version_id, image_id, value, confidence, confidence / 2,
                                    [{"value": value, "confidence": confidence},
                                     {"value": second, "confidence": confidence / 2}],
                                    confidence < 0.4))  # fmt: skip
        write_scores(engine=engine, scores=scores, unscorable=[])

    _stage(results, f"predict: write-back of a batch ({BATCH} pictures x 2 versions)",
           "per batch", 50, engine, write_back, repeat, explain_main=False)  # fmt: skip

    def refresh() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT catalogue.refresh_products(:ids)"),
                               {"ids": batch_ids()})  # fmt: skip
            connection.rollback()

    _stage(results, f"marketplace refresh of a batch ({BATCH} pictures)", "per batch", 50,
           engine, refresh, repeat, explain_main=False)  # fmt: skip

    # moderation
    _stage(results, f"review queue: first page ({REVIEW_PAGE}) with the queue's total",
           "first page", 200, engine,
           lambda: review_page(engine=engine, limit=REVIEW_PAGE, count_cap=COUNT_CAP),
           repeat)  # fmt: skip
    _stage(results, f"review queue: first page ({REVIEW_PAGE}), no total (CLI)", "first page",
           200, engine, lambda: review_page(engine=engine, limit=REVIEW_PAGE, count=False),
           repeat)  # fmt: skip
    _stage(
        results,
        f"label export of one account ({account})",
        "per account",
        50,
        engine,
        lambda: export_labels(io.StringIO(), engine=engine, account=account),
        repeat,
    )

    def snapshot_query() -> None:
        # the label query runs first; the manifest would go to the object store (none here)
        with contextlib.suppress(AttributeError):
            snapshot_dataset(engine=engine, store=None, options=SnapshotOptions())

    _stage(results, "snapshot: labels of the training set", "whole catalogue", None, engine,
           snapshot_query, 1)  # fmt: skip
    _stage(results, "catalogue report", "whole catalogue", 2000, engine,
           lambda: catalogue_report(engine=engine), repeat)  # fmt: skip
    parameters = {"category": common.category, "colour": common.colour, "account": account}
    for name, statement in ANALYSTS.items():
        kind = "whole catalogue" if "per category" in name else "per query"
        target = None if kind == "whole catalogue" else 50

        def query(statement: str = statement) -> None:
            with engine.connect() as connection:
                connection.execute(text(statement), parameters).all()

        _stage(results, name, kind, target, engine, query, repeat)

    from pipeline.labels.review import ReviewFilter
    from pipeline.web import pages

    _stage(results, "workbench: catalogue page (100 products and their count)", "first page",
           200, engine, lambda: pages.products(engine, attribute="category",
                                               filters=ReviewFilter(), limit=100),
           repeat)  # fmt: skip

    # a relabel job over a tenth of the pictures (the newest posts), and its undo: once each
    job: dict[str, Any] = {}

    def relabel() -> None:
        job["outcome"] = run_job(
            engine=engine, kind="move", attribute="category", to=common.category,
            selection=Selection(since=since), who=Who("rehearsal"),
        )  # fmt: skip

    _stage(results, "relabel job: move the newest tenth's category", "job", 10_000, engine,
           relabel, 1, explain_main=False)  # fmt: skip
    if job:
        results["stages"]["relabel job: move the newest tenth's category"]["labels"] = job[
            "outcome"
        ].images
        _stage(results, "relabel job: its undo", "job", 10_000, engine,
               lambda: undo_job(engine=engine, job_id=job["outcome"].job_id,
                                who=Who("rehearsal")), 1, explain_main=False)  # fmt: skip
    return results


# ---------------------------------------------------------------- the scratch database


def database_name(pictures: int) -> str:
    return f"rehearsal_{pictures}"


def rehearsal_database(settings, pictures: int, *, create: bool) -> Engine:
    """The kept database of one size, migrated to the tree's head."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade

    name = database_name(pictures)
    admin = create_engine(
        settings.database_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).scalar()
        if not exists:
            if not create:
                raise SystemExit(f"no database {name}: run `fill --pictures {pictures}` first")
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = get_engine(settings.database_url.set(database=name))
    upgrade(engine, role_names=settings.role_names)
    return engine


BEFORE_NAMES = {  # a stage renamed since the "before" measurement: its earlier name
    f"review queue: first page ({REVIEW_PAGE}) with the queue's total":
        f"review queue: first page ({REVIEW_PAGE})",
}  # fmt: skip


def table(small: dict, large: dict) -> list[str]:
    """docs/benchmarks.md's table from two sizes' result files: each stage's wall time as the
    product runs it (best of the repeats) before and after, and at 1M after, the time of its
    slowest read by EXPLAIN ANALYZE (best of the repeats)."""
    lines = [
        "| stage (statements as the product runs them) | kind | 100k before | 1M before | "
        "100k after | 1M after | growth 100k to 1M (after) | slowest statement at 1M (EXPLAIN "
        "ANALYZE) | target at 1M | met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def stage(results: dict, key: str, name: str) -> dict | None:
        stages = results.get(key, {}).get("stages", {})
        return stages.get(name) or (stages.get(BEFORE_NAMES.get(name, "")) if key == "before"
                                    else None)  # fmt: skip

    def shown(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"

    for name in large["after"]["stages"]:
        walls = [
            (entry or {}).get("wall", {}).get("best_ms")
            for results in (small, large) for key in ("before", "after")
            for entry in [stage(results, key, name)]
        ]  # fmt: skip
        small_before, small_after, large_before, large_after = walls
        entry = large["after"]["stages"][name]
        target = entry["target_ms"]
        growth = f"{large_after / small_after:.1f}x" if small_after and large_after else ""
        met = "" if target is None else "yes" if large_after < target else "**no**"
        main = entry.get("main")
        slowest = f"{shown(main['best_ms'])} ({main['top_node']})" if main else ""
        lines.append(
            f"| {name} | {entry['kind']} | {shown(small_before)} | {shown(large_before)} | "
            f"{shown(small_after)} | {shown(large_after)} | {growth} | {slowest} | "
            f"{'' if target is None else shown(target)} | {met} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("fill", "measure", "drop", "table"))
    parser.add_argument("--pictures", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="before", help="key of this measurement in --out")
    parser.add_argument("--only", action="append", help="the stages whose name has this")
    args = parser.parse_args()

    from bench.scratch import drop_database
    from pipeline.config import Settings

    if args.action == "table":
        results = REPO / "bench" / "results"
        small, large = (json.loads((results / f"rehearsal-{n}.json").read_text())
                        for n in (100_000, 1_000_000))  # fmt: skip
        print("\n".join(table(small, large)))
        return
    settings = Settings.from_env().with_local_services()
    if args.action == "drop":
        drop_database(settings, database_name(args.pictures))
        return
    out = args.out or REPO / "bench" / "results" / f"rehearsal-{args.pictures}.json"
    if args.action == "fill":
        engine = rehearsal_database(settings, args.pictures, create=True)
        with engine.connect() as connection:
            filled = connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one()
        if filled:
            raise SystemExit(f"{database_name(args.pictures)} is filled already: drop it first")
        counts = fill(engine, pictures=args.pictures, accounts=args.accounts, seed=args.seed)
        print(json.dumps(counts, indent=2))
        _save(out, "fill", counts)
        return
    engine = rehearsal_database(settings, args.pictures, create=False)
    results = measure(engine, settings=settings, pictures=args.pictures, repeat=args.repeat,
                      only=args.only)  # fmt: skip
    _save(out, args.label, results, merge=bool(args.only))


def _save(out: Path, key: str, value: dict, merge: bool = False) -> None:
    """Write `value` under `key`; with `merge`, its stages into those already there."""
    from bench.header import result_header

    results = json.loads(out.read_text()) if out.exists() else {}
    header = result_header(f"rehearsal {key}")
    for stage in value.get("stages", {}).values():  # stages measured apart say when, on what
        stage.update(commit=header["commit"], when=header["when"])
    if merge and key in results:
        stages = {**results[key]["stages"], **value["stages"]}
        value = {**results[key], **value, "stages": stages}
    results[key] = {**value, **header}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out} [{key}]")


if __name__ == "__main__":
    main()

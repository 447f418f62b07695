"""What the workbench's pages read: a picture with its post, labels and predictions; the
catalogue's products with the review filters; the latest labels of a set of pictures.

Writes are not here: every label goes through `pipeline.labels` (history, jobs), like the CLI's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, text

from pipeline.labels.label_csv import header_for, neutralise
from pipeline.labels.review import COUNT_CAP, ReviewFilter
from pipeline.labels.taxonomy import Taxonomy, taxonomy_from_database
from pipeline.web.thumbnails import PictureNotFound

PRODUCT_COLUMNS = ("colour", "category")  # the attributes marketplace.products holds as columns


@dataclass(frozen=True)
class Picture:
    image_id: int
    shortcode: str
    position: int
    account: str
    caption: str | None
    taken_at: Any
    width: int | None
    height: int | None
    product: dict[str, Any] | None
    latest: dict[str, dict[str, Any]]  # attribute -> {value, label_id, created_by}
    history: list[Row[Any]]
    predictions: list[Row[Any]]  # every model version's


def taxonomy(engine: Engine) -> Taxonomy:
    with engine.connect() as connection:
        return taxonomy_from_database(connection)


def picture(engine: Engine, image_id: int) -> Picture:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT i.id, i.shortcode, i.position, i.account, p.caption, i.taken_at, "
                "i.width, i.height FROM raw.post_images i JOIN raw.posts p ON p.id = i.post_id "
                "WHERE i.id = :i AND i.removed_at IS NULL"
            ),
            {"i": image_id},
        ).one_or_none()
        if row is None:
            raise PictureNotFound(f"no picture {image_id}")
        product = connection.execute(
            text("SELECT * FROM marketplace.products WHERE image_id = :i"), {"i": image_id}
        ).one_or_none()
        history = connection.execute(
            text(
                """
                SELECT l.id, l.attribute, l.value, l.source, l.moderator, l.created_by,
                       l.created_at, l.replaces_label_id, l.job_id, l.note, j.kind AS job_kind,
                       j.origin
                FROM catalogue.labels l JOIN catalogue.label_jobs j ON j.id = l.job_id
                WHERE l.image_id = :i ORDER BY l.attribute, l.id
                """
            ),
            {"i": image_id},
        ).all()
        predictions = connection.execute(
            text(
                """
                SELECT v.attribute, v.version, v.status, mp.value, mp.confidence, mp.top,
                       mp.needs_review, mp.predicted_at
                FROM catalogue.model_predictions mp
                JOIN catalogue.model_versions v ON v.id = mp.model_version_id
                WHERE mp.image_id = :i ORDER BY v.attribute, mp.predicted_at DESC
                """
            ),
            {"i": image_id},
        ).all()
    return Picture(
        row.id, row.shortcode, row.position, row.account, row.caption, row.taken_at,
        row.width, row.height, dict(product._mapping) if product else None,
        latest_labels(engine, [image_id]).get(image_id, {}), list(history), list(predictions),
    )  # fmt: skip


def live_images(engine: Engine, image_ids: list[int]) -> set[int]:
    """Which of these pictures the catalogue holds (not taken down, still in their post)."""
    with engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT id FROM raw.images WHERE id = ANY(:ids) AND removed_at IS NULL"),
                {"ids": list(image_ids)},
            ).scalars()
        )


def latest_labels(engine: Engine, image_ids: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """image id -> attribute -> the latest label (value None: cleared) with its id and author."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT image_id, attribute, value, label_id, created_by "
                "FROM catalogue.latest_labels WHERE image_id = ANY(:ids)"
            ),
            {"ids": list(image_ids)},
        ).all()
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        found.setdefault(r.image_id, {})[r.attribute] = {
            "value": r.value, "label_id": r.label_id, "created_by": r.created_by,
        }  # fmt: skip
    return found


def _products_matching(filters: ReviewFilter) -> str:
    """The products the review queue's filters select (the product's own `needs_review`)."""
    return f"""
    FROM marketplace.products p
    JOIN raw.post_images i ON i.id = p.image_id
    WHERE {filters.conditions(image="p.image_id", account="p.account")}
      AND (CAST(:needs_review AS boolean) IS NULL OR p.needs_review = :needs_review)
"""


@dataclass(frozen=True)
class ProductPlace:
    """Where a page of the catalogue ends: its last product's sort key (newest post first, then
    shortcode and position), which the next page starts after."""

    taken_at: datetime
    shortcode: str
    position: int


@dataclass(frozen=True)
class ProductsPage:
    rows: list[Row[Any]]
    total: int  # products the filters select, at most the count's cap
    more: bool  # more than `total` (the count stopped at its cap)
    next: ProductPlace | None  # where the next page starts; None: this is the last one


def products(
    engine: Engine, *, attribute: str, filters: ReviewFilter, limit: int,
    after: ProductPlace | None = None, count_cap: int | None = COUNT_CAP,
) -> ProductsPage:  # fmt: skip
    """A page of `marketplace.products` (with the review queue's filters), newest post first,
    starting after `after` (keyset: the page reads its rows from the index on the posts' time,
    whatever its depth), and how many products the filters select, counted up to `count_cap`."""
    matching = _products_matching(filters)
    place = ""
    if after is not None:
        # the first condition alone is what the index on raw.posts (taken_at) can use
        place = """
          AND i.taken_at <= :after_taken_at
          AND (i.taken_at < :after_taken_at
               OR (p.shortcode, p.position) > (:after_shortcode, :after_position))"""
    with engine.connect() as connection:
        params = filters.parameters(taxonomy_from_database(connection), attribute)
        rows = connection.execute(
            text(
                f"SELECT p.*, i.taken_at {matching} {place} "
                "ORDER BY i.taken_at DESC, p.shortcode, p.position LIMIT :limit"
            ),
            {**params, "limit": limit + 1, "after_taken_at": after and after.taken_at,
             "after_shortcode": after and after.shortcode,
             "after_position": after and after.position},
        ).all()  # fmt: skip
        counted = connection.execute(
            text(f"SELECT count(*) FROM (SELECT 1 {matching} LIMIT CAST(:counted AS bigint)) AS c"),
            {**params, "counted": None if count_cap is None else count_cap + 1},
        ).scalar_one()
    shown = list(rows[:limit])
    last = shown[-1] if len(rows) > limit else None
    more = count_cap is not None and counted > count_cap
    return ProductsPage(
        shown, count_cap if more else counted, more,
        ProductPlace(last.taken_at, last.shortcode, last.position) if last else None,
    )  # fmt: skip


def products_csv(engine: Engine, *, attribute: str, filters: ReviewFilter) -> Iterator[str]:
    """The products the filters select as the label CSV, every one of them, in pieces of
    `CSV_PIECE` rows read from a server-side cursor (a million products are never in memory):
    each one's current labels with their ids (0: none yet), so a file filled in and imported
    never overwrites a label given since. A filter the taxonomy refuses is refused here, before
    the first piece."""
    spec = taxonomy(engine)
    return _products_csv(engine, spec, filters, filters.parameters(spec, attribute))


CSV_PIECE = 1000


def _products_csv(
    engine: Engine, spec: Taxonomy, filters: ReviewFilter, params: dict[str, Any]
) -> Iterator[str]:
    attributes = list(spec.attributes)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header_for(spec))
    with engine.connect() as connection:
        rows = connection.execution_options(stream_results=True, yield_per=CSV_PIECE).execute(
            text(
                f"""
                SELECT p.shortcode, p.position,
                       (SELECT jsonb_object_agg(l.attribute, jsonb_build_array(l.value, l.label_id))
                        FROM catalogue.latest_labels l WHERE l.image_id = p.image_id) AS labels
                {_products_matching(filters)}
                ORDER BY p.shortcode, p.position
                """
            ),
            params,
        )
        for piece in rows.partitions():
            for row in piece:
                labels = row.labels or {}
                writer.writerow([
                    neutralise(row.shortcode), row.position,
                    *(neutralise(labels.get(a, [None])[0]) for a in attributes), "", "",
                    *((labels.get(a) or [None, 0])[1] or 0 for a in attributes),
                ])  # fmt: skip
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def taxonomy_choices(spec: Taxonomy) -> dict[str, list[dict[str, Any]]]:
    """attribute -> its values with their other spellings, for typing a value's first letters."""
    choices = {}
    for name, attribute in spec.attributes.items():
        aliases: dict[str, list[str]] = {}
        for alias, value in attribute.aliases.items():
            aliases.setdefault(value, []).append(alias)
        choices[name] = [
            {"value": v, "aliases": aliases.get(v, [])} for v in sorted(attribute.values)
        ]
    return choices


def duplicate_listings(engine: Engine, groups: list[int | None]) -> dict[int, list[str]]:
    """duplicate group -> its listings (`shortcode/position`), from marketplace.duplicate_listings."""
    wanted = sorted({g for g in groups if g is not None})
    if not wanted:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT group_id, pictures FROM marketplace.duplicate_listings "
                "WHERE group_id = ANY(:g)"
            ),
            {"g": wanted},
        ).all()
    return {r.group_id: list(r.pictures) for r in rows}

"""Collected posts and images written straight into the real database, for moderation tests.

Labels only need `raw` rows to point at; collecting pictures is tested in the collect tests.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class Catalogued:
    image_ids: dict[tuple[str, int], int]  # (shortcode, position) -> image id
    accounts: dict[str, list[str]]  # account -> its shortcodes

    def image(self, shortcode: str, position: int = 0) -> int:
        return self.image_ids[(shortcode, position)]


def reset_catalogue(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE raw.accounts, raw.quarantine CASCADE"))


def add_posts(
    engine: Engine, accounts: dict[str, int], *, images_per_post: int = 1, prefix: str = "P"
) -> Catalogued:
    """`accounts`: name -> number of posts. Shortcodes are `<prefix><account index>x<post>`."""
    image_ids: dict[tuple[str, int], int] = {}
    shortcodes: dict[str, list[str]] = {}
    with engine.begin() as connection:
        for a, (name, posts) in enumerate(accounts.items()):
            account_id = connection.execute(
                text(
                    "INSERT INTO raw.accounts (username, is_business) VALUES (:u, true) "
                    "ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username "
                    "RETURNING id"
                ),
                {"u": name},
            ).scalar_one()
            codes = [f"{prefix}{a}x{p:05d}" for p in range(posts)]
            shortcodes[name] = codes
            rows = connection.execute(
                text(
                    """
                    WITH posts AS (
                        INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at,
                                               media_type, node, source)
                        SELECT code, (:base + n) * 100, :account,
                               timestamptz '2026-01-01' + n * interval '1 hour',
                               CASE WHEN :per > 1 THEN 'sidecar' ELSE 'image' END,
                               CAST(:node AS jsonb), 'archive'
                        FROM unnest(CAST(:codes AS text[])) WITH ORDINALITY AS c(code, n)
                        RETURNING id, shortcode, media_id
                    )
                    INSERT INTO raw.images (media_id, post_id, position, object_key, sha256,
                                            width, height, bytes, content_type)
                    SELECT posts.media_id + k, posts.id, k,
                           'images/00/00/' || posts.shortcode || k || '.jpg',
                           lpad(md5(posts.shortcode || k), 64, '0'), 60, 80, 1000, 'image/jpeg'
                    FROM posts, generate_series(0, :per - 1) AS k
                    RETURNING id, post_id, position,
                              (SELECT shortcode FROM posts WHERE posts.id = post_id) AS shortcode
                    """
                ),
                {
                    "base": zlib.crc32(prefix.encode()) % 10_000 * 1_000_000 + a * 100_000,
                    "account": account_id,
                    "codes": codes,
                    "per": images_per_post,
                    "node": json.dumps({"synthetic": True}),
                },
            ).all()
            for row in rows:
                image_ids[(row.shortcode, row.position)] = row.id
    return Catalogued(image_ids, shortcodes)


def two_shops(engine: Engine) -> Catalogued:
    """An emptied catalogue with `shop_a`'s 6 posts and `shop_b`'s 3 carousels of 2 pictures."""
    reset_catalogue(engine)
    a = add_posts(engine, {"shop_a": 6}, prefix="A")
    b = add_posts(engine, {"shop_b": 3}, images_per_post=2, prefix="B")
    a.image_ids.update(b.image_ids)
    a.accounts.update(b.accounts)
    return a


def add_prediction(
    engine: Engine, image_id: int, attribute: str, top: list[tuple[str, float]],
    *, model_version: str = "test-1", needs_review: bool | None = None,
) -> None:  # fmt: skip
    """A model's prediction as predict writes it, then the marketplace refresh."""
    (value, confidence), second = top[0], (top[1][1] if len(top) > 1 else 0.0)
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO catalogue.predictions (image_id, attribute, value, confidence, margin,
                                                   top, needs_review, model_version)
                VALUES (:image, :attribute, :value, :confidence, :margin, CAST(:top AS jsonb),
                        :review, :version)
                ON CONFLICT (image_id, attribute) DO UPDATE SET value = EXCLUDED.value,
                    confidence = EXCLUDED.confidence, margin = EXCLUDED.margin,
                    top = EXCLUDED.top, needs_review = EXCLUDED.needs_review,
                    model_version = EXCLUDED.model_version
                """
            ),
            {
                "image": image_id,
                "attribute": attribute,
                "value": value,
                "confidence": confidence,
                "margin": confidence - second,
                "top": json.dumps([{"value": v, "confidence": c} for v, c in top]),
                "review": confidence < 0.5 if needs_review is None else needs_review,
                "version": model_version,
            },
        )
        connection.execute(text("SELECT catalogue.refresh_products(ARRAY[:i])"), {"i": image_id})

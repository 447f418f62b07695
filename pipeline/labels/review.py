"""The review queue: the images a moderator's time helps most, best first.

Order (per image, over the chosen attribute or every attribute):
1. no label, and the model is unsure: smallest margin between its top two classes first;
2. the model and the label disagree (compared at the level the model is trained at): most
   confident disagreement first;
3. no label and no prediction, from an account nobody has labelled yet: newest post first;
4. any other image without a label and without a prediction: newest post first.
Images where every considered attribute has a label the model agrees with are not in the queue.

The export is the label CSV, ready to fill in and import, plus columns to decide with: a
time-limited link to the picture, why it is in the queue, and the model's top suggestions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Engine, text

from pipeline.labels.label_csv import header_for, neutralise
from pipeline.labels.taxonomy import taxonomy_from_database
from pipeline.storage import ObjectStore

REASONS = {
    1: "no label; model unsure",
    2: "model disagrees with the label",
    3: "new account, never labelled",
    4: "no label, no prediction",
}


@dataclass(frozen=True)
class ReviewItem:
    image_id: int
    shortcode: str
    position: int
    account: str
    object_key: str
    tier: int
    score: float
    labels: dict[str, Any]  # attribute -> [value, label id]
    suggestions: dict[str, list[dict[str, Any]]]  # attribute -> [{value, confidence}...]

    @property
    def reason(self) -> str:
        return REASONS[self.tier]


def review_queue(*, engine: Engine, limit: int, attribute: str | None = None) -> list[ReviewItem]:
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
        attributes = [attribute] if attribute else list(taxonomy.attributes)
        if attribute:
            taxonomy.attribute(attribute)
        rows = connection.execute(
            text(
                """
                WITH considered AS (
                    SELECT i.id AS image_id, at.name AS attribute,
                           array_position(at.levels, at.train_at) AS train_depth
                    FROM raw.images i CROSS JOIN catalogue.attributes at
                    WHERE i.removed_at IS NULL AND at.active AND at.name = ANY(:attributes)
                ), judged AS (
                    SELECT c.image_id, c.attribute, l.value AS label, l.label_id, pr.value,
                           pr.margin, pr.confidence, pr.top,
                           CASE
                               WHEN l.value IS NULL AND pr.value IS NOT NULL THEN 1
                               WHEN l.value IS NOT NULL AND pr.value IS NOT NULL
                                    AND pr.value <> CASE WHEN cardinality(v.path) >= c.train_depth
                                                         THEN v.path[c.train_depth]
                                                         ELSE v.value END
                                    AND pr.value <> l.value THEN 2
                               WHEN l.value IS NULL THEN 4
                           END AS tier,
                           CASE
                               WHEN l.value IS NULL AND pr.value IS NOT NULL THEN pr.margin
                               WHEN l.value IS NOT NULL THEN -pr.confidence
                           END AS score
                    FROM considered c
                    LEFT JOIN catalogue.current_labels l
                           ON l.image_id = c.image_id AND l.attribute = c.attribute
                    LEFT JOIN catalogue.attribute_values v
                           ON v.attribute = l.attribute AND v.value = l.value
                    LEFT JOIN catalogue.predictions pr
                           ON pr.image_id = c.image_id AND pr.attribute = c.attribute
                ), labelled_accounts AS (
                    SELECT DISTINCT i.account_id FROM catalogue.labels lb
                    JOIN raw.post_images i ON i.id = lb.image_id
                ), ranked AS (
                    SELECT j.image_id,
                           min(CASE WHEN j.tier = 4 AND la.account_id IS NULL THEN 3
                                    ELSE j.tier END) AS tier,
                           min(j.score) AS score,
                           jsonb_object_agg(j.attribute, jsonb_build_array(j.label, j.label_id))
                               FILTER (WHERE j.label IS NOT NULL) AS labels,
                           jsonb_object_agg(j.attribute, j.top)
                               FILTER (WHERE j.top IS NOT NULL) AS suggestions
                    FROM judged j
                    JOIN raw.post_images i ON i.id = j.image_id
                    LEFT JOIN labelled_accounts la ON la.account_id = i.account_id
                    GROUP BY j.image_id
                    HAVING min(j.tier) IS NOT NULL
                )
                SELECT r.image_id, i.shortcode, i.position, i.account, i.object_key,
                       r.tier, r.score, r.labels, r.suggestions
                FROM ranked r
                JOIN raw.post_images i ON i.id = r.image_id
                ORDER BY r.tier, r.score NULLS LAST, i.taken_at DESC, i.shortcode, i.position
                LIMIT :limit
                """
            ),
            {"attributes": attributes, "limit": limit},
        ).all()
    return [
        ReviewItem(
            r.image_id, r.shortcode, r.position, r.account, r.object_key, r.tier,
            r.score if r.score is not None else 0.0, r.labels or {}, r.suggestions or {},
        )
        for r in rows
    ]  # fmt: skip


def write_review_csv(
    out: IO[str], items: list[ReviewItem], *, engine: Engine, store: ObjectStore | None,
    link_expiry_s: int = 7 * 24 * 3600,
) -> None:  # fmt: skip
    """The label CSV of the queue, with `image_url`, `reason`, `account` and suggestions."""
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
    attributes = list(taxonomy.attributes)
    header = [*header_for(taxonomy), "image_url", "reason", "account"]
    header += [f"{a}_suggestions" for a in attributes]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for item in items:
        url = store.presigned_url(item.object_key, expires_s=link_expiry_s) if store else ""
        writer.writerow(
            [
                neutralise(item.shortcode),
                item.position,
                *(neutralise(item.labels.get(a, [None])[0]) for a in attributes),
                "",
                "",
                *(item.labels.get(a, [None, 0])[1] or 0 for a in attributes),
                url,
                item.reason,
                neutralise(item.account),
                *(_suggestions(item.suggestions.get(a)) for a in attributes),
            ]
        )


def _suggestions(top: list[dict[str, Any]] | None) -> str:
    if not top:
        return ""
    return neutralise("; ".join(f"{s['value']} {float(s['confidence']):.2f}" for s in top[:3]))

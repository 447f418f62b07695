"""The review queue: the images a moderator's time helps most, best first.

Order (per image, over the chosen attribute or every attribute):
0. a near-duplicate was labelled differently: a picture of the same duplicate group
   (`catalogue.image_duplicates`) carries a current label other than this picture's shown value
   (its label, else the model's prediction, compared at the level the model is trained at). The
   same product is shown two ways, so one answer is wrong; such pictures are few (groups with a
   label in them), and one fix reaches the whole group (`labels move --like`), so they come
   first, ahead of tier 1, which holds every unlabelled picture with a prediction. The picture
   that disagrees with the largest share of its group's labels comes first (the odd one out);
   a group's pictures with the same share come together;
1. no label, and the model is unsure: smallest margin between its top two classes first;
2. the model and the label disagree (compared at the level the model is trained at): most
   confident disagreement first;
3. no label and no prediction, from an account nobody has labelled yet: newest post first;
4. any other image without a label and without a prediction: newest post first.
Images where every considered attribute has a label the model agrees with, and no near-duplicate
labelled otherwise, are not in the queue. An image's place is that of its attribute with the
smallest tier, ordered by that attribute's score.

The export is the label CSV, ready to fill in and import, plus columns to decide with: a
time-limited link to the picture, why it is in the queue, and the model's top suggestions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any

from sqlalchemy import Connection, Engine, text

from pipeline.labels.label_csv import header_for, neutralise
from pipeline.labels.taxonomy import Taxonomy, UnknownValue, taxonomy_from_database
from pipeline.storage import ObjectStore

NEAR_DUPLICATE = 0
REASONS = {
    NEAR_DUPLICATE: "a near-duplicate was labelled differently",
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
    # attribute -> [{shortcode, position, value}...]: the near-duplicates labelled otherwise
    near_duplicates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if self.tier != NEAR_DUPLICATE:
            return REASONS[self.tier]
        shown = [
            f"{attribute} {d['value']} on {d['shortcode']}/{d['position']}"
            for attribute, duplicates in self.near_duplicates.items()
            for d in duplicates
        ]
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        return f"{REASONS[self.tier]}: {', '.join(shown[:3])}{more}"


@dataclass(frozen=True)
class ReviewFilter:
    """Which pictures of the queue to show (the workbench's filters); every given one must hold.
    `value`, `predicted` and `needs_review` are about the queue's attribute."""

    account: str | None = None
    value: str | None = None  # current label
    predicted: str | None = None  # the model's shown prediction
    needs_review: bool | None = None  # the prediction is marked needs_review (or not)
    since: date | None = None  # post taken on or after
    until: date | None = None  # post taken on or before

    def conditions(self, *, image: str, account: str) -> str:
        """Its SQL conditions but `needs_review` (which callers read from different rows), for
        a query naming the picture's id `image`, its account `account` and its
        `raw.post_images` row `i`; the values are `parameters`'s."""
        return f"""
            (CAST(:account AS text) IS NULL OR {account} = :account)
            AND (CAST(:since AS date) IS NULL OR i.taken_at >= :since)
            AND (CAST(:until AS date) IS NULL OR i.taken_at < CAST(:until AS date) + 1)
            AND (CAST(:value AS text) IS NULL OR EXISTS (
                    SELECT 1 FROM catalogue.current_labels fl
                    WHERE fl.image_id = {image} AND fl.attribute = :attribute
                      AND fl.value = :value))
            AND (CAST(:predicted AS text) IS NULL OR EXISTS (
                    SELECT 1 FROM catalogue.predictions fp
                    WHERE fp.image_id = {image} AND fp.attribute = :attribute
                      AND fp.value = :predicted))
        """

    def parameters(self, taxonomy: Taxonomy, attribute: str | None) -> dict[str, Any]:
        """The values of its conditions, label and prediction in the taxonomy's spelling; one
        needs the attribute."""
        value = predicted = None
        if attribute:
            spec = taxonomy.attribute(attribute)
            value = spec.canonical(self.value) if self.value else None
            predicted = spec.canonical(self.predicted) if self.predicted else None
        elif self.value or self.predicted or self.needs_review is not None:
            raise UnknownValue("filtering by label or prediction needs the attribute")
        return {"attribute": attribute, "account": self.account, "since": self.since,
                "until": self.until, "value": value, "predicted": predicted,
                "needs_review": self.needs_review}  # fmt: skip


# a picture's current label of an attribute (catalogue.current_labels' row) as an index lookup:
# joined for a few pictures, the view is computed for every label first
# The filters' "needs review" choice for a picture `{image}`: none, or the shown prediction of
# the filtered attribute flagged (or not) for review.
NEEDS_REVIEW = """(CAST(:needs_review AS boolean) IS NULL OR EXISTS (
    SELECT 1 FROM catalogue.predictions fp
    WHERE fp.image_id = {image} AND fp.attribute = :attribute
      AND fp.needs_review = :needs_review))"""
CURRENT_LABEL = """
    SELECT latest.label_id, latest.value FROM (
        SELECT lb.id AS label_id, lb.value FROM catalogue.labels lb
        WHERE lb.image_id = {image} AND lb.attribute = {attribute}
        ORDER BY lb.id DESC LIMIT 1
    ) AS latest
    WHERE latest.value IS NOT NULL
"""


# where the workbench's count of the queue stops ("1,000+ left"): 10 ms at a million pictures,
# where 10,000 take 80 ms, as long as the page itself (docs/benchmarks.md, "A million pictures")
COUNT_CAP = 1_000


@dataclass(frozen=True)
class ReviewPage:
    items: list[ReviewItem]
    total: int  # pictures in the (filtered) queue, beyond the page too, at most the count's cap
    more: bool = False  # the queue holds more than `total` pictures (the count stopped at its cap)


def review_queue(
    *, engine: Engine, limit: int, attribute: str | None = None,
    filters: ReviewFilter | None = None,
) -> list[ReviewItem]:  # fmt: skip
    return review_page(
        engine=engine, limit=limit, attribute=attribute, filters=filters, count=False
    ).items


def review_page(
    *, engine: Engine, limit: int, attribute: str | None = None,
    filters: ReviewFilter | None = None, offset: int = 0, taxonomy: Taxonomy | None = None,
    count: bool = True, count_cap: int | None = None,
) -> ReviewPage:  # fmt: skip
    """A page of the queue, best first, and how many pictures the whole queue holds
    (`taxonomy`: the one the caller read already): exactly, or up to `count_cap` (the
    workbench's `COUNT_CAP`), beyond which `total` is `count_cap` and `more` is true. An exact
    count of a large queue judges every picture (seconds at a million pictures, where the page
    takes a tenth of one); one up to 1,000 takes 10 ms. `count=False` leaves the count out
    (`total` is then the page's length)."""
    filters = filters or ReviewFilter()
    with engine.connect() as connection:
        taxonomy = taxonomy or taxonomy_from_database(connection)
        attributes = [attribute] if attribute else list(taxonomy.attributes)
        matching = filters.parameters(taxonomy, attribute)
        candidates = _candidates(connection, filters, attributes, matching, offset + limit)
        label_of_considered = CURRENT_LABEL.format(image="c.image_id", attribute="c.attribute")
        rows = connection.execute(
            text(
                f"""
                WITH considered AS (
                    SELECT i.id AS image_id, at.name AS attribute,
                           array_position(at.levels, at.train_at) AS train_depth
                    FROM raw.images i CROSS JOIN catalogue.attributes at
                    WHERE i.removed_at IS NULL AND at.active AND at.name = ANY(:attributes)
                      AND (CAST(:candidates AS bigint[]) IS NULL OR i.id = ANY(:candidates))
                ), shown AS (
                    SELECT c.image_id, c.attribute, l.value AS label, l.label_id,
                           CASE WHEN cardinality(v.path) >= c.train_depth
                                THEN v.path[c.train_depth] ELSE v.value END AS label_trained,
                           pr.value, pr.margin, pr.confidence, pr.top
                    FROM considered c
                    LEFT JOIN LATERAL ({label_of_considered}) AS l ON true
                    LEFT JOIN catalogue.attribute_values v
                           ON v.attribute = c.attribute AND v.value = l.value
                    LEFT JOIN catalogue.predictions pr
                           ON pr.image_id = c.image_id AND pr.attribute = c.attribute
                ), duplicate_labels AS (
                    -- each picture's near-duplicates' labels, and whether they differ from
                    -- what the picture shows: a label exactly, a prediction at its level
                    SELECT s.image_id, s.attribute, o.image_id AS duplicate_id,
                           dl.label AS duplicate_label,
                           CASE WHEN s.label IS NOT NULL THEN dl.label <> s.label
                                ELSE s.value <> dl.label AND s.value <> dl.label_trained
                           END AS differs
                    FROM shown s
                    JOIN catalogue.image_duplicates d ON d.image_id = s.image_id
                    JOIN catalogue.image_duplicates o
                      ON o.group_id = d.group_id AND o.image_id <> d.image_id
                    JOIN shown dl
                      ON dl.image_id = o.image_id AND dl.attribute = s.attribute
                     AND dl.label IS NOT NULL
                ), near AS (
                    SELECT dl.image_id, dl.attribute,
                           count(*) FILTER (WHERE dl.differs)::real / count(*) AS share,
                           jsonb_agg(jsonb_build_object('shortcode', pi.shortcode,
                                                        'position', pi.position,
                                                        'value', dl.duplicate_label)
                                     ORDER BY dl.duplicate_id) FILTER (WHERE dl.differs)
                               AS differing
                    FROM duplicate_labels dl
                    JOIN raw.post_images pi ON pi.id = dl.duplicate_id
                    GROUP BY dl.image_id, dl.attribute
                    HAVING bool_or(dl.differs)
                ), judged AS (
                    SELECT s.image_id, s.attribute, s.label, s.label_id, s.top, n.differing,
                           CASE
                               WHEN n.differing IS NOT NULL THEN 0
                               WHEN s.label IS NULL AND s.value IS NOT NULL THEN 1
                               WHEN s.label IS NOT NULL AND s.value IS NOT NULL
                                    AND s.value <> s.label_trained
                                    AND s.value <> s.label THEN 2
                               WHEN s.label IS NULL THEN 4
                           END AS tier,
                           CASE
                               WHEN n.differing IS NOT NULL THEN -n.share
                               WHEN s.label IS NULL AND s.value IS NOT NULL THEN s.margin
                               WHEN s.label IS NOT NULL THEN -s.confidence
                           END AS score
                    FROM shown s
                    LEFT JOIN near n ON n.image_id = s.image_id AND n.attribute = s.attribute
                ), ranked AS (
                    SELECT j.image_id,
                           min(CASE WHEN j.tier = 4 AND NOT EXISTS (
                                        SELECT 1 FROM raw.posts ap
                                        JOIN raw.images ai ON ai.post_id = ap.id
                                        JOIN catalogue.labels lb ON lb.image_id = ai.id
                                        WHERE ap.account_id = i.account_id) THEN 3
                                    ELSE j.tier END) AS tier,
                           (array_agg(j.score ORDER BY j.tier, j.score NULLS LAST)
                               FILTER (WHERE j.tier IS NOT NULL))[1] AS score,
                           jsonb_object_agg(j.attribute, jsonb_build_array(j.label, j.label_id))
                               FILTER (WHERE j.label IS NOT NULL) AS labels,
                           jsonb_object_agg(j.attribute, j.top)
                               FILTER (WHERE j.top IS NOT NULL) AS suggestions,
                           jsonb_object_agg(j.attribute, j.differing)
                               FILTER (WHERE j.differing IS NOT NULL) AS near_duplicates
                    FROM judged j
                    JOIN raw.post_images i ON i.id = j.image_id
                    GROUP BY j.image_id, i.account_id
                    HAVING min(j.tier) IS NOT NULL
                )
                SELECT r.image_id, i.shortcode, i.position, i.account, i.object_key,
                       r.tier, r.score, r.labels, r.suggestions, r.near_duplicates
                FROM ranked r
                JOIN raw.post_images i ON i.id = r.image_id
                LEFT JOIN catalogue.image_duplicates d
                       ON d.image_id = r.image_id AND r.tier = :near_duplicate
                WHERE {filters.conditions(image="r.image_id", account="i.account")}
                  AND {NEEDS_REVIEW.format(image="r.image_id")}
                ORDER BY r.tier, r.score NULLS LAST, d.group_id NULLS LAST, i.taken_at DESC,
                         i.shortcode, i.position
                LIMIT :limit OFFSET :offset
                """
            ),
            {
                "attributes": attributes,
                "limit": limit,
                "offset": offset,
                "near_duplicate": NEAR_DUPLICATE,
                "candidates": candidates,
                **matching,
            },
        ).all()
        total, more = (
            _total(connection, filters, attributes, matching, count_cap)
            if count
            else (len(rows), False)
        )
    items = [
        ReviewItem(
            r.image_id, r.shortcode, r.position, r.account, r.object_key, r.tier,
            r.score if r.score is not None else 0.0, r.labels or {}, r.suggestions or {},
            r.near_duplicates or {},
        )
        for r in rows
    ]  # fmt: skip
    return ReviewPage(items, total, more)


def review_count(
    *, engine: Engine, attribute: str | None = None, filters: ReviewFilter | None = None,
    taxonomy: Taxonomy | None = None, cap: int | None = None,
) -> tuple[int, bool]:  # fmt: skip
    """How many pictures the (filtered) queue holds, at most `cap`, and whether it holds more:
    `review_page`'s count without its page."""
    filters = filters or ReviewFilter()
    with engine.connect() as connection:
        taxonomy = taxonomy or taxonomy_from_database(connection)
        attributes = [attribute] if attribute else list(taxonomy.attributes)
        matching = filters.parameters(taxonomy, attribute)
        return _total(connection, filters, attributes, matching, cap)


def _candidates(
    connection: Connection, filters: ReviewFilter, attributes: list[str],
    matching: dict[str, Any], wanted: int,
) -> list[int] | None:  # fmt: skip
    """The pictures among which the queue's first `wanted` are, or None when it takes every
    picture to know.

    An image's place is its best attribute's (tier, score), so a picture of the first `wanted`
    is, for that attribute, among the first `wanted` of that attribute's own order. Tier 0 is the
    pictures of duplicate groups that hold a label (all of them: a picture's tier depends on its
    group's labels), few; tier 1 (no label, a prediction: by margin) is read from the index on
    the predictions' margins. When some attribute has `wanted` pictures in tier 1, no picture of
    a later tier reaches the page, so these candidates are enough: the queue is ranked among them
    only, which keeps its first page as fast at a million pictures as at a thousand."""
    active = connection.execute(
        text("SELECT name FROM catalogue.attributes WHERE active AND name = ANY(:a)"),
        {"a": attributes},
    ).scalars().all()  # fmt: skip
    unlabelled = CURRENT_LABEL.format(image="pr.image_id", attribute=":candidate_attribute")
    tier_one = f"""
        FROM catalogue.predictions pr
        JOIN raw.post_images i ON i.id = pr.image_id
        WHERE pr.attribute = :candidate_attribute AND i.removed_at IS NULL
          AND NOT EXISTS ({unlabelled})
          AND {filters.conditions(image="pr.image_id", account="i.account")}
          AND {NEEDS_REVIEW.format(image="pr.image_id")}
    """
    found: set[int] = set()
    enough = False
    for name in active:
        parameters = {**matching, "candidate_attribute": name, "wanted": wanted}
        rows = connection.execute(
            text(f"SELECT pr.image_id, pr.margin {tier_one} ORDER BY pr.margin LIMIT :wanted"),
            parameters,
        ).all()
        found.update(r.image_id for r in rows)
        if rows and len(rows) == wanted:
            enough = True  # and the pictures tied with the last one on margin
            found.update(
                connection.execute(
                    text(f"SELECT pr.image_id {tier_one} AND pr.margin = :edge"),
                    {**parameters, "edge": rows[-1].margin},
                ).scalars()
            )
    if not enough:
        return None
    # Tier 0 is ordered by the share of the group's labels a picture disagrees with, then by
    # group: the first `wanted` pictures disagreeing with every label of their group (share 1)
    # in group order, when there are that many, are tier 0's first; else every group with a label.
    own = CURRENT_LABEL.format(image="d.image_id", attribute="at.name")
    other = CURRENT_LABEL.format(image="o.image_id", attribute="at.name")
    differs = """CASE WHEN sl.value IS NOT NULL THEN ol.value <> sl.value
                      ELSE pr.value <> ol.value AND pr.value <> CASE
                          WHEN cardinality(v.path) >= array_position(at.levels, at.train_at)
                          THEN v.path[array_position(at.levels, at.train_at)]
                          ELSE v.value END END"""
    edge = connection.execute(
        text(
            f"""
            SELECT d.group_id FROM catalogue.image_duplicates d
            JOIN raw.post_images i ON i.id = d.image_id
            WHERE i.removed_at IS NULL
              AND {filters.conditions(image="d.image_id", account="i.account")}
              AND {NEEDS_REVIEW.format(image="d.image_id")}
              AND EXISTS (
                  SELECT 1 FROM catalogue.attributes at
                  LEFT JOIN LATERAL ({own}) AS sl ON true
                  LEFT JOIN catalogue.predictions pr
                         ON pr.image_id = d.image_id AND pr.attribute = at.name
                  WHERE at.active AND at.name = ANY(:active)
                    AND EXISTS (SELECT 1 FROM catalogue.image_duplicates o
                                JOIN raw.images oi ON oi.id = o.image_id
                                CROSS JOIN LATERAL ({other}) AS ol
                                LEFT JOIN catalogue.attribute_values v
                                       ON v.attribute = at.name AND v.value = ol.value
                                WHERE o.group_id = d.group_id AND o.image_id <> d.image_id
                                  AND oi.removed_at IS NULL)
                    AND NOT EXISTS (SELECT 1 FROM catalogue.image_duplicates o
                                    JOIN raw.images oi ON oi.id = o.image_id
                                    CROSS JOIN LATERAL ({other}) AS ol
                                    LEFT JOIN catalogue.attribute_values v
                                           ON v.attribute = at.name AND v.value = ol.value
                                    WHERE o.group_id = d.group_id AND o.image_id <> d.image_id
                                      AND oi.removed_at IS NULL
                                      AND ({differs}) IS NOT TRUE))
            ORDER BY d.group_id LIMIT :wanted
            """
        ),
        {**matching, "active": active, "wanted": wanted},
    ).scalars().all()  # fmt: skip
    groups = (
        "SELECT d.image_id FROM catalogue.image_duplicates d WHERE d.group_id <= :edge"
        if len(edge) == wanted
        else """SELECT d.image_id FROM catalogue.image_duplicates d
                WHERE d.group_id IN (
                    SELECT o.group_id FROM catalogue.image_duplicates o
                    WHERE EXISTS (SELECT 1 FROM catalogue.labels lb
                                  WHERE lb.image_id = o.image_id AND lb.attribute = ANY(:a)))"""
    )
    found.update(
        connection.execute(
            text(groups), {"a": active, "edge": edge[-1] if edge else None}
        ).scalars()
    )
    return sorted(found)


def _total(
    connection: Connection, filters: ReviewFilter, attributes: list[str],
    matching: dict[str, Any], cap: int | None,
) -> tuple[int, bool]:  # fmt: skip
    """How many pictures the (filtered) queue holds, counting at most `cap` (None: all), and
    whether it holds more: every picture the filters select but those settled (each considered
    attribute labelled, the model agreeing or silent, no near-duplicate labelled otherwise).

    Each picture is judged by index probes (its current labels, predictions, near-duplicates),
    so the count stops at `cap` + 1 pictures instead of reading every label: most pictures are
    unlabelled, in the queue, and its first `cap` + 1 are among the first pictures read."""
    label_of = {
        name: CURRENT_LABEL.format(image=image, attribute="at.name")
        for name, image in (("i", "i.id"), ("d", "d.image_id"), ("o", "o.image_id"))
    }
    counted = connection.execute(
        text(
            f"""
            SELECT count(*) FROM (
                SELECT 1 FROM raw.post_images i
                WHERE i.removed_at IS NULL
                  AND {filters.conditions(image="i.id", account="i.account")}
                  AND {NEEDS_REVIEW.format(image="i.id")}
                  AND (
                      -- not settled: some considered attribute unlabelled, or the model
                      -- disagreeing with its label
                      EXISTS (
                          SELECT 1 FROM catalogue.attributes at
                          WHERE at.active AND at.name = ANY(:attributes)
                            AND NOT EXISTS (
                                SELECT 1 FROM ({label_of["i"]}) AS l
                                LEFT JOIN catalogue.predictions pr
                                       ON pr.image_id = i.id AND pr.attribute = at.name
                                WHERE pr.value IS NULL OR pr.value = l.value OR pr.value = (
                                    SELECT CASE
                                        WHEN cardinality(v.path)
                                             >= array_position(at.levels, at.train_at)
                                        THEN v.path[array_position(at.levels, at.train_at)]
                                        ELSE v.value END
                                    FROM catalogue.attribute_values v
                                    WHERE v.attribute = at.name AND v.value = l.value)))
                      -- or a near-duplicate labelled otherwise (tier 0); `<> i.id`, not
                      -- `<> d.image_id`: probed per picture, not hashed for every picture
                      OR EXISTS (
                          SELECT 1 FROM catalogue.image_duplicates d
                          JOIN catalogue.image_duplicates o
                            ON o.group_id = d.group_id AND o.image_id <> i.id
                          JOIN raw.images oi ON oi.id = o.image_id AND oi.removed_at IS NULL
                          CROSS JOIN catalogue.attributes at
                          CROSS JOIN LATERAL ({label_of["d"]}) AS dl
                          CROSS JOIN LATERAL ({label_of["o"]}) AS ol
                          WHERE d.image_id = i.id AND at.active AND at.name = ANY(:attributes)
                            AND ol.value <> dl.value))
                LIMIT CAST(:counted AS bigint)
            ) AS queue
            """
        ),
        {"attributes": attributes, "counted": None if cap is None else cap + 1, **matching},
    ).scalar_one()
    if cap is not None and counted > cap:
        return cap, True
    return counted, False


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

"""Duplicate listings: the pictures that show the same product, grouped, refreshed incrementally.

Many shops post the same supplier photo, re-encoded, resized, cropped, mirrored, with a caption
or watermark drawn over it. Two pictures show the same product when the two signals the predict
stage stored agree, the perceptual hashes (`hashing`: the bits they differ in, the smaller of the
direct and the mirrored comparison, so a flipped repost counts) and the category champion's
embeddings (`embeddings`: cosine distance), in either of two ways:
- the hashes differ in at most `max_hamming` bits and the embeddings are within `max_distance`
  (a copy whose hash barely moved: re-encoded, resized, mirrored, reposted);
- the embeddings are within `close_distance` (closer) and the hashes differ in at most
  `close_max_hamming` bits (more: a crop shifts the picture under the hash);
and, either way, their colour histograms (`hashing.colour_overlap`, stored with the hashes) share
at least `min_colour_overlap` of their mass: the hash is greyscale, and shops list every colour of
a model shot the same way.
The candidates of a picture are its `neighbours` nearest embeddings found through the
version's HNSW index; it is linked to the nearest of them that passes both tests (one link per
picture: linking to every passing candidate chains look-alike products of the same pose into
large false groups). Links become groups by union-find: the group id is the smallest image id of
the group, and a new picture can join a group or merge several (measured in
`bench/duplicates.py`, docs/benchmarks.md; the thresholds are settings).

`refresh_duplicates` checks only the pictures the champion has embedded and not yet checked
(`catalogue.duplicate_checks`), one transaction per batch under an advisory lock: a crash loses
at most the batch in flight, a rerun finds nothing to do, and two refreshes at once take turns
batch by batch, each reading what the other committed, so groups never fork.

The groups belong to the embedding version that made them. When the category champion changes
(a promotion, or a rollback to an older version), the first refresh under the new champion
starts over: it forgets every group and check, then checks every picture that version has
embedded (a promotion's predict pass embeds them all; a rollback finds the older version's
vectors kept, so no network runs). Until it has, the marketplace shows no groups for the
pictures not yet checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from pipeline.config import Settings, configured, setting
from pipeline.errors import CatalogueError
from pipeline.predict.champions import current_champions
from pipeline.similar import EMBEDDING_ATTRIBUTE
from pipeline.similar.embeddings import distance_sql

LOCK = "catalogue.image_duplicates"  # the advisory lock every refresh batch takes
COLOUR_OVERLAP_SQL = (
    "(SELECT sum(least(x, y)) FROM unnest({a}.colours, {b}.colours) AS shares(x, y))"
)
HAMMING_SQL = (
    "least(bit_count(({a}.phash # {b}.phash)::bit(64)), "
    "bit_count(({a}.phash # {b}.phash_mirrored)::bit(64)))"
)


@dataclass(frozen=True)
class DuplicateOptions:
    max_hamming: int = setting("duplicate_max_hamming")
    max_distance: float = setting("duplicate_max_distance")
    close_distance: float = setting("duplicate_close_distance")
    close_max_hamming: int = setting("duplicate_close_max_hamming")
    min_colour_overlap: float = setting("duplicate_min_colour_overlap")
    neighbours: int = setting("duplicate_neighbours")
    batch_size: int = 500  # pictures checked per transaction
    limit: int | None = None  # check at most this many pictures
    regroup: bool = False  # forget every group and check first (after changing the thresholds)

    @classmethod
    def from_settings(cls, settings: Settings, **choices: Any) -> DuplicateOptions:
        """The configured thresholds, with this run's choices (None keeps the configured)."""
        return configured(cls, settings, choices)


@dataclass
class DuplicateRun:
    version: str
    embedded: int = 0  # pictures the version has embedded
    checked: int = 0  # pictures checked by this run
    pairs: int = 0  # links found: a checked picture and the nearest picture of its product
    grouped: int = 0  # pictures that joined a group (or whose group changed)
    merged: int = 0  # existing groups merged into another
    started_over: bool = False  # a new champion: earlier groups and checks were forgotten
    seconds: float = 0.0

    @property
    def nothing_embedded(self) -> bool:
        return self.embedded == 0


def refresh_duplicates(
    engine: Engine,
    *,
    options: DuplicateOptions = DuplicateOptions(),
    progress: Callable[[DuplicateRun], None] | None = None,
) -> DuplicateRun:
    """Group the category champion's newly embedded pictures with the rest (see the module doc).
    Raises `NoChampion` without a category champion; with one that has embedded nothing yet, the
    run says so (`nothing_embedded`) and changes nothing."""
    started = time.perf_counter()
    (champion,) = current_champions(engine=engine, attributes=[EMBEDDING_ATTRIBUTE])
    version_id = champion.version_id
    run = DuplicateRun(version=champion.version)
    with engine.connect() as connection:
        run.embedded, dims = connection.execute(
            text(
                "SELECT count(*), max(vector_dims(embedding)) FROM catalogue.image_embeddings "
                "WHERE model_version_id = :v"
            ),
            {"v": version_id},
        ).one()
    if run.nothing_embedded:
        run.seconds = time.perf_counter() - started
        return run
    run.started_over = _start_over(engine, version_id, always=options.regroup)
    after = 0
    while options.limit is None or run.checked < options.limit:
        size = options.batch_size
        if options.limit is not None:
            size = min(size, options.limit - run.checked)
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": LOCK})
            ids = _pending(connection, version_id=version_id, after=after, size=size)
            if not ids:
                break
            pairs = _same_product_pairs(
                connection, version_id=version_id, dims=dims, ids=ids, options=options
            )
            grouped, merged = _merge(connection, version_id=version_id, pairs=pairs)
            connection.execute(
                text(
                    "INSERT INTO catalogue.duplicate_checks (model_version_id, image_id) "
                    "SELECT :v, unnest(CAST(:ids AS bigint[])) ON CONFLICT DO NOTHING"
                ),
                {"v": version_id, "ids": ids},
            )
        after = ids[-1]
        run.checked += len(ids)
        run.pairs += len(pairs)
        run.grouped += grouped
        run.merged += merged
        run.seconds = time.perf_counter() - started
        if progress:
            progress(run)
    _reconcile_products(engine)
    run.seconds = time.perf_counter() - started
    return run


def _start_over(engine: Engine, version_id: int, *, always: bool = False) -> bool:
    """Forget the groups and checks of another embedding version (a new champion, a rollback),
    or every one when asked (`always`); True when it did."""
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": LOCK})
        other = (
            always
            or connection.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM catalogue.duplicate_checks "
                    "WHERE model_version_id <> :v) OR EXISTS (SELECT 1 FROM "
                    "catalogue.image_duplicates WHERE model_version_id IS DISTINCT FROM :v)"
                ),
                {"v": version_id},
            ).scalar_one()
        )
        if not other:
            return False
        connection.execute(text("DELETE FROM catalogue.image_duplicates"))
        connection.execute(text("DELETE FROM catalogue.duplicate_checks"))
        return True


_PENDING = """
SELECT e.image_id FROM catalogue.image_embeddings e
WHERE e.model_version_id = :v AND e.image_id > :after
  AND NOT EXISTS (SELECT 1 FROM catalogue.duplicate_checks c
                  WHERE c.model_version_id = :v AND c.image_id = e.image_id)
ORDER BY e.image_id
LIMIT :n
"""


def _pending(connection: Connection, *, version_id: int, after: int, size: int) -> list[int]:
    return list(
        connection.execute(text(_PENDING), {"v": version_id, "after": after, "n": size}).scalars()
    )


def candidates_sql(*, version_id: int, dims: int) -> str:
    """Each picture of `:ids` with its `:k` nearest pictures by the version's embedding (through
    its HNSW index: the literal version and the index's cast), their distance and hash
    difference. Parameters: ids, k."""
    distance = distance_sql(dims, "q.embedding")
    hamming = HAMMING_SQL.format(a="hq", b="hn")
    overlap = COLOUR_OVERLAP_SQL.format(a="hq", b="hn")
    return f"""
        SELECT q.image_id, n.image_id AS other, n.distance, {hamming} AS hamming,
               {overlap} AS colour_overlap
        FROM catalogue.image_embeddings q
        JOIN catalogue.image_hashes hq ON hq.image_id = q.image_id
        CROSS JOIN LATERAL (
            SELECT e.image_id, {distance} AS distance
            FROM catalogue.image_embeddings e
            WHERE e.model_version_id = {int(version_id)}
            ORDER BY {distance}
            LIMIT :k
        ) n
        JOIN catalogue.image_hashes hn ON hn.image_id = n.image_id
        WHERE q.model_version_id = {int(version_id)} AND q.image_id = ANY(CAST(:ids AS bigint[]))
          AND n.image_id <> q.image_id
    """


def _same_product_pairs(
    connection: Connection, *, version_id: int, dims: int, ids: list[int],
    options: DuplicateOptions,
) -> list[tuple[int, int]]:  # fmt: skip
    k = options.neighbours + 1  # the picture itself comes first
    connection.execute(text(f"SET LOCAL hnsw.ef_search = {max(k, 40)}"))
    rows = connection.execute(
        text(
            "SELECT DISTINCT ON (c.image_id) c.image_id, c.other "
            f"FROM ({candidates_sql(version_id=version_id, dims=dims)}) c "
            "WHERE ((c.distance <= :d AND c.hamming <= :h) "
            "OR (c.distance <= :close_d AND c.hamming <= :close_h)) "
            "AND c.colour_overlap >= :overlap "
            "ORDER BY c.image_id, c.distance, c.other"
        ),
        {
            "ids": ids,
            "k": k,
            "d": options.max_distance,
            "h": options.max_hamming,
            "close_d": options.close_distance,
            "close_h": options.close_max_hamming,
            "overlap": options.min_colour_overlap,
        },
    ).all()
    return [(min(a, b), max(a, b)) for a, b in rows]


def groups_of(pairs: Iterable[tuple[int, int]], existing: dict[int, int]) -> dict[int, int]:
    """Union-find: each picture of `pairs` and of the groups they touch -> its group id (the
    smallest image id of its group). `existing`: the touched pictures' current group ids."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is always the smallest id

    for image, group in existing.items():
        union(image, group)
    for a, b in pairs:
        union(a, b)
    return {x: find(x) for x in parent}


def _merge(
    connection: Connection, *, version_id: int, pairs: list[tuple[int, int]]
) -> tuple[int, int]:
    """Write the groups `pairs` make with the existing ones; (pictures whose group was set or
    changed, existing groups merged into another)."""
    if not pairs:
        return 0, 0
    touched = sorted({x for pair in pairs for x in pair})
    existing = dict(
        connection.execute(
            text(
                "SELECT image_id, group_id FROM catalogue.image_duplicates "
                "WHERE image_id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": touched},
        ).all()
    )
    group = groups_of(pairs, existing)
    renamed = {old: group[old] for old in set(existing.values()) if group[old] != old}
    moved = 0
    if renamed:  # every member of a merged group moves to the group it joined
        moved = connection.execute(
            text(
                "UPDATE catalogue.image_duplicates d SET group_id = m.new, "
                "model_version_id = :v, grouped_at = now() "
                "FROM unnest(CAST(:old AS bigint[]), CAST(:new AS bigint[])) AS m(old, new) "
                "WHERE d.group_id = m.old"
            ),
            {"v": version_id, "old": list(renamed), "new": list(renamed.values())},
        ).rowcount
    # a grouped picture is in its new group now (its old one was renamed, or it is the same)
    joining = [x for x in touched if x not in existing]
    if joining:
        connection.execute(
            text(
                "INSERT INTO catalogue.image_duplicates (image_id, group_id, model_version_id) "
                "SELECT i, g, :v FROM unnest(CAST(:ids AS bigint[]), CAST(:groups AS bigint[])) "
                "AS m(i, g) "
                "ON CONFLICT (image_id) DO UPDATE SET group_id = EXCLUDED.group_id, "
                "model_version_id = EXCLUDED.model_version_id, grouped_at = now()"
            ),
            {"v": version_id, "ids": joining, "groups": [group[x] for x in joining]},
        )
    groups = sorted(set(group.values()))
    _show_groups(connection, groups)
    return len(joining) + moved, len(renamed)


def _show_groups(connection: Connection, groups: list[int]) -> None:
    """`marketplace.products.duplicate_group` of the groups' members, locking their pictures in
    id order first as every writer of the marketplace does (`catalogue.lock_images`)."""
    connection.execute(
        text(
            "SELECT catalogue.lock_images(ARRAY(SELECT image_id FROM catalogue.image_duplicates "
            "WHERE group_id = ANY(CAST(:g AS bigint[]))))"
        ),
        {"g": groups},
    )
    connection.execute(
        text(
            "UPDATE marketplace.products p SET duplicate_group = d.group_id "
            "FROM catalogue.image_duplicates d "
            "WHERE d.group_id = ANY(CAST(:g AS bigint[])) AND p.image_id = d.image_id "
            "AND p.duplicate_group IS DISTINCT FROM d.group_id"
        ),
        {"g": groups},
    )


_RECONCILE = """
UPDATE marketplace.products p SET duplicate_group = d.group_id
FROM catalogue.image_duplicates d
WHERE p.image_id = d.image_id AND p.duplicate_group IS DISTINCT FROM d.group_id;
UPDATE marketplace.products p SET duplicate_group = NULL
WHERE p.duplicate_group IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM catalogue.image_duplicates d WHERE d.image_id = p.image_id);
"""


def _reconcile_products(engine: Engine) -> None:
    """The marketplace's groups as `image_duplicates` holds them, for rows the batches did not
    touch: a listing back on Instagram (its row was written again without a group), groups
    forgotten by a start-over."""
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": LOCK})
        for statement in _RECONCILE.split(";"):
            if statement.strip():
                connection.execute(text(statement))


# -- reading the groups -------------------------------------------------------------------------
class UnknownAccount(CatalogueError, LookupError):
    """An account with no listing in the marketplace."""


@dataclass(frozen=True)
class DuplicateGroup:
    group_id: int
    listings: int
    accounts: int
    category: str | None
    pictures: list[tuple[str, str, int]]  # (account, shortcode, position), in image id order


@dataclass(frozen=True)
class DuplicateListings:
    total: int  # groups (with the account, when one is asked for)
    largest: list[DuplicateGroup]  # the largest `limit` of them
    checked: bool  # whether any picture was ever checked


_GROUPS = """
SELECT group_id, listings, accounts, category FROM marketplace.duplicate_listings
WHERE CAST(:account AS text) IS NULL OR :account = ANY(account_names)
ORDER BY listings DESC, group_id
"""
_LISTINGS = """
SELECT duplicate_group, account, shortcode, position FROM marketplace.products
WHERE duplicate_group = ANY(CAST(:groups AS bigint[]))
ORDER BY duplicate_group, image_id
"""


def duplicate_listings(engine: Engine, *, account: str | None = None, limit: int = 20):
    """The groups of `marketplace.duplicate_listings` (those with a listing of `account`),
    largest first, the first `limit` with their pictures. Raises `UnknownAccount` for an account
    with no listing in the marketplace."""
    with engine.connect() as connection:
        if (
            account is not None
            and not connection.execute(
                text("SELECT EXISTS (SELECT 1 FROM marketplace.products WHERE account = :a)"),
                {"a": account},
            ).scalar_one()
        ):
            raise UnknownAccount(
                f"no listing of @{account} in the marketplace: check the name with "
                "`catalogue accounts list` (its pictures appear once `catalogue predict` ran)"
            )
        groups = connection.execute(text(_GROUPS), {"account": account}).all()
        shown = groups[:limit]
        pictures: dict[int, list[tuple[str, str, int]]] = {}
        for row in connection.execute(text(_LISTINGS), {"groups": [g.group_id for g in shown]}):
            pictures.setdefault(row.duplicate_group, []).append(
                (row.account, row.shortcode, row.position)
            )
        checked = connection.execute(
            text("SELECT EXISTS (SELECT 1 FROM catalogue.duplicate_checks)")
        ).scalar_one()
    return DuplicateListings(
        total=len(groups),
        largest=[
            DuplicateGroup(
                g.group_id, g.listings, g.accounts, g.category, pictures.get(g.group_id, [])
            )
            for g in shown
        ],
        checked=bool(checked),
    )

"""Dataset snapshots: the current labels turned into a versioned, reproducible training set.

- Labels: each image's current label (moderators outrank everything; predictions never enter),
  mapped to its class at the attribute's training level (colour family, article type...).
- Classes with fewer than `min_examples` training examples are left out and reported in the
  manifest, never silently dropped.
- Splits are grouped and stable: a post's split comes from a hash of its media id, so it never
  moves between snapshots; all pictures of a post share it, and a picture posted twice (same
  sha256) takes the split of the first post that showed it. Champion and candidate are therefore
  compared on pictures neither trained on. With `group_by="account"` the hash is of the account
  instead (of the first post that showed the picture): all of one account's pictures share a
  split, so a model is tested on accounts (photographers, shops) it never saw.
- The manifest (image keys, labels, splits, taxonomy version, counts) is stored in the models
  bucket under its content hash and recorded in `catalogue.dataset_snapshots`; the same labels
  give the same snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from pipeline.config import Settings, configured, setting
from pipeline.errors import CatalogueError
from pipeline.labels.taxonomy import taxonomy_from_database
from pipeline.storage import ObjectStore

SPLITS = ("train", "validation", "test")
GROUPINGS = ("post", "account")  # what keeps its pictures in one split


class SnapshotError(CatalogueError, ValueError):
    """No usable training set; the message says what is missing."""


@dataclass(frozen=True)
class SnapshotOptions:
    attributes: tuple[str, ...] = ("colour", "category")
    min_examples: int = setting("train_min_examples")  # training examples a class needs
    validation_share: float = 0.1
    test_share: float = 0.1
    levels: dict[str, str] = field(default_factory=dict)  # attribute -> level (default train_at)
    only_classes: dict[str, list[str]] = field(default_factory=dict)  # e.g. the 8 article types
    group_by: str = "post"  # one of GROUPINGS

    def __post_init__(self) -> None:
        if self.group_by not in GROUPINGS:
            raise SnapshotError(f"group_by '{self.group_by}' is not one of {', '.join(GROUPINGS)}")

    @classmethod
    def from_settings(cls, settings: Settings, **choices: Any) -> SnapshotOptions:
        """The configured snapshot options, with this run's choices (None: the setting)."""
        return configured(cls, settings, choices)


@dataclass(frozen=True)
class Snapshot:
    id: int
    checksum: str
    manifest_key: str
    manifest: dict[str, Any]
    created: bool

    @property
    def attributes(self) -> dict[str, dict[str, Any]]:
        return self.manifest["attributes"]

    def items(self, split: str) -> list[dict[str, Any]]:
        return [item for item in self.manifest["images"] if item["split"] == split]


def split_of(group: int | str, *, validation_share: float, test_share: float) -> str:
    """The split of a group, from a hash of its key (a post's media id, or `account:<id>`): the
    same group, the same split, always."""
    digest = hashlib.sha256(f"catalogue-split:{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < test_share:
        return "test"
    if position < test_share + validation_share:
        return "validation"
    return "train"


def snapshot_dataset(
    *, engine: Engine, store: ObjectStore, options: SnapshotOptions, created_by: str | None = None
) -> Snapshot:
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
        version_id = connection.execute(
            text("SELECT max(taxonomy_version_id) FROM catalogue.attributes WHERE active")
        ).scalar_one()
        rows = connection.execute(
            text(
                """
                SELECT i.id AS image_id, i.object_key, i.sha256, i.post_media_id,
                       'account:' || COALESCE(a.instagram_id::text, 'row' || a.id) AS account,
                       l.attribute, l.value, l.label_id
                FROM catalogue.current_labels l
                JOIN raw.live_images i ON i.id = l.image_id
                JOIN raw.accounts a ON a.id = i.account_id
                WHERE l.attribute = ANY(:attributes)
                ORDER BY i.id, l.attribute
                """
            ),
            {"attributes": list(options.attributes)},
        ).all()
    if not rows:
        raise SnapshotError(
            f"no labelled images for {', '.join(options.attributes)}: import labels first "
            "(`catalogue labels import FILE`)"
        )

    # each picture's split: the first post (smallest media id) that showed the same bytes, or
    # that post's account
    first_post: dict[str, int] = {}
    for row in rows:
        first_post[row.sha256] = min(first_post.get(row.sha256, row.post_media_id),
                                     row.post_media_id)  # fmt: skip
    group: dict[str, int | str] = dict(first_post)
    if options.group_by == "account":
        account_of = {row.post_media_id: row.account for row in rows}
        group = {sha256: account_of[media_id] for sha256, media_id in first_post.items()}
    images: dict[int, dict[str, Any]] = {}
    for row in rows:
        attribute = taxonomy.attribute(row.attribute)
        level = options.levels.get(row.attribute, attribute.train_at)
        if level not in attribute.levels:
            raise SnapshotError(
                f"{row.attribute} has no level '{level}' (levels: {', '.join(attribute.levels)})"
            )
        if row.value not in attribute.values:
            continue  # a retired value: its labels stay in history, not in training sets
        depth = attribute.levels.index(level) + 1
        path = attribute.values[row.value].path
        label = path[depth - 1] if len(path) >= depth else row.value
        item = images.setdefault(
            row.image_id,
            {
                "image_id": row.image_id,
                "key": row.object_key,
                "sha256": row.sha256,
                "split": split_of(
                    group[row.sha256],
                    validation_share=options.validation_share,
                    test_share=options.test_share,
                ),
                "labels": {},
            },
        )
        item["labels"][row.attribute] = label

    attributes: dict[str, dict[str, Any]] = {}
    for name in options.attributes:
        attribute = taxonomy.attribute(name)
        counts = Counter(
            item["labels"][name] for item in images.values()
            if item["split"] == "train" and name in item["labels"]
        )  # fmt: skip
        wanted = options.only_classes.get(name)
        if wanted:
            wanted = [attribute.canonical(v) for v in wanted]
        kept = sorted(
            c
            for c, n in counts.items()
            if n >= options.min_examples and (not wanted or c in wanted)
        )
        attributes[name] = {
            "level": options.levels.get(name, attribute.train_at),
            "classes": kept,
            "left_out": {c: n for c, n in sorted(counts.items()) if c not in kept},
            "min_examples": options.min_examples,
        }
    for item in images.values():
        item["labels"] = {
            name: label for name, label in item["labels"].items()
            if label in attributes[name]["classes"]
        }  # fmt: skip
    kept_images = sorted(
        (item for item in images.values() if item["labels"]), key=lambda i: i["image_id"]
    )
    for name, spec in attributes.items():
        if len(spec["classes"]) < 2:
            raise SnapshotError(
                f"{name}: {len(spec['classes'])} class(es) with at least {options.min_examples} "
                f"training examples; label more images or lower the minimum "
                f"(left out: {spec['left_out']})"
            )
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name in attributes:
        per_split: dict[str, Counter] = defaultdict(Counter)
        for item in kept_images:
            if name in item["labels"]:
                per_split[item["split"]][item["labels"][name]] += 1
        counts[name] = {split: dict(sorted(per_split[split].items())) for split in SPLITS}

    content = {
        "taxonomy_version_id": version_id,
        "attributes": attributes,
        "options": {
            "validation_share": options.validation_share,
            "test_share": options.test_share,
            # only when not the default, so earlier snapshots keep their checksums
            **({"group_by": options.group_by} if options.group_by != "post" else {}),
        },
        "images": kept_images,
    }
    checksum = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    manifest = {**content, "checksum": checksum, "counts": counts}
    key = f"snapshots/{checksum}.json"
    data = json.dumps(manifest, sort_keys=True).encode()
    if not store.exists(key):
        store.put(key, data, content_type="application/json")
    with engine.begin() as connection:
        row = connection.execute(
            text(
                """
                WITH inserted AS (
                    INSERT INTO catalogue.dataset_snapshots (checksum, manifest_key,
                        taxonomy_version_id, attributes, counts, images, labels_up_to, created_by)
                    VALUES (:checksum, :key, :version, CAST(:attributes AS jsonb),
                            CAST(:counts AS jsonb), :images,
                            (SELECT max(id) FROM catalogue.labels),
                            COALESCE(:who, session_user))
                    ON CONFLICT (checksum) DO NOTHING RETURNING id
                )
                SELECT id, true AS created FROM inserted
                UNION ALL
                SELECT id, false FROM catalogue.dataset_snapshots WHERE checksum = :checksum
                LIMIT 1
                """
            ),
            {
                "checksum": checksum,
                "key": key,
                "version": version_id,
                "attributes": json.dumps(attributes),
                "counts": json.dumps(counts),
                "images": len(kept_images),
                "who": created_by,
            },
        ).one()
    return Snapshot(row.id, checksum, key, manifest, row.created)


def load_snapshot(*, engine: Engine, store: ObjectStore, snapshot_id: int) -> Snapshot:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT id, checksum, manifest_key FROM catalogue.dataset_snapshots WHERE id = :i"
            ),
            {"i": snapshot_id},
        ).first()
    if row is None:
        raise SnapshotError(f"no dataset snapshot {snapshot_id} (see `catalogue models list`)")
    manifest = json.loads(store.get(row.manifest_key))
    return Snapshot(row.id, row.checksum, row.manifest_key, manifest, False)

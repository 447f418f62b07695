"""Takedowns: delete an account's or a post's rows and pictures, leaving an audit record.

Rows go first (with the audit record, in one transaction), then the objects no remaining image
references: a crash in between leaves unreferenced objects, never a row without its picture. The
same picture posted by another account stays (content addressing).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from pipeline.accounts import UnknownAccount, delete_purged_account, normalise_username
from pipeline.storage import ObjectStore


@dataclass(frozen=True)
class PurgeOutcome:
    target_kind: str
    target: str
    posts: int
    images: int
    objects_deleted: int


def purge(
    *, engine: Engine, store: ObjectStore, target: str, reason: str | None = None,
    requested_by: str | None = None,
) -> PurgeOutcome:  # fmt: skip
    """`target` is an account (username, @name or profile URL) or a post's shortcode."""
    kind, where, value = _target(engine, target)
    with engine.begin() as connection:
        # a takedown deletes the images' labels too (labels are otherwise append-only)
        connection.execute(text("SET LOCAL catalogue.purge = 'on'"))
        images = connection.execute(
            text(
                f"SELECT i.id, i.object_key, i.sha256 FROM raw.images i "
                f"JOIN raw.posts p ON p.id = i.post_id JOIN raw.accounts a ON a.id = p.account_id "
                f"WHERE {where}"
            ),
            {"value": value},
        ).all()
        posts = connection.execute(
            text(
                f"DELETE FROM raw.posts p USING raw.accounts a "
                f"WHERE a.id = p.account_id AND {where}"
            ),
            {"value": value},
        ).rowcount
        if kind == "account":
            delete_purged_account(connection=connection, username=value)
        orphaned = (
            connection.execute(
                text(
                    "SELECT k FROM unnest(CAST(:keys AS text[])) AS k WHERE NOT EXISTS "
                    "(SELECT 1 FROM raw.images WHERE object_key = k)"
                ),
                {"keys": sorted({row.object_key for row in images})},
            )
            .scalars()
            .all()
        )
        connection.execute(
            text(
                "INSERT INTO raw.purges (target_kind, target, reason, requested_by, posts, "
                "images, objects_deleted) VALUES (:kind, :target, :reason, "
                "COALESCE(:requested_by, current_user), :posts, :images, :objects)"
            ),
            {"kind": kind, "target": value, "reason": reason, "requested_by": requested_by,
             "posts": posts, "images": len(images), "objects": len(orphaned)},
        )  # fmt: skip
    for key in orphaned:
        store.delete(key)  # deleting a key that is already gone is not an error in S3
    return PurgeOutcome(kind, value, posts, len(images), len(orphaned))


def _target(engine: Engine, target: str) -> tuple[str, str, str]:
    with engine.connect() as connection:
        # the shortcode exactly as stored, whatever characters an archive gave it: a post that
        # was stored can always be taken down by the name it was stored under
        found = connection.execute(
            text("SELECT 1 FROM raw.posts WHERE shortcode = :s"), {"s": target}
        ).scalar()
        if found:
            return "post", "p.shortcode = :value", target
        try:
            name = normalise_username(target)
        except ValueError:
            name = None
        if (
            name
            and connection.execute(
                text("SELECT 1 FROM raw.accounts WHERE username = :u"), {"u": name}
            ).scalar()
        ):
            return "account", "a.username = :value", name
    raise UnknownAccount(
        f"'{target}' is neither a collected post's shortcode nor a registered account: "
        "see `catalogue accounts list`, or SELECT shortcode FROM raw.posts"
    )

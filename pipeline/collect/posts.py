"""Storing collected posts: objects first, rows second, upserts keyed on Instagram's ids.

Live collection and archive import both store `CollectedPost`s through the same three steps, so a
post loads the same way whichever door it came through: `prepare_post`, `upload_pictures` and
`write_post` (`store_post` runs them for one post; the archive import runs each for a chunk of
posts before the next). Per post: every picture is checked and written to the
object store (content-addressed, so a picture already referenced is not uploaded again), then the
post and its images are written in one transaction (a post known to be new: one statement that
inserts, otherwise an upsert). A crash leaves at most an unreferenced
object, never a row without its picture, and a rerun changes nothing that did not change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from pipeline.collect.images import CheckedImage, ImageRefused, check_image
from pipeline.storage import ObjectStore, content_key, sha256_of

log = logging.getLogger(__name__)


class ImageDownloadFailed(RuntimeError):
    """A picture could not be fetched (a transient failure, not bad content): its post is not
    stored, so the next run fetches it again."""


@dataclass(frozen=True)
class CollectedImage:
    """One picture of a post, not yet fetched: `read()` returns its bytes."""

    media_id: int
    position: int
    read: Callable[[], bytes]
    source_ref: str  # where it came from (URL, archive path), for quarantine and messages
    is_video_cover: bool = False


@dataclass(frozen=True)
class CollectedPost:
    shortcode: str
    media_id: int
    taken_at: datetime
    media_type: str  # image, sidecar, video
    caption: str | None
    hashtags: list[str]
    like_count: int | None
    comment_count: int | None
    location: dict[str, Any] | None
    node: dict[str, Any]
    images: Sequence[CollectedImage]
    source: str = "instagram"
    # Every picture the post has now; when a refresh fetches only new pictures, `images` holds
    # fewer, and the stored ones listed here must not be taken for removed slides.
    all_media_ids: tuple[int, ...] = ()


@dataclass
class StoreOutcome:
    post_id: int | None = None
    post_inserted: bool = False
    post_updated: bool = False
    images_inserted: int = 0
    images_quarantined: int = 0
    objects_written: int = 0
    refusals: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _ReadyImage:
    image: CollectedImage
    data: bytes
    key: str
    sha256: str
    checked: CheckedImage


@dataclass(frozen=True)
class AccountKey:
    id: int
    allow_personal: bool
    created: bool


def upsert_account(
    *,
    connection: Connection,
    username: str,
    instagram_id: int | None = None,
    full_name: str | None = None,
    is_business: bool | None = None,
    follower_count: int | None = None,
    enabled: bool = True,
    allow_personal: bool = False,
) -> AccountKey:
    """Register or refresh an account: profile facts are refreshed, the operator's choices kept
    (`enabled` only applies to a new account; `allow_personal` is only ever granted here)."""
    row = connection.execute(
        text(
            """
            INSERT INTO raw.accounts (username, instagram_id, full_name, is_business,
                                      follower_count, enabled, allow_personal)
            VALUES (:username, :instagram_id, :full_name, :is_business, :follower_count, :enabled,
                    :allow_personal)
            ON CONFLICT (username) DO UPDATE SET
                instagram_id = COALESCE(EXCLUDED.instagram_id, raw.accounts.instagram_id),
                full_name = COALESCE(EXCLUDED.full_name, raw.accounts.full_name),
                is_business = COALESCE(EXCLUDED.is_business, raw.accounts.is_business),
                follower_count = COALESCE(EXCLUDED.follower_count, raw.accounts.follower_count),
                allow_personal = raw.accounts.allow_personal OR EXCLUDED.allow_personal,
                updated_at = now()
            RETURNING id, allow_personal, (xmax = 0) AS created
            """
        ),
        {
            "username": username,
            "instagram_id": instagram_id,
            "full_name": full_name,
            "is_business": is_business,
            "follower_count": follower_count,
            "enabled": enabled,
            "allow_personal": allow_personal,
        },
    ).one()
    return AccountKey(row.id, row.allow_personal, row.created)


def quarantine(
    *,
    connection: Connection,
    source: str,
    input_ref: str,
    reason: str,
    account: str | None = None,
    shortcode: str | None = None,
    position: int | None = None,
    detail: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
) -> None:
    """Record a refused input; seeing it again updates the same row and counts the attempt."""
    connection.execute(
        text(
            """
            INSERT INTO raw.quarantine (source, input_ref, account, shortcode, position, reason,
                                        detail, sha256, bytes)
            VALUES (:source, :input_ref, :account, :shortcode, :position, :reason, :detail,
                    :sha256, :bytes)
            ON CONFLICT (source, input_ref) DO UPDATE SET
                reason = EXCLUDED.reason, detail = EXCLUDED.detail,
                attempts = raw.quarantine.attempts + 1, last_seen_at = now()
            """
        ),
        {
            "source": source,
            "input_ref": input_ref,
            "account": account,
            "shortcode": shortcode,
            "position": position,
            "reason": reason,
            "detail": detail,
            "sha256": sha256,
            "bytes": size,
        },
    )


_LOOKUP = text(
    """
    SELECT ARRAY(SELECT DISTINCT sha256 FROM raw.images WHERE sha256 = ANY(:shas)) AS known,
           EXISTS (SELECT 1 FROM raw.posts WHERE media_id = :media_id) AS post_exists
    """
)

_REMOVE_MISSING_SLIDES = text(
    """
    UPDATE raw.images SET removed_at = now()
    WHERE post_id = (SELECT id FROM raw.posts WHERE media_id = :media_id)
      AND removed_at IS NULL AND NOT (media_id = ANY(:media_ids))
    """
)


_POST_COLUMNS = """
    INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, caption, hashtags,
                           like_count, comment_count, media_type, location, node, source)
    VALUES (:shortcode, :media_id, :account_id, :taken_at, :caption, :hashtags,
            :like_count, :comment_count, :media_type, :location, :node, :source)
"""
_IMAGE_COLUMNS = """
    INSERT INTO raw.images (media_id, post_id, position, is_video_cover, object_key,
                            sha256, width, height, bytes, content_type)
    SELECT v.media_id, post.id, v.position, v.is_video_cover, v.object_key, v.sha256,
           v.width, v.height, v.bytes, v.content_type
    FROM post, (VALUES {values}) AS v(media_id, position, is_video_cover, object_key,
                                      sha256, width, height, bytes, content_type)
"""


def _image_values(image_count: int) -> str:
    return ",\n".join(
        f"(:media_id_{i}, :position_{i}, :is_video_cover_{i}, :object_key_{i}, :sha256_{i}, "
        f":width_{i}, :height_{i}, :bytes_{i}, :content_type_{i})"
        for i in range(image_count)
    )


def _with_json(statement: TextClause) -> TextClause:
    return statement.bindparams(bindparam("location", type_=JSONB), bindparam("node", type_=JSONB))


@lru_cache(maxsize=32)
def _insert_statement(image_count: int) -> TextClause:
    """A new post and its images, inserted only: no row for the post returned when it exists.

    Cheaper for Postgres than the upsert (a simpler plan, and no UPDATE trigger: `INSERT ... ON
    CONFLICT DO UPDATE` fires the tables' statement-level UPDATE triggers even when nothing
    conflicts). For posts the caller found new; `store_post` falls back to the upsert when the
    post turns out to be there after all. A picture id already stored (under another post: not
    something Instagram does) stays where it is.
    """
    images = (
        f""", new_images AS ({_IMAGE_COLUMNS.format(values=_image_values(image_count))}
            ON CONFLICT (media_id) DO NOTHING
            RETURNING 1
        )"""
        if image_count
        else ""
    )
    inserted_images = "(SELECT count(*) FROM new_images)" if image_count else "0"
    return _with_json(
        text(
            f"""
            WITH post AS ({_POST_COLUMNS}
                ON CONFLICT (media_id) DO NOTHING
                RETURNING id
            ){images}
            SELECT id, {inserted_images} AS images_inserted FROM post
            """
        )
    )


@lru_cache(maxsize=32)
def _upsert_statement(image_count: int) -> TextClause:
    """The post and its images in one statement (one round trip per post).

    A post whose fields did not change is not rewritten (`refreshed_at` keeps its value); its id
    then comes from the second branch of `post`.
    """
    images = (
        f"""
        , new_images AS ({_IMAGE_COLUMNS.format(values=_image_values(image_count))}
            ON CONFLICT (media_id) DO UPDATE SET
                position = EXCLUDED.position, removed_at = NULL
            WHERE (raw.images.position, raw.images.removed_at IS NULL)
                  IS DISTINCT FROM (EXCLUDED.position, true)
            RETURNING (xmax = 0) AS inserted
        )"""
        if image_count
        else ""
    )
    inserted_images = "(SELECT count(*) FROM new_images WHERE inserted)" if image_count else "0"
    statement = text(
        f"""
        WITH changed AS ({_POST_COLUMNS}
            ON CONFLICT (media_id) DO UPDATE SET
                caption = EXCLUDED.caption, hashtags = EXCLUDED.hashtags,
                like_count = EXCLUDED.like_count, comment_count = EXCLUDED.comment_count,
                location = EXCLUDED.location, node = EXCLUDED.node,
                refreshed_at = now(), unavailable_since = NULL
            WHERE (raw.posts.caption, raw.posts.hashtags, raw.posts.like_count,
                   raw.posts.comment_count, raw.posts.location, raw.posts.node,
                   raw.posts.unavailable_since IS NULL)
                  IS DISTINCT FROM
                  (EXCLUDED.caption, EXCLUDED.hashtags, EXCLUDED.like_count,
                   EXCLUDED.comment_count, EXCLUDED.location, EXCLUDED.node, true)
            RETURNING id, (xmax = 0) AS inserted, true AS updated
        ), post AS (
            SELECT id, inserted, updated FROM changed
            UNION ALL
            SELECT id, false, false FROM raw.posts
            WHERE media_id = :media_id AND NOT EXISTS (SELECT 1 FROM changed)
        ){images}
        SELECT id, inserted, updated AND NOT inserted AS updated,
               {inserted_images} AS images_inserted
        FROM post
        """
    )
    return _with_json(statement)


def post_row(post: CollectedPost, *, account_id: int) -> dict[str, Any]:
    """The `raw.posts` columns of a collected post."""
    return {
        "shortcode": post.shortcode,
        "media_id": post.media_id,
        "account_id": account_id,
        "taken_at": post.taken_at,
        "caption": post.caption,
        "hashtags": post.hashtags,
        "like_count": post.like_count,
        "comment_count": post.comment_count,
        "media_type": post.media_type,
        "location": post.location,
        "node": post.node,
        "source": post.source,
    }


@contextmanager
def single_statement(db: Engine | Connection) -> Iterator[Connection]:
    """A connection in autocommit for one statement, which is atomic by itself: no BEGIN and
    COMMIT round trips. `db` as for `transaction`. A held connection is switched at the driver
    (psycopg2's `autocommit`) and back: SQLAlchemy's isolation-level option costs as much Python
    as the round trips it saves."""
    if isinstance(db, Engine):
        with db.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
        return
    driver = db.connection.dbapi_connection
    driver.autocommit = True
    try:
        yield db
    finally:
        if not db.invalidated:  # a broken connection is the caller's to drop
            db.rollback()  # ends SQLAlchemy's record of a transaction; autocommit sends nothing
            driver.autocommit = False


@contextmanager
def transaction(db: Engine | Connection) -> Iterator[Connection]:
    """A transaction on `db`: a connection checked out of the engine for it, or the caller's own
    connection (a bulk load holds one per thread: no checkout, ping and return per post)."""
    if isinstance(db, Engine):
        with db.begin() as connection:
            yield connection
    else:
        with db.begin():
            yield db


@dataclass(frozen=True)
class PreparedPost:
    """A post whose pictures were read, hashed and checked: what `upload_pictures` uploads."""

    post: CollectedPost
    ready: list[_ReadyImage]
    refused: list[tuple[CollectedImage, str, str | None, int | None]]


def prepare_post(post: CollectedPost) -> PreparedPost:
    """Read, hash and check every picture of `post` (no database, no object store).

    The work is the picture check's decoding, in C without the GIL; a bulk load runs it for many
    posts on as many threads as cores before it uploads them.
    """
    ready: list[_ReadyImage] = []
    refused: list[tuple[CollectedImage, str, str | None, int | None]] = []
    for image in post.images:
        try:
            data = image.read()
        except FileNotFoundError:
            refused.append((image, "image file missing", None, None))
            continue
        except OSError as exc:
            refused.append((image, f"image could not be read: {exc}", None, None))
            continue
        sha = sha256_of(data)
        try:
            checked = check_image(data)
        except ImageRefused as exc:
            refused.append((image, exc.reason, sha, len(data)))
            continue
        ready.append(_ReadyImage(image, data, content_key(sha, checked.content_type), sha, checked))
    return PreparedPost(post, ready, refused)


def store_post(
    *,
    db: Engine | Connection,
    store: ObjectStore,
    account_id: int,
    account: str,
    post: CollectedPost,
    known_new: bool = False,
) -> StoreOutcome:
    """Check and store every picture of `post`, then write the post and its images (inserted when
    known to be new, upserted otherwise): `prepare_post`, `upload_pictures`, then `write_post`.

    `known_new` and `db` as for `upload_pictures`.
    """
    uploaded = upload_pictures(db=db, store=store, prepared=prepare_post(post), known_new=known_new)
    return write_post(db=db, uploaded=uploaded, account_id=account_id, account=account)


@dataclass(frozen=True)
class UploadedPost:
    """A prepared post whose pictures are in the object store: `write_post` writes its rows."""

    prepared: PreparedPost
    known_new: bool
    post_exists: bool
    objects_written: int


def upload_pictures(
    *, db: Engine | Connection, store: ObjectStore, prepared: PreparedPost, known_new: bool = False
) -> UploadedPost:
    """Upload the checked pictures of a prepared post that the object store may not have.

    `known_new`: the caller checked that no row has this post, so the lookup of already stored
    pictures is skipped and each picture is uploaded (an upload of content that is there already
    rewrites the same key with the same bytes, so nothing is duplicated). `db`: the engine, or a
    connection the caller holds outside a transaction. No transaction is open while the uploads
    run: the lookup is one statement of its own, done before them.
    """
    known: set[str] = set()
    post_exists = False
    if not known_new:
        with single_statement(db) as connection:
            lookup = connection.execute(
                _LOOKUP,
                {"shas": [r.sha256 for r in prepared.ready], "media_id": prepared.post.media_id},
            ).one()
            known, post_exists = set(lookup.known), lookup.post_exists
    written = 0
    for item in prepared.ready:
        if item.sha256 not in known:
            stored = store.put_content(
                item.data,
                content_type=item.checked.content_type,
                check_existing=False,
                sha256=item.sha256,
            )
            written += int(stored.created)
    return UploadedPost(prepared, known_new, post_exists, written)


def write_post(
    *, db: Engine | Connection, uploaded: UploadedPost, account_id: int, account: str
) -> StoreOutcome:
    """Write the rows of a post whose pictures are uploaded (objects first, rows second, so a row
    never points at a missing picture): the post and its images in one transaction, or one
    statement for a post known to be new; refused pictures go to the quarantine table."""
    prepared, known_new, post_exists = uploaded.prepared, uploaded.known_new, uploaded.post_exists
    post, ready, refused = prepared.post, prepared.ready, prepared.refused
    outcome = StoreOutcome(objects_written=uploaded.objects_written)
    parameters = post_row(post, account_id=account_id)
    for i, item in enumerate(ready):
        parameters.update(
            {
                f"media_id_{i}": item.image.media_id,
                f"position_{i}": item.image.position,
                f"is_video_cover_{i}": item.image.is_video_cover,
                f"object_key_{i}": item.key,
                f"sha256_{i}": item.sha256,
                f"width_{i}": item.checked.width,
                f"height_{i}": item.checked.height,
                f"bytes_{i}": len(item.data),
                f"content_type_{i}": item.checked.content_type,
            }
        )
    if known_new and not refused:
        # the whole write is one statement
        with single_statement(db) as connection:
            inserted = connection.execute(_insert_statement(len(ready)), parameters).one_or_none()
        if inserted is not None:
            outcome.post_id, outcome.post_inserted = inserted.id, True
            outcome.images_inserted = inserted.images_inserted
            return outcome
        # not new after all (another run stored it meanwhile): the upsert below settles it
    with transaction(db) as connection:
        if post_exists:
            # Slides the shop removed leave the post (their labels stay with them).
            connection.execute(
                _REMOVE_MISSING_SLIDES,
                {
                    "media_id": post.media_id,
                    "media_ids": list(post.all_media_ids) or [i.media_id for i in post.images],
                },
            )
        row = connection.execute(_upsert_statement(len(ready)), parameters).one()
        outcome.post_id = row.id
        outcome.post_inserted, outcome.post_updated = row.inserted, row.updated
        outcome.images_inserted = row.images_inserted
        for image, reason, sha, size in refused:
            quarantine(
                connection=connection,
                source=post.source,
                input_ref=image.source_ref,
                reason=reason,
                account=account,
                shortcode=post.shortcode,
                position=image.position,
                sha256=sha,
                size=size,
            )
            outcome.images_quarantined += 1
            outcome.refusals.append(f"{image.source_ref}: {reason}")
    return outcome


MEDIA_TYPES = {"GraphImage": "image", "GraphSidecar": "sidecar", "GraphVideo": "video"}


def child_media_ids(node: dict[str, Any]) -> list[int]:
    """The carousel children's own media ids, in the order Instagram shows them.

    Where they are depends on how instaloader got the post: GraphQL nodes (archives) keep them in
    `edge_sidecar_to_children`, the anonymous web timeline in `carousel_media`, the logged-in
    timeline in `iphone_struct.carousel_media`.
    """
    edges = (node.get("edge_sidecar_to_children") or {}).get("edges") or []
    ids = [edge.get("node", {}).get("id") for edge in edges]
    if ids and all(ids):
        return [int(i) for i in ids]
    for media in (
        node.get("carousel_media"),
        (node.get("iphone_struct") or {}).get("carousel_media"),
    ):
        if media:
            return [int(str(item.get("pk") or item.get("id")).split("_")[0]) for item in media]
    return []


def _count(node: dict[str, Any], *paths: tuple[str, ...]) -> int | None:
    """A count the node already holds; None rather than a request to Instagram for it."""
    for path in paths:
        value: Any = node
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int):
            return value
    return None


def from_instaloader(post: Any, *, images: Sequence[CollectedImage], source: str) -> CollectedPost:
    """A `CollectedPost` from an instaloader `Post` (live or loaded from an archive file)."""
    return CollectedPost(
        shortcode=post.shortcode,
        media_id=post.mediaid,
        taken_at=post.date_utc.replace(tzinfo=UTC),
        media_type=MEDIA_TYPES.get(post.typename, "image"),
        caption=post.caption,
        hashtags=post.caption_hashtags,
        # instaloader's `likes`/`comments` ask Instagram when the node lacks the field (logged in,
        # every post would cost a request); read what the node holds.
        like_count=_count(
            post._node,
            ("edge_media_preview_like", "count"),
            ("edge_liked_by", "count"),
            ("like_count",),
        ),
        comment_count=_count(
            post._node,
            ("edge_media_to_comment", "count"),
            ("edge_media_to_parent_comment", "count"),
            ("comment_count",),
            ("comments",),
        ),
        # Post.location would ask Instagram when the node lacks it; store what the node holds.
        location=post._node.get("location"),
        node=post._node,
        images=images,
        source=source,
    )

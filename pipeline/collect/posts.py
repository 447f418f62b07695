"""Storing collected posts: objects first, rows second, upserts keyed on Instagram's ids.

Live collection and archive import both store `CollectedPost`s through the same three steps, so a
post loads the same way whichever door it came through: `prepare_post`, `upload_pictures` and
`write_post` (`store_post` runs them for one post; the archive import runs each for a chunk of
posts before the next). Per post: every picture is checked and written to the
object store (content-addressed, so a picture already referenced is not uploaded again), then the
post and its images are written in one transaction (a post known to be new: one statement that
inserts, otherwise an upsert). A crash leaves at most an unreferenced
object, never a row without its picture, and a rerun changes nothing that did not change.

What the database would refuse is settled here, for both doors, so a post never stops a run:
text Postgres cannot hold (NUL, lone surrogates) is cleaned in every text and JSON field and the
cleaned fields recorded (`for_postgres`); a post whose ids are not Instagram's, or whose shortcode
is stored under another media id, is refused into the quarantine table with its reason; a
picture id another post holds stays with that post and the slide is quarantined. Slides are
matched by their own media id; positions and fields follow the newest listing (`listed_at`), and
an older listing imported later only adds the slides it has as removed ones. Accounts are
registered (and renamed) by `pipeline.accounts.upsert_account` before their posts are stored.

The statements `write_post` runs are in `post_statements`, the quarantine table's writer in
`quarantine`, and instaloader's posts are read into `CollectedPost`s by `instaloader_posts`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from pipeline.collect.images import CheckedImage, ImageRefused, check_image
from pipeline.collect.post_statements import (
    LOCK_POST,
    LOCK_SLIDES,
    LOOKUP,
    OTHER_POST_WITH_SHORTCODE,
    PICTURES_OF_OTHER_POSTS,
    PUT_SLIDES_IN_PLACE,
    REMOVE_MISSING_SLIDES,
    SEEN_LISTING,
    SET_MOVING_SLIDES_ASIDE,
    insert_statement,
    upsert_statement,
)
from pipeline.collect.quarantine import quarantine
from pipeline.db.postgres_text import for_postgres
from pipeline.db.session import collided
from pipeline.errors import CatalogueError
from pipeline.storage import ObjectStore, content_key, sha256_of

log = logging.getLogger(__name__)


SHORTCODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MEDIA_ID = 2**63 - 1  # a bigint column
# positions are set aside by post_statements.ASIDE while slides move; far above Instagram's 20
MAX_SLIDES = 1000
WRITE_ATTEMPTS = 5  # a post's write that collided with another writer runs again


class ImageDownloadFailed(CatalogueError, RuntimeError):
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
    # Every picture the post has now, in order; when a refresh fetches only new pictures,
    # `images` holds fewer, and the stored ones listed here must not be taken for removed slides.
    all_media_ids: tuple[int, ...] = ()
    # When this listing was seen (None: now): positions and fields follow the newest listing.
    listed_at: datetime | None = None
    # the post itself, for the quarantine (archive file, URL); None: source and shortcode
    source_ref: str | None = None

    @property
    def ref(self) -> str:
        return self.source_ref or f"{self.source}:{self.shortcode}"

    def listing(self) -> dict[int, int]:
        """Media id -> position of every picture the post has now."""
        if self.all_media_ids:
            return {media_id: n for n, media_id in enumerate(self.all_media_ids)}
        return {image.media_id: image.position for image in self.images}


@dataclass
class StoreOutcome:
    post_id: int | None = None
    post_inserted: bool = False
    post_updated: bool = False
    images_inserted: int = 0
    images_quarantined: int = 0
    objects_written: int = 0
    refusals: list[str] = field(default_factory=list)
    post_refused: str | None = None  # the whole post went to the quarantine table, why
    cleaned: tuple[str, ...] = ()  # fields stored with text Postgres refuses taken out


@dataclass(frozen=True)
class _ReadyImage:
    image: CollectedImage
    data: bytes
    key: str
    sha256: str
    checked: CheckedImage


def post_row(
    post: CollectedPost, *, account_id: int, cleaned: Sequence[str] = ()
) -> dict[str, Any]:
    """The `raw.posts` columns of a collected post (its text already `for_postgres`)."""
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
        "listed_at": post.listed_at or datetime.now(UTC),
        "cleaned": list(cleaned) or None,
        "older": False,
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
    """A post whose pictures were read, hashed and checked: what `upload_pictures` uploads.

    `post` holds its text as stored (`for_postgres`), `cleaned` the fields that changed;
    `refused` a post that is not stored at all (why), `refused_images` pictures that are not."""

    post: CollectedPost
    ready: list[_ReadyImage]
    refused_images: list[tuple[CollectedImage, str, str | None, int | None]]
    refused: str | None = None
    cleaned: tuple[str, ...] = ()


def _identity_problem(post: CollectedPost) -> str | None:
    """Why the post's ids cannot be Instagram's (they key every row), or None."""
    if not isinstance(post.shortcode, str) or not SHORTCODE.match(post.shortcode):
        return f"shortcode {post.shortcode!r} is not an Instagram shortcode"
    listed = [post.media_id, *(image.media_id for image in post.images), *post.all_media_ids]
    if not all(isinstance(i, int) and 0 < i <= MAX_MEDIA_ID for i in listed):
        return "a media id is not an Instagram media id (a positive 64-bit integer)"
    positions = [image.position for image in post.images]
    if len(set(positions)) != len(positions) or not all(0 <= p < MAX_SLIDES for p in positions):
        return f"slide positions {positions} are not distinct positions below {MAX_SLIDES}"
    ids = [image.media_id for image in post.images]
    if len(set(ids)) != len(ids) or len(set(post.all_media_ids)) != len(post.all_media_ids):
        return "the carousel lists one picture media id twice"
    return None


def _cleaned_post(post: CollectedPost) -> tuple[CollectedPost, tuple[str, ...]]:
    """The post with every text and JSON field as Postgres can store it, and the fields that
    changed."""
    values, cleaned = {}, []
    for name in ("caption", "hashtags", "location", "node"):
        value, changed = for_postgres(getattr(post, name))
        if changed:
            values[name] = value
            cleaned.append(name)
    if not cleaned:
        return post, ()
    log.warning("post %s: %s held text Postgres refuses; stored cleaned", post.ref, cleaned)
    return replace(post, **values), tuple(cleaned)


def prepare_post(post: CollectedPost) -> PreparedPost:
    """Check the post's ids and clean its text, then read, hash and check every picture of it
    (no database, no object store).

    The work is the picture check's decoding, in C without the GIL; a bulk load runs it for many
    posts on as many threads as cores before it uploads them.
    """
    problem = _identity_problem(post)
    if problem is not None:
        return PreparedPost(post, [], [], refused=problem)
    post, cleaned = _cleaned_post(post)
    ready: list[_ReadyImage] = []
    refused: list[tuple[CollectedImage, str, str | None, int | None]] = []
    for image in post.images:
        try:
            data = image.read()
        except ImageRefused as exc:  # refused from its size, before reading it
            refused.append((image, exc.reason, None, None))
            continue
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
    return PreparedPost(post, ready, refused, cleaned=cleaned)


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
    if prepared.refused is not None:
        return UploadedPost(prepared, known_new, post_exists, 0)
    if not known_new:
        with single_statement(db) as connection:
            lookup = connection.execute(
                LOOKUP,
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
    statement for a post known to be new; refused pictures and posts go to the quarantine table.

    Never raises for what the post holds: a post the database refuses all the same (a constraint
    no check here foresaw) is quarantined with the database's words, and the run goes on.
    """
    prepared = uploaded.prepared
    post_ref = prepared.post.ref
    if prepared.refused is not None:
        return _refuse_post(db, prepared.post, account=account, reason=prepared.refused)
    try:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return _write_rows(db, uploaded, account_id=account_id, account=account)
            except OperationalError as exc:
                # another writer held the post's pictures (a label job, a second import): the
                # write was rolled back whole and runs again
                if attempt == WRITE_ATTEMPTS or exc.connection_invalidated or not collided(exc):
                    raise
                log.info("post %s collided with another writer; writing it again", post_ref)
    except (IntegrityError, DataError) as exc:
        if exc.connection_invalidated:
            raise
        detail = getattr(exc.orig, "diag", None)
        message = getattr(detail, "message_primary", None) or str(exc.orig)
        return _refuse_post(
            db, prepared.post, account=account, reason=f"the database refused the post: {message}"
        )


def _refuse_post(
    db: Engine | Connection, post: CollectedPost, *, account: str, reason: str
) -> StoreOutcome:
    with transaction(db) as connection:
        outcome = _quarantine_post(
            connection, post, account=account, reason=reason, outcome=StoreOutcome()
        )
    log.warning("post %s refused: %s", post.ref, reason)
    return outcome


def _quarantine_post(
    connection: Connection, post: CollectedPost, *, account: str, reason: str,
    outcome: StoreOutcome,
) -> StoreOutcome:  # fmt: skip
    """Record a post refused whole, in the caller's transaction, and say so in `outcome`."""
    quarantine(
        connection=connection,
        source=post.source,
        input_ref=post.ref,
        reason=reason,
        account=account,
        shortcode=post.shortcode if isinstance(post.shortcode, str) else None,
    )
    outcome.post_refused = reason
    outcome.refusals.append(f"{post.ref}: {reason}")
    return outcome


def _image_parameters(ready: Sequence[_ReadyImage]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
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
    return parameters


def _write_rows(
    db: Engine | Connection, uploaded: UploadedPost, *, account_id: int, account: str
) -> StoreOutcome:
    prepared, known_new = uploaded.prepared, uploaded.known_new
    post, ready, refused = prepared.post, list(prepared.ready), list(prepared.refused_images)
    outcome = StoreOutcome(objects_written=uploaded.objects_written, cleaned=prepared.cleaned)
    parameters = post_row(post, account_id=account_id, cleaned=prepared.cleaned)
    if known_new and not refused:
        # the whole write is one statement
        with single_statement(db) as connection:
            inserted = connection.execute(
                insert_statement(len(ready)), {**parameters, **_image_parameters(ready)}
            ).one_or_none()
        if inserted is not None and inserted.images_inserted == len(ready):
            outcome.post_id, outcome.post_inserted = inserted.id, True
            outcome.images_inserted = inserted.images_inserted
            return outcome
        # Not new after all (another run stored it meanwhile), its shortcode taken, or a picture
        # id held by another post: the checked upsert below settles it.
        if inserted is not None:
            outcome.post_inserted, outcome.images_inserted = True, inserted.images_inserted
    with transaction(db) as connection:
        taken = connection.execute(
            OTHER_POST_WITH_SHORTCODE, {"shortcode": post.shortcode, "media_id": post.media_id}
        ).scalar_one_or_none()
        if taken is not None:
            # Instagram's shortcode is its media id written in base 64: two media ids for one
            # shortcode is a damaged or forged file, and the stored post is the one kept.
            reason = (
                f"shortcode {post.shortcode} is already stored under media id {taken} (this post "
                f"says {post.media_id}): not stored; purge the stored post if this one is right"
            )
            return _quarantine_post(connection, post, account=account, reason=reason,
                                    outcome=outcome)  # fmt: skip
        held = dict(
            connection.execute(
                PICTURES_OF_OTHER_POSTS,
                {"media_ids": [item.image.media_id for item in ready], "media_id": post.media_id},
            ).all()
        )
        if held:
            # A picture belongs to one post (Instagram never moves one): it stays where it is.
            for item in [item for item in ready if item.image.media_id in held]:
                ready.remove(item)
                refused.append(
                    (
                        item.image,
                        f"picture media id {item.image.media_id} is already stored under post "
                        f"{held[item.image.media_id]}: kept there, not stored again here",
                        item.sha256,
                        len(item.data),
                    )
                )
        stored = connection.execute(LOCK_POST, {"media_id": post.media_id}).one_or_none()
        if stored is not None:
            # the post's pictures at once, in id order, before any slide moves: as every label
            # writer and the marketplace refresh take them, so none of them waits crosswise
            connection.execute(LOCK_SLIDES, {"post_id": stored.id})
        listed_at = parameters["listed_at"]
        older = stored is not None and stored.listed_at is not None and listed_at < stored.listed_at
        if stored is not None and not older:
            _place_slides(connection, post_id=stored.id, listing=post.listing())
            if stored.listed_at is None or listed_at > stored.listed_at:
                connection.execute(SEEN_LISTING, {"post_id": stored.id, "listed_at": listed_at})
        parameters.update(_image_parameters(ready), older=older)
        row = connection.execute(upsert_statement(len(ready)), parameters).one()
        outcome.post_id = row.id
        outcome.post_inserted = outcome.post_inserted or row.inserted
        outcome.post_updated = row.updated
        outcome.images_inserted += row.images_inserted
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


def _place_slides(connection: Connection, *, post_id: int, listing: dict[int, int]) -> None:
    """Put the stored slides of a post where `listing` (media id -> position) has them: slides
    it lacks are marked removed (their labels stay with them), the others moved to their
    positions without two live slides ever sharing one."""
    media_ids, positions = list(listing), list(listing.values())
    connection.execute(REMOVE_MISSING_SLIDES, {"post_id": post_id, "media_ids": media_ids})
    moved = connection.execute(
        SET_MOVING_SLIDES_ASIDE,
        {"post_id": post_id, "media_ids": media_ids, "positions": positions},
    ).rowcount
    if moved:
        connection.execute(PUT_SLIDES_IN_PLACE, {"post_id": post_id})

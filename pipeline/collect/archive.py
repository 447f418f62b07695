"""Archive import: folders that instaloader already downloaded, loaded as live collection would.

Layout (instaloader's defaults): `<root>/<profile>/<profile>_<id>.json.xz` (the profile),
`<date>_UTC.json.xz` or `.json` (a post, read with instaloader's own `load_structure_from_file`),
`<date>_UTC.jpg` (a single picture or a video's cover) and `<date>_UTC_1.jpg`, `_2.jpg`... (a
carousel's pictures). `<root>` may also be one profile folder itself.

Names from the archive are untrusted: folders must be Instagram usernames, files are only ever
found by listing a folder, and a file (or link) that resolves outside the archive is refused. No
request ever goes to Instagram: metadata missing from a file is a refusal, not a download.
Sizes are untrusted too: a post or profile file that expands beyond `MAX_POST_FILE_BYTES` is
refused without being expanded further, and a picture's size is known before it is read (above
the picture check's `MAX_BYTES` it is refused unread).

A post belongs to the account its own `owner` id names, whichever folder holds it; one naming an
Instagram id no stored account has is refused. A profile file's modification time (instaloader
writes it when it downloads the profile) is when that username was seen, and a post file's when
its listing was: a renamed shop's older folder adds its posts to the account without renaming it
back, and an older download of a post never moves the slides a newer one placed.
"""

from __future__ import annotations

import itertools
import json
import logging
import lzma
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from instaloader.exceptions import InstaloaderException
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DataError, DBAPIError

from pipeline.accounts import (
    AccountConflict,
    AccountError,
    disable_personal,
    normalise_username,
    record_import,
    upsert_account,
)
from pipeline.collect.images import MAX_BYTES, ImageRefused
from pipeline.collect.posts import (
    MAX_MEDIA_ID,
    CollectedImage,
    CollectedPost,
    PreparedPost,
    StoreOutcome,
    UploadedPost,
    child_media_ids,
    from_instaloader,
    prepare_post,
    quarantine,
    upload_pictures,
    write_post,
)
from pipeline.errors import CatalogueError
from pipeline.storage import ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")

SOURCE = "archive"
POST_FILE = re.compile(r"^(?P<stem>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC)\.json(\.xz)?$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Posts read, checked, then stored together (first chunk, most): fewer chunks leave the storing
# threads idle less often at the end of a stage (1,000 against 250: 0.6 against 2.2 idle
# core-seconds in the uploads of 10,000 pictures); the bytes held are capped too. The first
# chunk, sized before any picture was seen, is small enough for pictures of up to 1.5 MB.
CHUNK_POSTS = (50, 1000)
CHUNK_BYTES = 96 * 1024 * 1024
# picture checks: C code without the GIL, one thread per core this process may use
CHECKING_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
# The most a post or profile file may expand to: instaloader's largest real post files are tens
# of KB; a 157 KB `.json.xz` can expand to 1 GiB (and took 2.3 GB of memory to read).
MAX_POST_FILE_BYTES = 16 * 1024 * 1024
# What a damaged or hostile post file can raise while instaloader reads it.
_UNREADABLE = (
    InstaloaderException, KeyError, ValueError, TypeError, OSError, EOFError, lzma.LZMAError,
    AttributeError, RecursionError,
)  # fmt: skip


class PostFileTooBig(CatalogueError, ValueError):
    """A post or profile file expands beyond MAX_POST_FILE_BYTES."""


class ArchiveError(CatalogueError, ValueError):
    """The archive folder cannot be imported at all; the message says why."""


@dataclass
class ImportSummary:
    accounts: list[str] = field(default_factory=list)
    skipped_accounts: dict[str, str] = field(default_factory=dict)
    posts_seen: int = 0
    posts_new: int = 0
    posts_updated: int = 0
    posts_refused: int = 0  # post files refused whole (each a row in raw.quarantine)
    posts_cleaned: int = 0  # posts stored with text Postgres refuses taken out
    images_new: int = 0
    objects_written: int = 0
    quarantined: int = 0  # refused post files and pictures
    seconds: float = 0.0

    @property
    def posts_unchanged(self) -> int:
        return self.posts_seen - self.posts_new - self.posts_updated - self.posts_refused

    def add(self, outcome: StoreOutcome) -> None:
        self.posts_seen += 1
        self.posts_new += int(outcome.post_inserted)
        self.posts_updated += int(outcome.post_updated)
        self.posts_refused += int(outcome.post_refused is not None)
        self.posts_cleaned += int(bool(outcome.cleaned))
        self.images_new += outcome.images_inserted
        self.objects_written += outcome.objects_written
        self.quarantined += outcome.images_quarantined + int(outcome.post_refused is not None)


@dataclass(frozen=True)
class _ArchivePost:
    account: str
    account_id: int
    path: Path
    instagram_id: int | None = None  # the folder's account's


@dataclass(frozen=True)
class _LoadedPost:
    """A post file read: the post, or why it is refused; `item` names the account it goes to."""

    item: _ArchivePost
    post: CollectedPost | None
    refused: str | None = None


Progress = Callable[[ImportSummary], None]


def offline_context():
    """An instaloader context that refuses to go online: archives are read, never completed."""
    import instaloader
    import requests
    from requests.adapters import BaseAdapter

    class _Offline(BaseAdapter):
        def send(self, request, **kwargs):
            raise requests.ConnectionError(
                f"archive import never contacts Instagram (wanted {request.url})"
            )

        def close(self) -> None:
            pass

    context = instaloader.Instaloader(
        quiet=True, sleep=False, max_connection_attempts=1, iphone_support=False
    ).context
    for prefix in ("https://", "http://"):
        context._session.mount(prefix, _Offline())
    return context


def import_archive(
    root: Path,
    *,
    engine: Engine,
    store: ObjectStore,
    workers: int = 16,
    enable_accounts: bool = False,
    allow_personal: bool = False,
    progress: Progress | None = None,
) -> ImportSummary:
    """Load every profile folder under `root`; a rerun completes an interrupted one."""
    root = Path(root)
    if not root.is_dir():
        raise ArchiveError(f"archive folder {root} does not exist or is not a folder")
    root = root.resolve()
    started = time.monotonic()
    summary = ImportSummary()
    context = offline_context()

    def register(folder: Path) -> list[_ArchivePost]:
        account = _register_account(
            folder,
            root=root,
            engine=engine,
            context=context,
            enable=enable_accounts,
            allow_personal=allow_personal,
            summary=summary,
        )
        if account is None:
            return []
        name, account_id, instagram_id = account
        return [
            _ArchivePost(name, account_id, path, instagram_id)
            for path in sorted(folder.iterdir())
            if POST_FILE.match(path.name)
        ]

    connections = _ThreadConnections(engine)
    with (
        connections,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        ThreadPoolExecutor(max_workers=CHECKING_THREADS) as checking,
    ):
        posts = [post for found in pool.map(register, _profile_folders(root)) for post in found]
        posts = _current_names(engine, posts)
        summary.accounts = sorted({post.account for post in posts})

        def on_held_connection(step: Callable[[Engine | Connection], T]) -> T:
            try:
                return step(connections.get())
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # the held connection broke (Postgres restarted, or the backend was ended): once
                # more on a new one; uploading or writing a post again duplicates nothing
                connections.drop()
                return step(connections.get())

        def prepare(loaded: _LoadedPost) -> PreparedPost | None:
            return None if loaded.post is None else prepare_post(loaded.post)

        def upload(prepared: PreparedPost | None, stored_ids: set[int]) -> UploadedPost | None:
            if prepared is None:
                return None
            known_new = prepared.post.media_id not in stored_ids
            return on_held_connection(
                lambda db: upload_pictures(
                    db=db, store=store, prepared=prepared, known_new=known_new
                )
            )

        def write(loaded: _LoadedPost, uploaded: UploadedPost | None) -> StoreOutcome:
            item = loaded.item
            if uploaded is None:
                return _refuse_file(loaded, root=root, engine=engine)
            return on_held_connection(
                lambda db: write_post(
                    db=db, uploaded=uploaded, account_id=item.account_id, account=item.account
                )
            )

        # A chunk of posts at a time, in stages that do not overlap, each on the threads it
        # needs: the post files are read in this thread (JSON: Python under the GIL, which more
        # threads only slow down); the pictures checked on one thread per core (decoding in C,
        # without the GIL); then uploaded by the storing threads, then the rows written by them.
        # Run side by side, the checks' decoding took the S3 server's cores, every thread waited
        # longer for the GIL, and fewer uploads were in flight, which cost more than the overlap
        # saved. Objects first, rows second still holds per post. One query per chunk tells which
        # posts are new: their pictures are uploaded without a lookup. Memory holds one chunk's
        # pictures: a chunk is sized from the bytes per post seen so far (`_chunk_size`).
        start, size = 0, CHUNK_POSTS[0]
        while start < len(posts):
            chunk = posts[start : start + size]
            loaded = _owners(
                engine, [_load_post(item, root=root, context=context) for item in chunk]
            )
            stored_ids = _stored_post_ids(engine, [p.post.media_id for p in loaded if p.post])
            prepared = list(checking.map(prepare, loaded))
            uploaded = list(pool.map(upload, prepared, itertools.repeat(stored_ids)))
            for outcome in pool.map(write, loaded, uploaded):
                _count(outcome, summary, progress)
            start += len(chunk)
            size = _chunk_size(prepared)
            # let this chunk's pictures go before the next chunk's are read
            del loaded, prepared, uploaded

    _record_success(engine, summary.accounts)
    if summary.posts_new + summary.images_new >= 1000:
        # fresh statistics for the moderation queries that follow a bulk load (autovacuum gets
        # there too, minutes later)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE raw.posts, raw.images"))
    summary.seconds = time.monotonic() - started
    return summary


class _ThreadConnections:
    """One connection per storing thread, held for the whole import: a post costs one
    transaction, not a pool checkout, a liveness ping and a return as well. Closed at the end.

    At most the engine's pool size less one are held (one stays for the reading thread); threads
    beyond that (`--workers` above it) take the engine, a checkout per post, as live collection.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        size = getattr(engine.pool, "size", None)  # QueuePool; other pools have no fixed size
        self.limit = max(0, size() - 1) if callable(size) else None
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._lock = threading.Lock()

    def get(self) -> Engine | Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            with self._lock:
                if self.limit is not None and len(self._opened) >= self.limit:
                    return self.engine
                connection = self._local.connection = self.engine.connect()
                self._opened.append(connection)
        return connection

    def drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                self._opened.remove(connection)
            connection.close()

    def __enter__(self) -> _ThreadConnections:
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


def _count(outcome: StoreOutcome, summary: ImportSummary, progress: Progress | None) -> None:
    summary.add(outcome)
    if progress and summary.posts_seen % 500 == 0:
        progress(summary)


def _chunk_size(prepared: list[PreparedPost | None]) -> int:
    """Posts in the next chunk: as many as CHUNK_BYTES of pictures holds at the last chunk's
    bytes per post (the most, 1,000 posts, at 1080x1350's 65 KB a picture; fewer for bigger)."""
    held = sum(len(image.data) for post in prepared if post for image in post.ready)
    per_post = held / max(1, len(prepared))
    return max(1, min(CHUNK_POSTS[1], int(CHUNK_BYTES / max(per_post, 1.0))))


def _profile_folders(root: Path) -> Iterator[Path]:
    if any(POST_FILE.match(p.name) for p in root.iterdir()):
        yield root
        return
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            yield entry


def _inside(path: Path, root: Path) -> bool:
    """Is `path` a regular file inside `root`? Folders come from listing `root` (never links), so
    only a link can lead outside; only links are resolved (resolving every file costs)."""
    if path.is_symlink():
        try:
            path.resolve().relative_to(root)
        except ValueError:
            return False
    return path.is_file()


def _register_account(
    folder: Path,
    *,
    root: Path,
    engine: Engine,
    context,
    enable: bool,
    allow_personal: bool,
    summary: ImportSummary,
) -> tuple[str, int, int | None] | None:
    from instaloader.structures import Profile, load_structure

    relative = str(folder.relative_to(root)) or folder.name
    try:
        username = normalise_username(folder.name)
    except AccountError as exc:
        with engine.begin() as connection:
            quarantine(
                connection=connection,
                source=SOURCE,
                input_ref=relative,
                reason="folder name is not an Instagram username",
                detail=str(exc),
            )
        summary.skipped_accounts[folder.name] = "folder name is not an Instagram username"
        return None

    facts: dict = {}
    for candidate in sorted(folder.glob(f"{folder.name}_*.json*")):
        if not _inside(candidate, root):
            continue
        try:
            profile = load_structure(context, _read_json(candidate))
            if isinstance(profile, Profile):
                facts = _profile_facts(profile)
                # instaloader wrote the file when it downloaded the profile: the name was seen
                # then (which of a renamed shop's two folders is the newer)
                facts["seen_at"] = _modified(candidate)
                break
        except _UNREADABLE as exc:
            log.warning("profile file %s unreadable: %s", candidate, exc)

    try:
        with engine.begin() as connection:
            key = upsert_account(
                connection=connection,
                username=username,
                enabled=enable,
                allow_personal=allow_personal,
                **facts,
            )
    except (AccountConflict, DataError) as exc:
        # a name that changed hands, or a profile fact no check here foresaw: the folder waits
        reason = (
            exc.reason
            if isinstance(exc, AccountConflict)
            else f"the database refused the profile: {getattr(exc.orig, 'pgerror', exc.orig)}"
        )
        with engine.begin() as connection:
            quarantine(connection=connection, source=SOURCE, input_ref=relative,
                       reason=reason[:500], account=username)  # fmt: skip
        summary.skipped_accounts[username] = reason
        return None
    account_id, username = key.id, key.username
    with engine.begin() as connection:
        if facts.get("is_business") is False and not key.allow_personal:
            reason = (
                "personal (non-business) account: not collected; "
                f"`catalogue accounts add {username} --allow-personal` allows it"
            )
            disable_personal(connection=connection, account_id=account_id, reason=reason)
            summary.skipped_accounts[username] = reason
            return None
    return username, account_id, facts.get("instagram_id")


def _profile_facts(profile) -> dict:
    """What a profile file says of its account, each value of the type and range its column
    holds: an id that cannot be Instagram's makes the file unreadable (the folder is imported as
    one without a profile); any other odd value is left out."""
    instagram_id = profile.userid
    if isinstance(instagram_id, bool) or not 0 < instagram_id <= MAX_MEDIA_ID:
        raise ValueError(f"profile id {instagram_id} is not an Instagram id")

    def typed(value, kind: type, *, most: int | None = None):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return None
        return value if most is None or 0 <= value <= most else None

    return {
        "instagram_id": instagram_id,
        "full_name": typed(profile.full_name, str),
        "is_business": typed(profile.is_business_account, bool),
        "follower_count": typed(profile.followers, int, most=MAX_MEDIA_ID),
    }


def _modified(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _read_json(path: Path):
    """The JSON of a post or profile file (`.json`, or `.json.xz` expanded a piece at a time),
    refused once it would expand beyond MAX_POST_FILE_BYTES."""
    limit = MAX_POST_FILE_BYTES
    too_big = PostFileTooBig(
        f"post file expands to more than {limit:,} bytes (MAX_POST_FILE_BYTES): refused unread"
    )
    with path.open("rb") as handle:
        if not path.name.endswith(".xz"):
            data = handle.read(limit + 1)
            if len(data) > limit:
                raise too_big
            return json.loads(data)
        decompressor, expanded = lzma.LZMADecompressor(), bytearray()
        while not decompressor.eof:
            chunk = b""
            if decompressor.needs_input:
                chunk = handle.read(64 * 1024)
                if not chunk:
                    raise EOFError("the compressed file ends before its data does")
            expanded += decompressor.decompress(chunk, max_length=limit + 1 - len(expanded))
            if len(expanded) > limit:
                raise too_big
    return json.loads(expanded)


def _load_post(item: _ArchivePost, *, root: Path, context) -> _LoadedPost:
    """The post in a file, or why it cannot be read."""
    try:
        return _LoadedPost(item, _read_post(item, root=root, context=context))
    except PostFileTooBig as exc:
        reason = str(exc)
    except _UNREADABLE as exc:
        reason = f"unreadable post file: {type(exc).__name__}: {exc}"
    return _LoadedPost(item, None, reason[:500])


def _read_post(item: _ArchivePost, *, root: Path, context) -> CollectedPost:
    from instaloader.structures import Post, load_structure

    if not _inside(item.path, root):
        raise ValueError("the file resolves outside the archive folder")
    post = load_structure(context, _read_json(item.path))
    if not isinstance(post, Post):
        raise ValueError(f"holds a {type(post).__name__}, not a Post")
    stem = POST_FILE.match(item.path.name)["stem"]
    images = _images(post, item.path.parent, stem, root)
    return replace(
        from_instaloader(post, images=images, source=SOURCE),
        # instaloader wrote the file when it listed the post
        listed_at=_modified(item.path),
        source_ref=str(item.path.relative_to(root)),
    )


def _owner_id(post: CollectedPost) -> int | None:
    owner = post.node.get("owner")
    try:
        return int(owner["id"]) if isinstance(owner, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _owners(engine: Engine, loaded: list[_LoadedPost]) -> list[_LoadedPost]:
    """Each post with the account its own owner id names, whichever folder holds it: a stored
    account of that id, else refused (a folder whose account has no known id keeps its posts)."""
    foreign = {
        owner
        for entry in loaded
        if entry.post is not None
        and (owner := _owner_id(entry.post)) is not None
        and owner != entry.item.instagram_id
    }
    if not foreign:
        return loaded
    with engine.connect() as connection:
        accounts = {
            row.instagram_id: row
            for row in connection.execute(
                text(
                    # an account the import itself would refuse (a personal one not allowed,
                    # one deleted) takes no posts through another folder either
                    "SELECT id, username, instagram_id FROM raw.accounts "
                    "WHERE instagram_id = ANY(:ids) AND status NOT IN ('personal', 'deleted') "
                    "AND (is_business IS NOT false OR allow_personal)"
                ),
                {"ids": sorted(foreign)},
            )
        }
    owned = []
    for entry in loaded:
        owner = None if entry.post is None else _owner_id(entry.post)
        item = entry.item
        if owner is None or owner == item.instagram_id:
            owned.append(entry)
        elif owner in accounts:
            account = accounts[owner]
            owned.append(
                replace(entry, item=replace(item, account=account.username,
                                            account_id=account.id, instagram_id=owner))
            )  # fmt: skip
        elif item.instagram_id is None:
            owned.append(entry)
        else:
            reason = (
                f"the post belongs to Instagram id {owner}, not to @{item.account} (id "
                f"{item.instagram_id}), and no account has that id: not imported; import its "
                "owner's folder (with its profile file) and rerun"
            )
            owned.append(replace(entry, post=None, refused=reason))
    return owned


def _current_names(engine: Engine, posts: list[_ArchivePost]) -> list[_ArchivePost]:
    """The posts with their accounts' names and ids as stored once every folder is registered
    (a renamed shop's two folders are one account, under its newer name)."""
    ids = sorted({post.account_id for post in posts})
    with engine.connect() as connection:
        rows = {
            row.id: row
            for row in connection.execute(
                text("SELECT id, username, instagram_id FROM raw.accounts WHERE id = ANY(:ids)"),
                {"ids": ids},
            )
        }
    return [
        replace(post, account=rows[post.account_id].username,
                instagram_id=rows[post.account_id].instagram_id)
        for post in posts
    ]  # fmt: skip


def _refuse_file(loaded: _LoadedPost, *, root: Path, engine: Engine) -> StoreOutcome:
    item = loaded.item
    relative = str(item.path.relative_to(root))
    reason = loaded.refused or "unreadable post file"
    with engine.begin() as connection:
        quarantine(connection=connection, source=SOURCE, input_ref=relative, reason=reason,
                   account=item.account)  # fmt: skip
    outcome = StoreOutcome(post_refused=reason)
    outcome.refusals.append(f"{relative}: {reason}")
    return outcome


def _stored_post_ids(engine: Engine, media_ids: list[int]) -> set[int]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT media_id FROM raw.posts WHERE media_id = ANY(:ids)"),
                {"ids": media_ids},
            ).scalars()
        )


def _images(post, folder: Path, stem: str, root: Path) -> list[CollectedImage]:
    """The picture files of a post: `<stem>.jpg`, or `<stem>_1.jpg`... for a carousel."""
    if post.typename == "GraphSidecar":
        media_ids = child_media_ids(post._node)
        if not media_ids:
            raise KeyError("carousel without edge_sidecar_to_children")
        names = [f"{stem}_{index}" for index in range(1, len(media_ids) + 1)]
    else:
        media_ids, names = [post.mediaid], [stem]
    return [
        CollectedImage(
            media_id=media_id,
            position=position,
            read=_reader(folder, name, root),
            source_ref=str((folder / name).relative_to(root)),
            is_video_cover=post.typename == "GraphVideo",
        )
        for position, (media_id, name) in enumerate(zip(media_ids, names, strict=True))
    ]


def _reader(folder: Path, name: str, root: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{name}{suffix}"
            if path.exists() or path.is_symlink():
                if not _inside(path, root):
                    raise OSError("the file resolves outside the archive folder")
                return _read_picture(path)
        raise FileNotFoundError(f"{name}.jpg")

    return read


def _read_picture(path: Path) -> bytes:
    """A picture file's bytes, its size known first: one beyond the picture check's limit is
    refused unread (a sparse 1 GiB file costs nothing)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(MAX_BYTES + 1) if size <= MAX_BYTES else b""
    if size > MAX_BYTES or len(data) > MAX_BYTES:
        raise ImageRefused(f"file too big: {max(size, len(data)):,} bytes > limit {MAX_BYTES:,}")
    return data


def _record_success(engine: Engine, accounts: list[str]) -> None:
    if not accounts:
        return
    with engine.begin() as connection:
        record_import(connection=connection, usernames=accounts)

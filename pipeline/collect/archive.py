"""Archive import: folders that instaloader already downloaded, loaded as live collection would.

Layout (instaloader's defaults): `<root>/<profile>/<profile>_<id>.json.xz` (the profile),
`<date>_UTC.json.xz` or `.json` (a post, read with instaloader's own `load_structure_from_file`),
`<date>_UTC.jpg` (a single picture or a video's cover) and `<date>_UTC_1.jpg`, `_2.jpg`... (a
carousel's pictures). `<root>` may also be one profile folder itself.

Names from the archive are untrusted: folders must be Instagram usernames, files are only ever
found by listing a folder, and a file (or link) that resolves outside the archive is refused. No
request ever goes to Instagram: metadata missing from a file is a refusal, not a download.
"""

from __future__ import annotations

import itertools
import logging
import lzma
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from instaloader.exceptions import InstaloaderException
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from pipeline.accounts import AccountError, normalise_username
from pipeline.collect.posts import (
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
    upsert_account,
    write_post,
)
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
# What a damaged or hostile post file can raise while instaloader reads it.
_UNREADABLE = (
    InstaloaderException, KeyError, ValueError, TypeError, OSError, EOFError, lzma.LZMAError,
)  # fmt: skip


class ArchiveError(ValueError):
    """The archive folder cannot be imported at all; the message says why."""


@dataclass
class ImportSummary:
    accounts: list[str] = field(default_factory=list)
    skipped_accounts: dict[str, str] = field(default_factory=dict)
    posts_seen: int = 0
    posts_new: int = 0
    posts_updated: int = 0
    images_new: int = 0
    objects_written: int = 0
    quarantined: int = 0
    seconds: float = 0.0

    @property
    def posts_unchanged(self) -> int:
        return self.posts_seen - self.posts_new - self.posts_updated

    def add(self, outcome: StoreOutcome) -> None:
        self.posts_seen += 1
        self.posts_new += int(outcome.post_inserted)
        self.posts_updated += int(outcome.post_updated)
        self.images_new += outcome.images_inserted
        self.objects_written += outcome.objects_written
        self.quarantined += outcome.images_quarantined


@dataclass(frozen=True)
class _ArchivePost:
    account: str
    account_id: int
    path: Path


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
        name, account_id = account
        return [
            _ArchivePost(name, account_id, path)
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

        def prepare(collected: CollectedPost | None) -> PreparedPost | None:
            return None if collected is None else prepare_post(collected)

        def upload(prepared: PreparedPost | None, stored_ids: set[int]) -> UploadedPost | None:
            if prepared is None:
                return None
            known_new = prepared.post.media_id not in stored_ids
            return on_held_connection(
                lambda db: upload_pictures(
                    db=db, store=store, prepared=prepared, known_new=known_new
                )
            )

        def write(item: _ArchivePost, uploaded: UploadedPost | None) -> StoreOutcome:
            if uploaded is None:
                return _refuse_post(item, root=root, engine=engine, context=context)
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
            loaded = [_load_post(item, root=root, context=context) for item in chunk]
            stored_ids = _stored_post_ids(engine, [p.media_id for p in loaded if p is not None])
            prepared = list(checking.map(prepare, loaded))
            uploaded = list(pool.map(upload, prepared, itertools.repeat(stored_ids)))
            for outcome in pool.map(write, chunk, uploaded):
                _count(outcome, summary, progress)
            start += len(chunk)
            size = _chunk_size(prepared)
            # let this chunk's pictures go before the next chunk's are read
            del prepared, uploaded

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
) -> tuple[str, int] | None:
    from instaloader.structures import Profile, load_structure_from_file

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
            profile = load_structure_from_file(context, str(candidate))
            if isinstance(profile, Profile):
                facts = {
                    "instagram_id": profile.userid,
                    "full_name": profile.full_name,
                    "is_business": profile.is_business_account,
                    "follower_count": profile.followers,
                }
                break
        except _UNREADABLE as exc:
            log.warning("profile file %s unreadable: %s", candidate, exc)

    with engine.begin() as connection:
        key = upsert_account(
            connection=connection,
            username=username,
            enabled=enable,
            allow_personal=allow_personal,
            **facts,
        )
        account_id = key.id
        if facts.get("is_business") is False and not key.allow_personal:
            reason = (
                "personal (non-business) account: not collected; "
                f"`catalogue accounts add {username} --allow-personal` allows it"
            )
            connection.execute(
                text(
                    "UPDATE raw.accounts SET status = 'personal', enabled = false, "
                    "status_reason = :reason WHERE id = :id"
                ),
                {"id": account_id, "reason": reason},
            )
            summary.skipped_accounts[username] = reason
            return None
    return username, account_id


def _load_post(item: _ArchivePost, *, root: Path, context) -> CollectedPost | None:
    """The post in a file, or None when it cannot be read (`_refuse_post` says why)."""
    try:
        return _read_post(item, root=root, context=context)
    except _UNREADABLE:
        return None


def _read_post(item: _ArchivePost, *, root: Path, context) -> CollectedPost:
    from instaloader.structures import Post, load_structure_from_file

    if not _inside(item.path, root):
        raise ValueError("the file resolves outside the archive folder")
    post = load_structure_from_file(context, str(item.path))
    if not isinstance(post, Post):
        raise ValueError(f"holds a {type(post).__name__}, not a Post")
    stem = POST_FILE.match(item.path.name)["stem"]
    images = _images(post, item.path.parent, stem, root)
    return from_instaloader(post, images=images, source=SOURCE)


def _refuse_post(item: _ArchivePost, *, root: Path, engine: Engine, context) -> StoreOutcome:
    relative = str(item.path.relative_to(root))
    try:
        _read_post(item, root=root, context=context)
        reason = "unreadable post file"
    except _UNREADABLE as exc:
        reason = f"unreadable post file: {type(exc).__name__}: {exc}"
    with engine.begin() as connection:
        quarantine(
            connection=connection,
            source=SOURCE,
            input_ref=relative,
            reason=reason[:500],
            account=item.account,
        )
    outcome = StoreOutcome(images_quarantined=1)
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
                return path.read_bytes()
        raise FileNotFoundError(f"{name}.jpg")

    return read


def _record_success(engine: Engine, accounts: list[str]) -> None:
    if not accounts:
        return
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                UPDATE raw.accounts a SET last_success_at = now(), updated_at = now(),
                    newest_post_taken_at = newest.taken_at, newest_shortcode = newest.shortcode
                FROM (
                    SELECT DISTINCT ON (account_id) account_id, taken_at, shortcode
                    FROM raw.posts ORDER BY account_id, taken_at DESC
                ) AS newest
                WHERE newest.account_id = a.id AND a.username = ANY(:accounts)
                """
            ),
            {"accounts": accounts},
        )

"""Archive import: folders that instaloader already downloaded, loaded as live collection would.

The folders and files are read and checked by `pipeline.collect.archive_files` (instaloader's
layout, nothing taken on trust, no request to Instagram); here they are imported: folders must be
Instagram usernames, each registers its account, and its posts are stored a chunk at a time
through the steps live collection uses (`prepare_post`, `upload_pictures`, `write_post`).

A post belongs to the account its own `owner` id names, whichever folder holds it; one naming an
Instagram id no stored account has is refused. A profile file's modification time (instaloader
writes it when it downloads the profile) is when that username was seen, and a post file's when
its listing was: a renamed shop's older folder adds its posts to the account without renaming it
back, and an older download of a post never moves the slides a newer one placed.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

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
from pipeline.collect.archive_files import (
    POST_FILE,
    SOURCE,
    ArchivePost,
    LoadedPost,
    load_post,
    offline_context,
    owner_id,
    profile_folders,
    read_profile,
)
from pipeline.collect.posts import (
    PreparedPost,
    StoreOutcome,
    UploadedPost,
    prepare_post,
    upload_pictures,
    write_post,
)
from pipeline.collect.quarantine import quarantine
from pipeline.errors import CatalogueError
from pipeline.storage import ObjectStore

T = TypeVar("T")

# Posts read, checked, then stored together (first chunk, most): fewer chunks leave the storing
# threads idle less often at the end of a stage (1,000 against 250: 0.6 against 2.2 idle
# core-seconds in the uploads of 10,000 pictures); the bytes held are capped too. The first
# chunk, sized before any picture was seen, is small enough for pictures of up to 1.5 MB.
CHUNK_POSTS = (50, 1000)
CHUNK_BYTES = 96 * 1024 * 1024
# picture checks: C code without the GIL, one thread per core this process may use
CHECKING_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2


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


Progress = Callable[[ImportSummary], None]


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

    def register(folder: Path) -> list[ArchivePost]:
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
            ArchivePost(name, account_id, path, instagram_id)
            for path in sorted(folder.iterdir())
            if POST_FILE.match(path.name)
        ]

    connections = _ThreadConnections(engine)
    with (
        connections,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        ThreadPoolExecutor(max_workers=CHECKING_THREADS) as checking,
    ):
        posts = [post for found in pool.map(register, profile_folders(root)) for post in found]
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

        def prepare(loaded: LoadedPost) -> PreparedPost | None:
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

        def write(loaded: LoadedPost, uploaded: UploadedPost | None) -> StoreOutcome:
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
                engine, [load_post(item, root=root, context=context) for item in chunk]
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

    facts = read_profile(folder, root=root, context=context)
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


def _owners(engine: Engine, loaded: list[LoadedPost]) -> list[LoadedPost]:
    """Each post with the account its own owner id names, whichever folder holds it: a stored
    account of that id, else refused (a folder whose account has no known id keeps its posts)."""
    foreign = {
        owner
        for entry in loaded
        if entry.post is not None
        and (owner := owner_id(entry.post)) is not None
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
        owner = None if entry.post is None else owner_id(entry.post)
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


def _current_names(engine: Engine, posts: list[ArchivePost]) -> list[ArchivePost]:
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


def _refuse_file(loaded: LoadedPost, *, root: Path, engine: Engine) -> StoreOutcome:
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


def _record_success(engine: Engine, accounts: list[str]) -> None:
    if not accounts:
        return
    with engine.begin() as connection:
        record_import(connection=connection, usernames=accounts)

"""Instaloader archive folders read and checked: profile folders, profile files, post files and
their pictures, with nothing taken on trust and no request to Instagram.

Layout (instaloader's defaults): `<root>/<profile>/<profile>_<id>.json.xz` (the profile),
`<date>_UTC.json.xz` or `.json` (a post, read with instaloader's own `load_structure_from_file`),
`<date>_UTC.jpg` (a single picture or a video's cover) and `<date>_UTC_1.jpg`, `_2.jpg`... (a
carousel's pictures). `<root>` may also be one profile folder itself.

Names from the archive are untrusted: files are only ever found by listing a folder, and a file
(or link) that resolves outside the archive is refused. No request ever goes to Instagram:
metadata missing from a file is a refusal, not a download. Sizes are untrusted too: a post or
profile file that expands beyond `MAX_POST_FILE_BYTES` is refused without being expanded further,
and a picture's size is known before it is read (above the picture check's `MAX_BYTES` it is
refused unread). `pipeline.collect.archive` imports what is read here.
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from instaloader.exceptions import InstaloaderException

from pipeline.collect.images import MAX_BYTES, ImageRefused
from pipeline.collect.instaloader_posts import child_media_ids, from_instaloader
from pipeline.collect.posts import MAX_MEDIA_ID, CollectedImage, CollectedPost
from pipeline.errors import CatalogueError

log = logging.getLogger(__name__)

SOURCE = "archive"
POST_FILE = re.compile(r"^(?P<stem>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC)\.json(\.xz)?$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
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


@dataclass(frozen=True)
class ArchivePost:
    account: str
    account_id: int
    path: Path
    instagram_id: int | None = None  # the folder's account's


@dataclass(frozen=True)
class LoadedPost:
    """A post file read: the post, or why it is refused; `item` names the account it goes to."""

    item: ArchivePost
    post: CollectedPost | None
    refused: str | None = None


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


def profile_folders(root: Path) -> Iterator[Path]:
    """The profile folders under `root`, or `root` itself when it holds post files."""
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


def read_profile(folder: Path, *, root: Path, context) -> dict:
    """What the profile file of a profile folder says of its account, and when that username was
    seen; empty when the folder has no readable profile file."""
    from instaloader.structures import Profile, load_structure

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
                return facts
        except _UNREADABLE as exc:
            log.warning("profile file %s unreadable: %s", candidate, exc)
    return {}


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


def load_post(item: ArchivePost, *, root: Path, context) -> LoadedPost:
    """The post in a file, or why it cannot be read."""
    try:
        return LoadedPost(item, _read_post(item, root=root, context=context))
    except PostFileTooBig as exc:
        reason = str(exc)
    except _UNREADABLE as exc:
        reason = f"unreadable post file: {type(exc).__name__}: {exc}"
    return LoadedPost(item, None, reason[:500])


def _read_post(item: ArchivePost, *, root: Path, context) -> CollectedPost:
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


def owner_id(post: CollectedPost) -> int | None:
    owner = post.node.get("owner")
    try:
        return int(owner["id"]) if isinstance(owner, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


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

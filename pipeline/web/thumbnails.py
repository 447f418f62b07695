"""Pictures for the browser: made small from the object store, and kept.

A request names a picture by its image id and a size from `SIZES`, never by a path or key: the
key is read from `raw.images`, so only catalogued pictures can be served. A 1080x1350 original
(200-400 kB) becomes a ~10 kB grid thumbnail; the results are kept in memory (least recently used
first out) and the browser keeps them a day (they are content-addressed: a picture never changes).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageOps
from sqlalchemy import Engine, text

from pipeline.errors import CatalogueError
from pipeline.storage import ObjectStore

SIZES = {"thumb": 240, "large": 960}  # the longest side, in pixels
QUALITY = {"thumb": 75, "large": 85}
CACHE_BYTES = 64 * 1024 * 1024


class PictureNotFound(CatalogueError, LookupError):
    """No catalogued picture has this id (or it was taken down)."""


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    etag: str  # the original's sha256 and the size


class ThumbnailCache:
    """Thumbnails of the image store's pictures, made on first request and kept."""

    def __init__(self, *, engine: Engine, store: ObjectStore, max_bytes: int = CACHE_BYTES):
        self.engine, self.store, self.max_bytes = engine, store, max_bytes
        self._kept: OrderedDict[tuple[int, str], Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, image_id: int, size: str) -> Thumbnail:
        if size not in SIZES:
            raise PictureNotFound(f"no picture size '{size}': one of {', '.join(SIZES)}")
        key = (image_id, size)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        with self.engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT object_key, sha256 FROM raw.images WHERE id = :i AND removed_at IS NULL"
                ),
                {"i": image_id},
            ).one_or_none()
        if row is None:
            raise PictureNotFound(f"no picture {image_id}")
        made = Thumbnail(shrink(self.store.get(row.object_key), size), f"{row.sha256}-{size}")
        with self._lock:
            if key not in self._kept:
                self._kept[key] = made
                self._bytes += len(made.data)
            while self._bytes > self.max_bytes and self._kept:
                _, dropped = self._kept.popitem(last=False)
                self._bytes -= len(dropped.data)
        return made


def shrink(data: bytes, size: str) -> bytes:
    """The picture as a JPEG whose longest side is at most `SIZES[size]`."""
    with Image.open(io.BytesIO(data)) as picture:
        picture.draft("RGB", (SIZES[size], SIZES[size]))  # JPEG: decode at a fraction of the size
        small = ImageOps.exif_transpose(picture).convert("RGB")
        small.thumbnail((SIZES[size], SIZES[size]), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=QUALITY[size], optimize=True)
    return out.getvalue()

"""Pictures to score, from the object store, fetched and decoded in parallel with bounded memory.

The work is read from the database a page at a time, newest pictures first (keyset order by
image id, descending, so a page never repeats), each statement looking through a window of at
most `WINDOW` image ids: the pictures still to score are mostly the newest, and a statement that
walked every scored picture to reach them took time in proportion to the catalogue (4 s at a
million pictures); now the first page comes at once and each statement's time stays flat.
Pictures collected during the run are walked after the older ones. Each page's pictures are
fetched and decoded by a thread pool (Pillow and the S3 client release the GIL) while the model
scores the page before it. At most `prefetch` pages are in flight, whatever the number of
images. Each picture's perceptual hashes are taken from the same bytes
(`pipeline.similar.hashing`), with its colour layout, so similar-items search reads nothing twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError
from sqlalchemy import Engine, text

from pipeline.artefacts import decode
from pipeline.similar.hashing import Signature, signature
from pipeline.storage import ObjectMissing, ObjectStore


@dataclass(frozen=True)
class Wanted:
    """An image and the model versions that have not scored (or, the embedding version, not
    embedded) it yet."""

    image_id: int
    key: str
    version_ids: tuple[int, ...]


@dataclass
class Picture:
    wanted: Wanted
    arrays: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    problem: tuple[str, str] | None = None  # (kind, reason): 'undecodable' or 'missing'
    signature: Signature | None = None  # perceptual hashes and colour layouts


WINDOW = 10_000  # image ids one statement looks through (its time stays flat, not the catalogue's)
EVERY_ID = 2**63 - 1

_WANTED = """
SELECT id, object_key, needed FROM (
    SELECT i.id, i.object_key,
           ARRAY(SELECT v FROM unnest(CAST(:versions AS integer[])) AS v
                 WHERE :everything OR NOT EXISTS (
                     SELECT 1 FROM catalogue.model_predictions mp
                     WHERE mp.model_version_id = v AND mp.image_id = i.id)
                 OR (v = CAST(:embed AS integer) AND NOT EXISTS (
                     SELECT 1 FROM catalogue.image_embeddings e
                     WHERE e.model_version_id = v AND e.image_id = i.id))) AS needed
    FROM raw.live_images i
    WHERE i.id > :after AND i.id < :before AND i.id % :shards = :shard
      AND NOT EXISTS (SELECT 1 FROM catalogue.unscorable_images u
                      WHERE u.image_id = i.id AND u.kind = 'undecodable')
) AS work
WHERE cardinality(needed) > 0
ORDER BY id DESC
LIMIT :page
"""


def wanted_pages(
    *, engine: Engine, version_ids: list[int], everything: bool, shard: int, shards: int,
    page: int, limit: int | None = None, embed: int | None = None,
) -> Iterator[list[Wanted]]:  # fmt: skip
    """Pages of images some version still has to score, or version `embed` to embed (every
    image with `everything`)."""
    ceiling, floor, given = _newest_image(engine), 0, 0
    before = ceiling + 1
    while limit is None or given < limit:
        size = page if limit is None else min(page, limit - given)
        found: list = []
        while len(found) < size:
            if before <= floor + 1:  # walked down to the floor: pictures collected meanwhile?
                newest = _newest_image(engine)
                if newest <= ceiling:
                    break
                floor, ceiling, before = ceiling, newest, newest + 1
            after = max(before - 1 - WINDOW, floor)
            with engine.connect() as connection:
                rows = connection.execute(
                    text(_WANTED),
                    {"versions": version_ids, "everything": everything, "after": after,
                     "before": before, "shard": shard, "shards": shards,
                     "page": size - len(found), "embed": embed},
                ).all()  # fmt: skip
            before = rows[-1].id if len(rows) == size - len(found) else after + 1
            found += rows
        if not found:
            return
        yield [Wanted(r.id, r.object_key, tuple(r.needed)) for r in found]
        given += len(found)


def _newest_image(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT COALESCE(max(id), 0) FROM raw.images")).scalar_one()


def count_wanted(
    *, engine: Engine, version_ids: list[int], everything: bool, shard: int = 0, shards: int = 1,
    embed: int | None = None,
) -> int:  # fmt: skip
    with engine.connect() as connection:
        return connection.execute(
            text(f"SELECT count(*) FROM ({_WANTED.replace('LIMIT :page', '')}) AS c"),
            {"versions": version_ids, "everything": everything, "after": 0, "before": EVERY_ID,
             "shard": shard, "shards": shards, "embed": embed},
        ).scalar_one()  # fmt: skip


def load_picture(store: ObjectStore, wanted: Wanted, sizes: Iterable[tuple[int, int]]) -> Picture:
    """Fetch and decode one picture at every size a model needs; a problem is reported, not
    raised (an unreachable object store still raises: the whole run cannot go on)."""
    picture = Picture(wanted)
    try:
        data = store.get(wanted.key)
    except ObjectMissing:
        picture.problem = ("missing", f"object {wanted.key} is not in the images bucket")
        return picture
    try:
        for size in sizes:
            picture.arrays[size] = decode(data, size)
        picture.signature = signature(data)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as exc:  # fmt: skip
        picture.arrays.clear()
        picture.problem = ("undecodable", f"{exc.__class__.__name__}: {exc}"[:500])
    return picture


def stream_pictures(
    pages: Iterable[list[Wanted]], *, store: ObjectStore, sizes: list[tuple[int, int]],
    workers: int, prefetch: int = 2,
) -> Iterator[list[Picture]]:  # fmt: skip
    """The pages' pictures, decoded, in order; `prefetch` pages are worked on ahead."""
    with ThreadPoolExecutor(workers, thread_name_prefix="predict-decode") as pool:
        pending: deque = deque()
        try:
            for wanted in pages:
                pending.append([pool.submit(load_picture, store, w, sizes) for w in wanted])
                if len(pending) > prefetch:
                    yield [f.result() for f in pending.popleft()]
            while pending:
                yield [f.result() for f in pending.popleft()]
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()

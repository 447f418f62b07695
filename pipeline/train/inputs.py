"""The input pipeline: pictures from the object store to batches, with no `tf.*` call.

- `PictureCache` fetches each picture's bytes once from the object store into a local folder
  (content-addressed, so a cache is shared by snapshots and safe to delete).
- `decode` (in `pipeline.artefacts`: prediction decodes the same way) uses libjpeg's DCT scaling
  (Pillow's `draft`) to decode a big JPEG at the smallest scale still larger than the target, then
  resizes: a 1080x1350 photo decodes at 1/8 cost.
- `LabelledPictures` is a `keras.utils.PyDataset`: batches are built in worker threads (Pillow
  releases the GIL while decoding), prefetched by Keras, and fed to any backend as NumPy arrays.
- Augmentation keeps the attribute true: mirror, small shifts and zooms (random crops); never a
  hue, saturation or brightness change, which would falsify a colour label. It works on a whole
  batch at once (`augment_batch`: one NumPy gather), so a GPU is not left waiting for it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from PIL import Image

from pipeline.artefacts import decode

if TYPE_CHECKING:  # the GPU machine trains from an export, with no object store client
    from pipeline.storage import ObjectStore


class PictureCache:
    """Picture bytes by object key, from a local folder or else the object store."""

    def __init__(self, store: ObjectStore | None, folder: Path) -> None:
        self.store = store
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / key.replace("/", "_")

    def read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if self.store is None:
                raise
        data = self.store.get(key)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: a reader never sees half a picture
        return data

    def warm(self, keys: Sequence[str], *, workers: int = 16) -> int:
        """Fetch every missing picture in parallel; returns how many were fetched."""
        missing = [k for k in dict.fromkeys(keys) if not self.path(k).exists()]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(self.read, missing))
        return len(missing)


class ExportedPictures:
    """Pictures already decoded and resized (a training export): no object store, no files."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def warm(self, keys: Sequence[str], *, workers: int = 0) -> int:
        missing = [k for k in keys if k not in self.arrays]
        if missing:
            raise KeyError(f"{len(missing)} pictures are not in the export, e.g. {missing[0]}")
        return 0

    def array(self, key: str, size: tuple[int, int]) -> np.ndarray:
        array = self.arrays[key]
        if array.shape[:2] == tuple(size):
            return array
        height, width = size
        image = Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def picture_array(cache, key: str, size: tuple[int, int]) -> np.ndarray:
    if isinstance(cache, ExportedPictures):
        return cache.array(key, size)
    return decode(cache.read(key), size)


def augment_batch(pictures: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each picture of a (batch, height, width, 3) block mirrored at random and zoomed in by up
    to 15 %, shifted anywhere inside: one nearest-neighbour gather for the whole batch. Pixel
    values are only moved, never changed, so a colour label stays true."""
    count, height, width = pictures.shape[:3]
    scale = rng.uniform(0.85, 1.0, count)
    crop_h = np.maximum(1, np.round(height * scale)).astype(np.int64)
    crop_w = np.maximum(1, np.round(width * scale)).astype(np.int64)
    top = (rng.random(count) * (height - crop_h + 1)).astype(np.int64)
    left = (rng.random(count) * (width - crop_w + 1)).astype(np.int64)
    rows = top[:, None] + ((np.arange(height) + 0.5) * crop_h[:, None] / height).astype(np.int64)
    cols = left[:, None] + ((np.arange(width) + 0.5) * crop_w[:, None] / width).astype(np.int64)
    mirrored = rng.random(count) < 0.5
    cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
    index = (np.arange(count)[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
    pixels = np.ascontiguousarray(pictures).reshape(-1, pictures.shape[3])
    return np.take(pixels, index.reshape(-1), axis=0).reshape(pictures.shape)


class LabelledPictures(keras.utils.PyDataset):
    """(pictures, {attribute: one-hot}, {attribute: weight}) batches of snapshot items.

    Pictures stay uint8: the network's input layer casts them where it runs (on a GPU, after a
    transfer a quarter the size), and the host never allocates a float copy of each batch.

    Labels become one class position per item and attribute when the data set is made, and
    pictures that are already decoded (`decoded`, or a training export) one contiguous block, so
    a batch is a few NumPy gathers. A batch built in Python loops holds the GIL, and the thread
    that feeds the accelerator then waits for it (on the H100 that kept the GPU idle 65 % of the
    time). Other pictures are decoded per batch from the cache.

    On the JAX backend batches are prefetched here, `workers` threads building the next
    `2 * workers` batches while the current one trains (NumPy's gathers and Pillow's decoding
    release the GIL). Keras's own enqueuer handed every batch through a thread pool and two
    queues, which cost more on the H100 than it overlapped. On TensorFlow the enqueuer stays.
    Read the batches in order (`fit(..., shuffle=False)`): the items are shuffled every epoch
    here, and a batch depends only on (seed, epoch, index), so prefetching changes no batch.

    An item without a label for an attribute weighs 0 for that head; with `balanced`, a class
    weighs the inverse of its frequency (normalised to a mean of 1) for the long tail.
    """

    def __init__(
        self,
        items: Sequence[dict[str, Any]],
        *,
        cache: PictureCache | ExportedPictures,
        classes: dict[str, list[str]],
        image_size: tuple[int, int],
        batch_size: int = 64,
        augment: bool = False,
        shuffle: bool = False,
        balanced: bool = False,
        seed: int = 0,
        workers: int = 4,
        decoded: dict[str, np.ndarray] | None = None,
        prefetch: bool | None = None,
    ) -> None:
        # `prefetch` None: here on every backend but TensorFlow, where Keras's enqueuer feeds
        # tf.data as before (without it, tf.data's autotuned prefetch made CPU training 20 % slower)
        if prefetch is None:
            prefetch = keras.backend.backend() != "tensorflow"
        super().__init__(workers=1 if prefetch else workers, use_multiprocessing=False,
                         max_queue_size=8)  # fmt: skip
        self.workers_ahead = workers if prefetch else 1
        self.ahead: dict[int, Future] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.items = list(items)
        self.cache = cache
        self.classes = classes
        self.image_size = tuple(image_size)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.order = np.arange(len(self.items))
        # per attribute: each item's class position (-1: no label) and its loss weight
        self.positions: dict[str, np.ndarray] = {}
        self.item_weights: dict[str, np.ndarray] = {}
        for attribute, names in classes.items():
            index = {name: i for i, name in enumerate(names)}
            positions = np.array(
                [index.get(item["labels"].get(attribute), -1) for item in self.items],
                dtype=np.int64,
            )
            weights = np.ones(len(names), dtype=np.float32)
            if balanced:
                counts = np.bincount(positions[positions >= 0], minlength=len(names))
                weights = counts.sum() / np.maximum(counts, 1) / len(names)
                weights = (weights / weights.mean()).astype(np.float32)
            self.positions[attribute] = positions
            self.item_weights[attribute] = np.where(
                positions >= 0, weights[np.maximum(positions, 0)], 0.0
            ).astype(np.float32)
        self.block = self._block(decoded)
        self.on_epoch_end()

    def _block(self, decoded: dict[str, np.ndarray] | None) -> np.ndarray | None:
        """Every item's picture at `image_size` in one array, when they are decoded already."""
        if decoded is None and isinstance(self.cache, ExportedPictures):
            decoded = decode_all(self.items, cache=self.cache, image_size=self.image_size,
                                 workers=os.cpu_count() or 4)  # fmt: skip
        if decoded is None or not all(item["key"] in decoded for item in self.items):
            return None
        if not self.items:
            return np.zeros((0, *self.image_size, 3), dtype=np.uint8)
        return np.stack([decoded[item["key"]] for item in self.items])

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def on_epoch_end(self) -> None:
        # no batch of this epoch may still be building when the order and epoch change (an
        # error of an unread batch does not matter)
        for future in self.ahead.values():
            future.cancel()
        wait(self.ahead.values())
        self.ahead.clear()
        if self.shuffle:
            np.random.default_rng((self.seed, self.epoch)).shuffle(self.order)
        self.epoch += 1

    def picture(self, item: dict[str, Any]) -> np.ndarray:
        return picture_array(self.cache, item["key"], self.image_size)

    def close(self) -> None:
        """Stop building batches ahead (training ended or was interrupted); a later epoch would
        start the threads again."""
        pool, self.pool = self.pool, None
        for future in self.ahead.values():
            future.cancel()
        self.ahead.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __getitem__(self, index: int):
        future = self.ahead.pop(index, None)
        if self.workers_ahead > 1:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.workers_ahead, thread_name_prefix="batches")
            for ahead in range(index + 1, min(index + 1 + 2 * self.workers_ahead, len(self))):
                if ahead not in self.ahead:
                    self.ahead[ahead] = self.pool.submit(self.batch, ahead)
        return future.result() if future is not None else self.batch(index)

    def batch(self, index: int):
        """Batch `index` of the current epoch (what `__getitem__` returns, built here)."""
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.block is not None:
            pictures = np.take(self.block, chosen, axis=0)
        else:
            pictures = np.stack([self.picture(self.items[i]) for i in chosen])
        if self.augment:
            pictures = augment_batch(
                pictures, np.random.default_rng((self.seed, self.epoch, index))
            )
        targets, weights = {}, {}
        for attribute, names in self.classes.items():
            positions = self.positions[attribute][chosen]
            y = np.zeros((len(chosen), len(names)), dtype=np.float32)
            labelled = np.flatnonzero(positions >= 0)
            y[labelled, positions[labelled]] = 1.0
            targets[attribute] = y
            weights[attribute] = self.item_weights[attribute][chosen]
        return pictures, targets, weights


def decode_all(
    items: Sequence[dict[str, Any]], *, cache: PictureCache | ExportedPictures,
    image_size: tuple[int, int], workers: int = 8,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Every item's picture decoded at `image_size`, in parallel (for evaluation and exports)."""
    keys = list(dict.fromkeys(item["key"] for item in items))
    with ThreadPoolExecutor(workers) as pool:
        arrays = pool.map(lambda k: picture_array(cache, k, image_size), keys)
        return dict(zip(keys, arrays, strict=True))

"""The input pipeline: pictures from the object store to batches, with no `tf.*` call.

- `PictureCache` fetches each picture's bytes once from the object store into a local folder
  (content-addressed, so a cache is shared by snapshots and safe to delete).
- `decode` uses libjpeg's DCT scaling (Pillow's `draft`) to decode a big JPEG at the smallest
  scale still larger than the target, then resizes: a 1080x1350 photo decodes at 1/8 cost.
- `LabelledPictures` is a `keras.utils.PyDataset`: batches are built in worker threads (Pillow
  releases the GIL while decoding), prefetched by Keras, and fed to any backend as NumPy arrays.
- Augmentation keeps the attribute true: mirror, small shifts and zooms (random crops); never a
  hue, saturation or brightness change, which would falsify a colour label.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np
from PIL import Image

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

    def array(self, key: str, size: tuple[int, int], rng: np.random.Generator | None) -> np.ndarray:
        array = self.arrays[key]
        if rng is None and array.shape[:2] == tuple(size):
            return array
        image = Image.fromarray(array)
        if rng is not None:
            image = _augment(image, rng)
        height, width = size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def picture_array(cache, key: str, size: tuple[int, int], rng=None) -> np.ndarray:
    if isinstance(cache, ExportedPictures):
        return cache.array(key, size, rng)
    return decode(cache.read(key), size, rng=rng)


def decode(
    data: bytes,
    size: tuple[int, int],
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """An RGB uint8 array of `size` (height, width); with `rng`, randomly mirrored/cropped."""
    height, width = size
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (width, height))  # JPEG: decode at the smallest DCT scale >= size
        image = image.convert("RGB")
        if rng is not None:
            image = _augment(image, rng)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(image, dtype=np.uint8)


def _augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = rng.uniform(0.85, 1.0)  # zoom in up to 15 %, shifted anywhere inside
    w, h = image.size
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    return image.crop((int(left), int(top), int(left + cw), int(top + ch)))


class LabelledPictures(keras.utils.PyDataset):
    """(pictures, {attribute: one-hot}, {attribute: weight}) batches of snapshot items.

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
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.items = list(items)
        self.cache = cache
        self.classes = classes
        self.index = {a: {c: i for i, c in enumerate(cs)} for a, cs in classes.items()}
        self.image_size = image_size
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.decoded = decoded  # key -> array at image_size, when memory allows
        self.order = np.arange(len(self.items))
        self.weights = {a: np.ones(len(cs), dtype=np.float32) for a, cs in classes.items()}
        if balanced:
            for attribute, names in classes.items():
                counts = np.zeros(len(names))
                for item in self.items:
                    label = item["labels"].get(attribute)
                    if label in self.index[attribute]:
                        counts[self.index[attribute][label]] += 1
                weights = counts.sum() / np.maximum(counts, 1) / len(names)
                self.weights[attribute] = (weights / weights.mean()).astype(np.float32)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            np.random.default_rng((self.seed, self.epoch)).shuffle(self.order)
        self.epoch += 1

    def picture(self, item: dict[str, Any], rng: np.random.Generator | None) -> np.ndarray:
        if rng is None and self.decoded is not None and item["key"] in self.decoded:
            return self.decoded[item["key"]]
        return picture_array(self.cache, item["key"], self.image_size, rng)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.augment else None
        pictures = np.stack([self.picture(self.items[i], rng) for i in chosen]).astype(np.float32)
        targets, weights = {}, {}
        for attribute, names in self.classes.items():
            y = np.zeros((len(chosen), len(names)), dtype=np.float32)
            w = np.zeros(len(chosen), dtype=np.float32)
            for row, i in enumerate(chosen):
                label = self.items[i]["labels"].get(attribute)
                position = self.index[attribute].get(label)
                if position is not None:
                    y[row, position] = 1.0
                    w[row] = self.weights[attribute][position]
            targets[attribute], weights[attribute] = y, w
        return pictures, targets, weights


def decode_all(
    items: Sequence[dict[str, Any]], *, cache: PictureCache, image_size: tuple[int, int],
    workers: int = 8,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Every item's picture decoded at `image_size`, in parallel (for evaluation and exports)."""
    keys = list(dict.fromkeys(item["key"] for item in items))
    with ThreadPoolExecutor(workers) as pool:
        arrays = pool.map(lambda k: picture_array(cache, k, image_size), keys)
        return dict(zip(keys, arrays, strict=True))

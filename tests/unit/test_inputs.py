"""Augmentation keeps a picture's colour and category true: pixels are moved (mirrored, zoomed in
by at most 15 %, shifted), never changed, and the same seed gives the same batch. A batch of
labelled pictures holds each item's own picture, label and weight, whichever way the pictures
are held (decoded per batch, or one block built once)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.train.inputs import ExportedPictures, LabelledPictures, PictureCache, augment_batch


def _pictures(count=32, height=80, width=60):
    return np.random.default_rng(1).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_augmentation_only_moves_pixels_and_keeps_most_of_the_picture():
    pictures = _pictures()
    augmented = augment_batch(pictures, np.random.default_rng(3))
    assert augmented.shape == pictures.shape and augmented.dtype == np.uint8
    for before, after in zip(pictures, augmented, strict=True):
        source = {tuple(p) for p in before.reshape(-1, 3)}
        assert all(tuple(p) in source for p in after.reshape(-1, 3))  # no new colour
        # zoomed in by at most 15 %: at least 85 % of the (all different) rows and columns stay
        assert len({row.tobytes() for row in after}) >= int(0.85 * before.shape[0])
        assert len({after[:, c].tobytes() for c in range(after.shape[1])}) >= int(
            0.85 * before.shape[1]
        )


def test_augmentation_varies_within_a_batch_and_repeats_with_its_seed():
    pictures = np.repeat(_pictures(1), 16, axis=0)
    first = augment_batch(pictures, np.random.default_rng(5))
    assert len({a.tobytes() for a in first}) > 8  # each picture gets its own crop and mirror
    np.testing.assert_array_equal(first, augment_batch(pictures, np.random.default_rng(5)))
    assert not np.array_equal(first, augment_batch(pictures, np.random.default_rng(6)))


def test_a_mirrored_uncropped_picture_is_the_exact_mirror():
    pictures = _pictures(64)
    augmented = augment_batch(pictures, np.random.default_rng(9))
    exact = [np.array_equal(a, p) for a, p in zip(augmented, pictures, strict=True)]
    mirrors = [np.array_equal(a, p[:, ::-1]) for a, p in zip(augmented, pictures, strict=True)]
    # a zoom that rounds to the full size leaves the picture whole, mirrored or not
    assert any(exact) or any(mirrors)
    assert not all(exact)


CLASSES = {"category": ["Shirts", "Tops", "Watches"], "colour": ["Black", "Blue"]}


def _labelled_items(count=11):
    """Items with every label combination, some without a colour or with an unknown class."""
    categories = ["Shirts", "Tops", "Watches", "Tops", "Kurtas"]
    colours = ["Black", None, "Blue", "Black"]
    items = []
    for i in range(count):
        labels = {"category": categories[i % len(categories)]}
        if colours[i % len(colours)]:
            labels["colour"] = colours[i % len(colours)]
        items.append({"key": f"images/{i:02d}.jpg", "labels": labels})
    return items


def _expected_batch(items, pictures, chosen, *, balanced):
    """What a batch must hold, item by item."""
    targets, weights = {}, {}
    for attribute, names in CLASSES.items():
        known = [item["labels"].get(attribute) for item in items]
        counts = np.array([known.count(name) for name in names], dtype=np.float64)
        class_weight = counts.sum() / np.maximum(counts, 1) / len(names)
        class_weight = class_weight / class_weight.mean() if balanced else np.ones(len(names))
        y = np.zeros((len(chosen), len(names)), dtype=np.float32)
        w = np.zeros(len(chosen), dtype=np.float32)
        for row, i in enumerate(chosen):
            if known[i] in names:
                y[row, names.index(known[i])] = 1
                w[row] = class_weight[names.index(known[i])]
        targets[attribute], weights[attribute] = y, w
    return np.stack([pictures[i] for i in chosen]), targets, weights


def _assert_batch(batch, expected):
    np.testing.assert_array_equal(batch[0], expected[0])
    for attribute in CLASSES:
        np.testing.assert_array_equal(batch[1][attribute], expected[1][attribute])
        np.testing.assert_allclose(batch[2][attribute], expected[2][attribute], rtol=1e-6)


def test_batches_hold_each_items_picture_label_and_weight_however_pictures_are_held(tmp_path):
    items = _labelled_items()
    size = (8, 6)
    pictures = [_pictures(1, *size)[0] // (i + 1) for i in range(len(items))]
    export = ExportedPictures({item["key"]: p for item, p in zip(items, pictures, strict=True)})
    cache = PictureCache(None, tmp_path)
    decoded = {}
    for item in items:  # lossless PNG bytes in the cache folder: decoded per batch
        buffer = io.BytesIO()
        Image.fromarray(export.arrays[item["key"]]).save(buffer, format="PNG")
        cache.path(item["key"]).write_bytes(buffer.getvalue())
        decoded[item["key"]] = export.arrays[item["key"]]
    for balanced in (False, True):
        for source in (
            {"cache": export},
            {"cache": cache},
            {"cache": cache, "decoded": decoded},
        ):
            data = LabelledPictures(items, classes=CLASSES, image_size=size, batch_size=4,
                                    shuffle=True, balanced=balanced, seed=3, **source)  # fmt: skip
            assert (data.block is None) == (source == {"cache": cache})
            assert len(data) == 3
            for index in range(len(data)):
                chosen = data.order[index * 4 : (index + 1) * 4]
                _assert_batch(data[index], _expected_batch(items, pictures, chosen,
                                                           balanced=balanced))  # fmt: skip


def test_an_export_at_another_size_is_resized_once_into_the_block():
    items = _labelled_items(5)
    export = ExportedPictures({item["key"]: _pictures(1, 8, 6)[0] for item in items})
    data = LabelledPictures(items, cache=export, classes=CLASSES, image_size=(15, 15))
    assert data.block.shape == (5, 15, 15, 3)
    np.testing.assert_array_equal(data[0][0][2], export.array(items[2]["key"], (15, 15)))


def test_prefetched_batches_are_the_batches_built_in_place_epoch_after_epoch():
    items = _labelled_items(40)
    export = ExportedPictures(
        {item["key"]: _pictures(1, 8, 6)[0] + i for i, item in enumerate(items)}
    )

    def epochs(workers, order):
        data = LabelledPictures(items, cache=export, classes=CLASSES, image_size=(8, 6),
                                batch_size=4, augment=True, shuffle=True, seed=2,
                                workers=workers, prefetch=True)  # fmt: skip
        seen = []
        for _ in range(3):
            seen.append([data[i] for i in order(len(data))])
            if order(3) == [0, 1, 2]:
                assert data.ahead == {}  # every batch built ahead was read
                data[0]
                assert len(data.ahead) == (2 * workers if workers > 1 else 0)  # by its threads
            data.on_epoch_end()
        return seen

    in_place = epochs(1, lambda n: list(range(n)))
    for workers, order in ((4, lambda n: list(range(n))), (3, lambda n: list(range(n))[::-1])):
        prefetched = epochs(workers, order)
        for epoch, (want, got) in enumerate(zip(in_place, prefetched, strict=True)):
            got = got if order(3) == [0, 1, 2] else got[::-1]
            for a, b in zip(want, got, strict=True):
                np.testing.assert_array_equal(a[0], b[0], err_msg=f"epoch {epoch}")
                for attribute in CLASSES:
                    np.testing.assert_array_equal(a[1][attribute], b[1][attribute])
    assert not np.array_equal(in_place[0][0][0], in_place[1][0][0])  # a new order every epoch

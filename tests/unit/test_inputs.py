"""Augmentation keeps a picture's colour and category true: pixels are moved (mirrored, zoomed in
by at most 15 %, shifted), never changed, and the same seed gives the same batch."""

from __future__ import annotations

import numpy as np

from pipeline.train.inputs import augment_batch


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

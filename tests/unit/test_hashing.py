"""A picture's hashes and colours: what a copy keeps and what a colour variant changes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from pipeline.samples.copies import COPIES
from pipeline.similar.hashing import colour_overlap, hamming, signature


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def _shirt(colour: tuple[int, int, int]) -> bytes:
    """A shirt-like shape on a white backdrop, off-centre so that its mirror image differs."""
    image = Image.new("RGB", (60, 80), "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(12, 10), (50, 10), (56, 30), (44, 30), (44, 72), (16, 72), (16, 30), (6, 24)],
                 fill=colour)  # fmt: skip
    draw.rectangle((20, 40, 30, 50), fill=(240, 240, 240))  # a pocket on one side
    return _jpeg(image)


def test_copies_keep_the_hash_and_the_colours():
    original = signature(_shirt((180, 30, 40)))
    for kind, copy_of in COPIES.items():
        copy = signature(copy_of(_shirt((180, 30, 40))))
        bits = min(hamming(original.phash, copy.phash),
                   hamming(original.phash, copy.phash_mirrored))  # fmt: skip
        assert bits <= 16, (kind, bits)
        assert colour_overlap(original.colours, copy.colours) >= 0.5, kind


def test_the_mirror_hash_finds_a_flipped_repost():
    original = signature(_shirt((180, 30, 40)))
    flipped = signature(COPIES["mirrored"](_shirt((180, 30, 40))))
    assert hamming(original.phash, flipped.phash) > hamming(original.phash, flipped.phash_mirrored)
    assert hamming(original.phash, flipped.phash_mirrored) <= 4


def test_a_colour_variant_shares_the_shape_not_the_colours():
    red, blue = signature(_shirt((180, 30, 40))), signature(_shirt((30, 40, 170)))
    assert hamming(red.phash, blue.phash) <= 8  # greyscale: the same shirt to the hash
    assert colour_overlap(red.colours, blue.colours) < 0.2  # the colours tell them apart


def test_histograms_are_shares_even_of_an_all_white_picture():
    white = signature(_jpeg(Image.new("RGB", (60, 80), "white")))
    assert np.isclose(white.colours.sum(), 1.0) and white.colours.shape == (64,)
    assert colour_overlap(white.colours, white.colours) == 1.0

"""What a picture looks like at a glance, from the bytes in memory: its 64-bit perceptual hash
(DCT) and its mirror image's, and its colours.

The hash keeps the signs of the 8x8 lowest frequencies of the picture's 32x32 greyscale
(against their median), so a re-encoded, resized or lightly edited copy differs in few bits; the
mirror image's hash lets a flipped repost be found too. Being greyscale, it cannot tell a red
shirt from the same shirt in blue shot the same way (shops list every colour of a model so): the
colours can, a 4x4x4 RGB histogram of the pixels that are not the white backdrop (64 shares
summing to 1). It does not move when a picture is mirrored, cropped by a margin or re-encoded,
and a caption band drawn over it moves a share of it; `colour_overlap` is the shared mass of two
histograms (1: the same colours, 0: none in common). Hashes are stored as signed 64-bit integers
(Postgres `bigint`), histograms as `real[]`; `hamming` counts differing bits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

SIDE = 32  # the greyscale picture the DCT reads
LOW = 8  # the frequencies kept per axis: 64 bits
LEVELS = 4  # histogram levels per channel: 4 x 4 x 4 = 64 bins
BACKDROP = 235  # a pixel with every channel above this is the white backdrop, not the product


@cache
def _dct_matrix(n: int = SIDE) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


def _hash(grey: np.ndarray) -> int:
    d = _dct_matrix()
    low = (d @ grey @ d.T)[:LOW, :LOW].ravel()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True)
class Signature:
    phash: int
    phash_mirrored: int
    colours: np.ndarray  # (64,) float32: the colour histogram, shares summing to 1


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """The shares of the 64 colour bins among the pixels that are not backdrop (every pixel when
    the picture is all backdrop)."""
    pixels = rgb.reshape(-1, 3).astype(np.int32)
    product = pixels[~(pixels > BACKDROP).all(axis=1)]
    if len(product) == 0:
        product = pixels
    level = product // (256 // LEVELS)
    bins = (level[:, 0] * LEVELS + level[:, 1]) * LEVELS + level[:, 2]
    counts = np.bincount(bins, minlength=LEVELS**3).astype(np.float32)
    return counts / counts.sum()


def signature(data: bytes) -> Signature:
    """An encoded picture's hashes and colours, from one decode (JPEGs at a reduced scale)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (SIDE * 2, SIDE * 2))
        rgb = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    grey = np.asarray(rgb.convert("L"), dtype=np.float64)
    return Signature(
        phash=_hash(grey),
        phash_mirrored=_hash(grey[:, ::-1]),
        colours=colour_histogram(np.asarray(rgb)),
    )


def perceptual_hashes(data: bytes) -> tuple[int, int]:
    """(hash, the mirror image's hash) of an encoded picture."""
    found = signature(data)
    return found.phash, found.phash_mirrored


def colour_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The mass two colour histograms share: 1 for the same colours, 0 for none in common."""
    return float(np.minimum(np.asarray(a, np.float32), np.asarray(b, np.float32)).sum())


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()

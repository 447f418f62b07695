"""A picture's 64-bit perceptual hash (DCT) and its mirror image's, from the bytes in memory.

The hash keeps the signs of the 8x8 lowest frequencies of the picture's 32x32 greyscale
(against their median), so a re-encoded, resized or lightly edited copy differs in few bits; the
mirror image's hash lets a flipped repost be found too. Hashes are stored as signed 64-bit
integers (Postgres `bigint`); `hamming` counts differing bits.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image

SIDE = 32  # the greyscale picture the DCT reads
LOW = 8  # the frequencies kept per axis: 64 bits


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


def greyscale(data: bytes) -> np.ndarray:
    """The picture as a SIDE x SIDE float array (JPEGs decoded at a reduced scale)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (SIDE * 2, SIDE * 2))
        image = image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float64)


def perceptual_hashes(data: bytes) -> tuple[int, int]:
    """(hash, the mirror image's hash) of an encoded picture."""
    grey = greyscale(data)
    return _hash(grey), _hash(grey[:, ::-1])


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()

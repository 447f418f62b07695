"""The picture check the collector runs before storing anything."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
from PIL import Image

from pipeline.collect.images import ImageRefused, check_image


def _encode(size=(60, 80), fmt="JPEG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode in ("L", "CMYK") else (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "content_type", "size"),
    [
        pytest.param(_encode(), "image/jpeg", (60, 80), id="jpeg"),
        pytest.param(_encode(mode="L"), "image/jpeg", (60, 80), id="grey-jpeg"),
        pytest.param(_encode(mode="CMYK"), "image/jpeg", (60, 80), id="cmyk-jpeg"),
        pytest.param(_encode((1080, 1350)), "image/jpeg", (1080, 1350), id="instagram-size"),
        pytest.param(_encode(fmt="PNG"), "image/png", (60, 80), id="png"),
        pytest.param(_encode(fmt="WEBP"), "image/webp", (60, 80), id="webp"),
    ],
)
def test_good_pictures_pass_with_their_size_and_type(data, content_type, size):
    checked = check_image(data)
    assert (checked.width, checked.height) == size and checked.content_type == content_type


@cache  # encoded once for both damaged copies
def _photo_like(size=(1080, 1350)) -> bytes:
    """A picture with detail everywhere, so its scan is long enough to damage in the middle."""
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _cut_middle(data: bytes, length: int = 5000) -> bytes:
    middle = len(data) // 2
    return data[:middle] + data[middle + length :]


def _zero_middle(data: bytes, length: int = 5000) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(length) + data[middle + length :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "empty file", id="empty"),
        pytest.param(_encode()[:300], "truncated or corrupt JPEG", id="truncated-jpeg"),
        pytest.param(
            _encode((1080, 1350))[:-4000], "truncated or corrupt JPEG", id="truncated-big"
        ),
        # the end of the file is intact; Pillow would open these with grey blocks
        pytest.param(
            _cut_middle(_photo_like()), "premature end of data segment", id="bytes-lost-in-middle"
        ),
        pytest.param(_zero_middle(_photo_like()), "extraneous bytes", id="zeroed-in-middle"),
        pytest.param(_encode(fmt="GIF", mode="P"), "GIF is not allowed", id="real-gif"),
        pytest.param(b"%PDF-1.7 not a picture", "not an image", id="pdf"),
        pytest.param(
            _encode((9000, 9000), fmt="PNG", mode="L"),
            "decompression-bomb guard",
            id="too-many-pixels",
        ),
    ],
)
def test_bad_pictures_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageRefused) as refused:
        check_image(data)
    assert reason in refused.value.reason


def test_size_limit_applies_before_decoding():
    with pytest.raises(ImageRefused, match="file too big"):
        check_image(_encode(), max_bytes=100)


@cache
def _noise(fmt: str, size=(300, 400)) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({} if fmt == "PNG" else {"quality": 90}))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_picture_cut_short_anywhere_is_refused(fmt):
    """The documented guarantee: the whole picture is decoded, so no truncation passes."""
    data = _noise(fmt)
    check_image(data)
    cuts = [*range(1, len(data), len(data) // 60), *range(len(data) - 40, len(data))]
    passed = []
    for cut in cuts:
        try:
            check_image(data[:cut])
            passed.append(cut)
        except ImageRefused:
            pass
    assert passed == [], f"{len(passed)} of {len(cuts)} truncated {fmt} files passed"


def test_a_changed_byte_in_a_png_is_refused():
    """Every byte of a PNG is under a checksum; JPEG and WebP have none (module docstring)."""
    data = _noise("PNG")
    rng = np.random.default_rng(2)
    for position in rng.integers(64, len(data) - 64, 40):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        with pytest.raises(ImageRefused):
            check_image(bytes(damaged))

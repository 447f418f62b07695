"""Copies of a product photo as other shops repost it: the duplicate listings a marketplace meets.

Each copy is a JPEG made from the original's bytes: `reencoded` (saved again at quality 50),
`resized` (scaled up by half, as a shop's upload), `cropped` (10 % of the width and height cut
away, the rest scaled back to the original's size), `mirrored`, `overlaid` (a caption band with
text drawn over the lower part, as a watermark or a price tag) and `reposted` (the same bytes,
posted by another account). The duplicate-listing benchmark and tests build their cases from
these, so both measure the same copies.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont, ImageOps


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def reencoded(data: bytes) -> bytes:
    return _jpeg(_open(data), quality=50)


def resized(data: bytes) -> bytes:
    image = _open(data)
    size = (round(image.width * 1.5), round(image.height * 1.5))
    return _jpeg(image.resize(size, Image.Resampling.LANCZOS))


def cropped(data: bytes) -> bytes:
    image = _open(data)
    dx, dy = round(image.width * 0.05), round(image.height * 0.05)
    box = (dx, dy, image.width - dx, image.height - dy)
    return _jpeg(image.crop(box).resize(image.size, Image.Resampling.LANCZOS))


def mirrored(data: bytes) -> bytes:
    return _jpeg(ImageOps.mirror(_open(data)))


def overlaid(data: bytes, text: str = "SALE -30% @shop") -> bytes:
    image = _open(data)
    draw = ImageDraw.Draw(image, "RGBA")
    band = round(image.height * 0.14)
    top = image.height - band - round(image.height * 0.06)
    draw.rectangle((0, top, image.width, top + band), fill=(20, 20, 20, 150))
    font = ImageFont.load_default(size=max(8, round(band * 0.7)))
    draw.text((2, top + 1), text, fill=(255, 255, 255, 255), font=font)
    return _jpeg(image)


def reposted(data: bytes) -> bytes:
    return data


COPIES: dict[str, Callable[[bytes], bytes]] = {
    "reencoded": reencoded,
    "resized": resized,
    "cropped": cropped,
    "mirrored": mirrored,
    "overlaid": overlaid,
    "reposted": reposted,
}

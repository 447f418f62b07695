"""How people name one catalogued picture: `SHORTCODE`, or `SHORTCODE/POSITION` for one picture
of a carousel (POSITION is its index in the post, from 0, as in the label CSV and
marketplace.products).

`parse_picture_name` reads a name without the database; `find_picture` finds the picture it
names among the pictures still in their posts, refusing in one line a post never collected, a
position the post does not have, and a bare shortcode of a post with several pictures. The
relabel job's `--like` and the similar-items search name pictures so.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sqlalchemy import Connection, text

from pipeline.errors import CatalogueError

NAME = re.compile(r"(?P<shortcode>[A-Za-z0-9_-]{1,64})(?:/(?P<position>\d{1,5}))?")


class PictureNameError(CatalogueError, LookupError):
    """A picture's name that does not parse, or names no picture of the catalogue."""


class PictureName(NamedTuple):
    shortcode: str
    position: int | None  # None: the post's only picture


class FoundPicture(NamedTuple):
    image_id: int
    shortcode: str
    position: int
    listed: bool  # its post is still on Instagram


def parse_picture_name(name: str) -> PictureName:
    found = NAME.fullmatch(name.strip())
    if found is None:
        raise PictureNameError(
            f"'{name}' is not a picture: write SHORTCODE, or SHORTCODE/POSITION for one picture "
            "of a carousel (POSITION is its index in the post, from 0)"
        )
    position = found["position"]
    return PictureName(found["shortcode"], int(position) if position is not None else None)


def find_picture(connection: Connection, name: str | PictureName) -> FoundPicture:
    """The picture `name` names (see the module doc)."""
    shortcode, position = parse_picture_name(name) if isinstance(name, str) else name
    pictures = connection.execute(
        text(
            "SELECT id, position, unavailable_since IS NULL AS listed FROM raw.post_images "
            "WHERE shortcode = :shortcode AND removed_at IS NULL ORDER BY position"
        ),
        {"shortcode": shortcode},
    ).all()
    by_position = {p.position: p for p in pictures}
    positions = ", ".join(str(p) for p in by_position)
    if not pictures:
        raise PictureNameError(f"unknown shortcode '{shortcode}' (no collected post)")
    if position is None and len(pictures) > 1:
        raise PictureNameError(
            f"post '{shortcode}' has {len(pictures)} pictures (positions {positions}): "
            f"name one as {shortcode}/POSITION"
        )
    if position is not None and position not in by_position:
        raise PictureNameError(
            f"post '{shortcode}' has no picture at position {position} (positions {positions})"
        )
    picture = by_position[position] if position is not None else pictures[0]
    return FoundPicture(picture.id, shortcode, picture.position, picture.listed)

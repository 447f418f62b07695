"""Naming one picture: SHORTCODE or SHORTCODE/POSITION."""

from __future__ import annotations

import pytest

from pipeline.picture_names import PictureName, PictureNameError, parse_picture_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CsFaZNTtyOg", PictureName("CsFaZNTtyOg", None)),
        (" CsFa-Z_9/2 ", PictureName("CsFa-Z_9", 2)),
        ("B/0", PictureName("B", 0)),
    ],
)
def test_names_parse(name, expected):
    assert parse_picture_name(name) == expected


@pytest.mark.parametrize(
    "name", ["", "/1", "abc/", "abc/-1", "abc/1/2", "a b", "abc\x1b[2J", "a;DROP", "x" * 65,
             "abc/999999"],
)  # fmt: skip
def test_what_is_not_a_name_is_refused_saying_how_to_write_one(name):
    with pytest.raises(PictureNameError, match="is not a picture: write SHORTCODE"):
        parse_picture_name(name)

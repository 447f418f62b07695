"""The workbench's pieces that need no services: password hashes, where a sign-in may lead, what
a filter may say, and that a thumbnail is small."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from pipeline.web.forms import (
    RequestRefused,
    counted,
    local_path,
    place_text,
    product_place,
    review_filter,
)
from pipeline.web.pages import ProductPlace
from pipeline.web.thumbnails import SIZES, shrink
from pipeline.web.users import hash_password, password_matches


def test_a_password_hash_is_salted_and_checks_only_its_password():
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second and first.startswith("scrypt$")  # a salt of its own each time
    assert password_matches("correct horse battery", first)
    assert not password_matches("correct horse batterz", first)
    assert not password_matches("correct horse battery", "md5$abc")
    assert "correct horse" not in first


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("/pictures/3?x=1", "/pictures/3?x=1", id="a page of this site"),
        pytest.param("https://evil.example/", "/review", id="another site"),
        pytest.param("//evil.example/", "/review", id="a scheme-relative link"),
        pytest.param("/\\evil.example", "/review", id="a backslash browsers read as a slash"),
        pytest.param("", "/review", id="nothing"),
    ],
)
def test_signing_in_leads_only_to_this_site(target, expected):
    assert local_path(target) == expected


def test_filters_say_what_is_wrong():
    chosen = review_filter({"account": "shop", "needs_review": "yes", "since": "2026-01-02"})
    assert chosen.account == "shop" and chosen.needs_review is True
    assert chosen.since.isoformat() == "2026-01-02"
    with pytest.raises(RequestRefused, match="not a date"):
        review_filter({"until": "tomorrow"})
    with pytest.raises(RequestRefused, match="needs_review"):
        review_filter({"needs_review": "maybe"})


def test_a_catalogue_page_starts_where_its_next_link_says_or_the_link_is_refused():
    place = ProductPlace(datetime(2026, 11, 29, 21, 23, 34, 886400, UTC), "C_x-9", 2)
    assert product_place(place_text(place)) == place
    assert product_place(None) is None and product_place("") is None
    taken = "2026-11-29T21:23:34+00:00"
    for wrong in ("yesterday", f"{taken},C_x-9", "2026-11-29T21:23:34,C_x-9,2",
                  f"{taken},C_x-9,two", f"{taken},,2", f"{taken},C_x-9,-1"):  # fmt: skip
        with pytest.raises(RequestRefused, match="not a place in the catalogue"):
            product_place(wrong)


@pytest.mark.parametrize(
    ("total", "more", "shown"),
    [
        pytest.param(24, False, "24", id="a small queue, exactly"),
        pytest.param(1_234, False, "1,234", id="thousands"),
        pytest.param(1_000, True, "1,000+", id="past the cap"),
    ],
)
def test_a_count_says_when_it_stopped_at_its_cap(total, more, shown):
    assert counted(total, more) == shown


def test_a_grid_thumbnail_of_a_1080x1350_picture_is_small():
    out = io.BytesIO()
    Image.new("RGB", (1080, 1350), (200, 40, 90)).save(out, "JPEG", quality=95)
    small = shrink(out.getvalue(), "thumb")
    with Image.open(io.BytesIO(small)) as picture:
        assert max(picture.size) == SIZES["thumb"] and picture.format == "JPEG"
    assert len(small) < len(out.getvalue()) / 5

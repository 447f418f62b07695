"""`catalogue accounts ...` on the real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from pipeline.accounts import InvalidUsername, normalise_username
from tests.cli import catalogue


@pytest.fixture
def env(services, migrated):
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE raw.accounts, raw.quarantine CASCADE"))
    return services.env()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("Shop.Name", "shop.name", id="case"),
        pytest.param("@shop_name", "shop_name", id="at-sign"),
        pytest.param("https://www.instagram.com/shop.name/?hl=en", "shop.name", id="url"),
    ],
)
def test_usernames_are_normalised(given, expected):
    assert normalise_username(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "a" * 31, "shop name", "shop..name", ".shop", "shop.", "shöp", "../etc"]
)
def test_bad_usernames_are_refused(bad):
    with pytest.raises(InvalidUsername, match="not an Instagram username"):
        normalise_username(bad)


def test_add_list_disable_enable_remove(env, migrated):
    added = catalogue(env, "accounts", "add", "@Zara", "hm_official")
    assert added.returncode == 0, added.stderr
    assert "zara: added" in added.stdout
    assert "already registered" in catalogue(env, "accounts", "add", "zara").stdout

    assert catalogue(env, "accounts", "disable", "zara").returncode == 0
    listed = catalogue(env, "accounts", "list").stdout
    zara = next(line for line in listed.splitlines() if line.startswith("zara"))
    assert "disabled" in zara
    assert catalogue(env, "accounts", "enable", "zara").returncode == 0

    assert catalogue(env, "accounts", "remove", "hm_official").returncode == 0
    with migrated.connect() as connection:
        names = connection.execute(text("SELECT username FROM raw.accounts")).scalars().all()
    assert names == ["zara"]


def test_bad_and_unknown_accounts_get_one_clear_line(env):
    bad = catalogue(env, "accounts", "add", "not a user")
    assert bad.returncode == 1 and "not an Instagram username" in bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = catalogue(env, "accounts", "disable", "nobody_here")
    assert unknown.returncode == 1
    assert "catalogue accounts add nobody_here" in unknown.stderr


def test_an_account_with_posts_is_not_removed_silently(env, migrated):
    catalogue(env, "accounts", "add", "shop_with_posts")
    with migrated.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, media_type, "
                "node) SELECT 'ABC', 1, id, now(), 'image', '{}' FROM raw.accounts "
                "WHERE username = 'shop_with_posts'"
            )
        )
    result = catalogue(env, "accounts", "remove", "shop_with_posts")
    assert result.returncode == 1
    assert "catalogue purge shop_with_posts" in result.stderr
    with migrated.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM raw.posts")).scalar_one() == 1

"""The Instagram accounts whose posts are collected: add, list, enable, disable, remove."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import Engine, text

from pipeline.collect.posts import upsert_account
from pipeline.errors import CatalogueError

_USERNAME = re.compile(r"^(?!.*\.\.)(?!\.)[a-z0-9._]{1,30}(?<!\.)$")
# The first part of an instagram.com path that is not a profile: a post, reel or video names no
# account; `stories/<username>/...` names one second.
_POST_PATHS = {"p", "reel", "reels", "tv"}
_NOT_PROFILE_PATHS = {"explore", "accounts", "direct", "about", "legal", "developer", "web"}


class AccountError(CatalogueError, ValueError):
    """A user's request about an account cannot be done; the message says why and what to do."""


class InvalidUsername(AccountError):
    pass


class UnknownAccount(AccountError):
    pass


@dataclass(frozen=True)
class AccountRow:
    username: str
    enabled: bool
    status: str
    is_business: bool | None
    instagram_id: int | None
    posts: int
    images: int
    last_success_at: datetime | None
    last_failure_reason: str | None


def normalise_username(value: str) -> str:
    """`@Shop.Name`, `shop.name` or `https://www.instagram.com/shop.name/` -> `shop.name`.

    A link to a post, reel or video is refused (it does not name its account); a story link
    (`instagram.com/stories/shop.name/...`) names the account it belongs to.
    """
    candidate = value.strip()
    if "instagram.com" in candidate:
        path = urlsplit(candidate if "://" in candidate else f"https://{candidate}").path
        parts = [part for part in path.split("/") if part]
        first = parts[0].lower() if parts else ""
        if first in _POST_PATHS:
            raise InvalidUsername(
                f"'{value}' is a link to a post, not to a profile: give the account's profile "
                "link (instagram.com/USERNAME) or its username"
            )
        if first == "stories" and len(parts) > 1:
            parts = parts[1:]
        elif first in _NOT_PROFILE_PATHS or first == "stories":
            raise InvalidUsername(
                f"'{value}' is not a link to a profile: give the account's profile link "
                "(instagram.com/USERNAME) or its username"
            )
        candidate = parts[0] if parts else ""
    candidate = candidate.lstrip("@").lower()
    if not _USERNAME.match(candidate):
        raise InvalidUsername(
            f"'{value}' is not an Instagram username: use 1-30 letters, digits, '.' and '_' "
            "(no leading, trailing or double '.')"
        )
    return candidate


def add_account(*, engine: Engine, username: str, allow_personal: bool = False) -> tuple[str, bool]:
    """Register an account for collection; returns (username, created)."""
    name = normalise_username(username)
    with engine.begin() as connection:
        key = upsert_account(connection=connection, username=name, allow_personal=allow_personal)
    return name, key.created


def set_enabled(*, engine: Engine, username: str, enabled: bool) -> None:
    name = normalise_username(username)
    with engine.begin() as connection:
        updated = connection.execute(
            text(
                "UPDATE raw.accounts SET enabled = :enabled, updated_at = now(), "
                "status = CASE WHEN :enabled AND status IN ('failing', 'blocked') "
                "THEN 'active' ELSE status END WHERE username = :u"
            ),
            {"u": name, "enabled": enabled},
        ).rowcount
    if not updated:
        raise UnknownAccount(f"no account '{name}': add it with `catalogue accounts add {name}`")


def remove_account(*, engine: Engine, username: str) -> None:
    """Forget an account that has nothing collected; one with posts needs a purge (takedown)."""
    name = normalise_username(username)
    with engine.begin() as connection:
        row = connection.execute(
            text(
                "SELECT a.id, count(p.id) AS posts FROM raw.accounts a "
                "LEFT JOIN raw.posts p ON p.account_id = a.id WHERE a.username = :u GROUP BY a.id"
            ),
            {"u": name},
        ).first()
        if row is None:
            raise UnknownAccount(f"no account '{name}' to remove (see `catalogue accounts list`)")
        if row.posts:
            raise AccountError(
                f"account '{name}' has {row.posts} collected posts: `catalogue accounts disable "
                f"{name}` stops collecting them; `catalogue purge {name}` deletes them for a "
                "takedown request"
            )
        connection.execute(text("DELETE FROM raw.accounts WHERE id = :id"), {"id": row.id})


def list_accounts(*, engine: Engine) -> list[AccountRow]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                """
                SELECT a.username, a.enabled, a.status, a.is_business, a.instagram_id,
                       count(DISTINCT p.id) AS posts, count(i.id) AS images,
                       a.last_success_at, a.last_failure_reason
                FROM raw.accounts a
                LEFT JOIN raw.posts p ON p.account_id = a.id
                LEFT JOIN raw.images i ON i.post_id = p.id AND i.removed_at IS NULL
                GROUP BY a.id ORDER BY a.username
                """
            )
        ).all()
    return [AccountRow(*row) for row in rows]

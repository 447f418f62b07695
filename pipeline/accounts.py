"""The Instagram accounts whose posts are collected: add, list, enable, disable, remove.

Every write to `raw.accounts` is here: the operator's commands, `upsert_account` (live
collection and archive import register and rename accounts through it), and the bookkeeping of
collection runs (attempts, successes, failures, the resume cursor) and takedowns. Accounts are
keyed on their Instagram id: the same id under a new username renames the account and keeps the
old name in `raw.account_names`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from pipeline.db.postgres_text import for_postgres
from pipeline.errors import CatalogueError

log = logging.getLogger(__name__)

_USERNAME = re.compile(r"^(?!.*\.\.)(?!\.)[a-z0-9._]{1,30}(?<!\.)$")
# The first part of an instagram.com path that is not a profile: a post, reel or video names no
# account; `stories/<username>/...` names one second.
_POST_PATHS = {"p", "reel", "reels", "tv"}
_NOT_PROFILE_PATHS = {"explore", "accounts", "direct", "about", "legal", "developer", "web"}


class AccountError(CatalogueError, ValueError):
    """A user's request about an account cannot be done; the message says why and what to do."""


class AccountConflict(CatalogueError, ValueError):
    """An account cannot be registered as asked (a username held by another Instagram id);
    `reason` says what to do."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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


# -- registering and renaming ----------------------------------------------------------------------
@dataclass(frozen=True)
class AccountKey:
    id: int
    allow_personal: bool
    created: bool
    username: str = ""  # the account's name now (after a rename, not the one asked for)


_ACCOUNT_UPSERT = text(
    """
    INSERT INTO raw.accounts (username, instagram_id, full_name, is_business,
                              follower_count, enabled, allow_personal, cleaned)
    VALUES (:username, :instagram_id, :full_name, :is_business, :follower_count, :enabled,
            :allow_personal, :cleaned)
    ON CONFLICT (username) DO UPDATE SET
        instagram_id = COALESCE(EXCLUDED.instagram_id, raw.accounts.instagram_id),
        full_name = COALESCE(EXCLUDED.full_name, raw.accounts.full_name),
        is_business = COALESCE(EXCLUDED.is_business, raw.accounts.is_business),
        follower_count = COALESCE(EXCLUDED.follower_count, raw.accounts.follower_count),
        allow_personal = raw.accounts.allow_personal OR EXCLUDED.allow_personal,
        cleaned = CASE WHEN EXCLUDED.full_name IS NULL THEN raw.accounts.cleaned
                       ELSE EXCLUDED.cleaned END,
        updated_at = now()
    RETURNING id, allow_personal, (xmax = 0) AS created
    """
)
_ACCOUNT_NAME_SEEN = text(
    """
    INSERT INTO raw.account_names AS n (account_id, username, seen_from, seen_until)
    VALUES (:account_id, :username, :seen_at, :seen_at)
    ON CONFLICT (account_id, username) DO UPDATE SET
        seen_from = LEAST(n.seen_from, EXCLUDED.seen_from),
        seen_until = GREATEST(n.seen_until, EXCLUDED.seen_until)
    WHERE (n.seen_from, n.seen_until) IS DISTINCT FROM
          (LEAST(n.seen_from, EXCLUDED.seen_from), GREATEST(n.seen_until, EXCLUDED.seen_until))
    """
)


def upsert_account(
    *,
    connection: Connection,
    username: str,
    instagram_id: int | None = None,
    full_name: str | None = None,
    is_business: bool | None = None,
    follower_count: int | None = None,
    enabled: bool = True,
    allow_personal: bool = False,
    seen_at: datetime | None = None,
) -> AccountKey:
    """Register or refresh an account: profile facts are refreshed, the operator's choices kept
    (`enabled` only applies to a new account; `allow_personal` is only ever granted here).

    The Instagram id, when given, is the account's identity: the same id under another username
    is a rename. The account takes the name seen last (`seen_at`, when the profile was seen:
    now for live collection, the download for an archive), every name stays in
    `raw.account_names`, and a row the operator added for the new name before its id was known
    is merged into it (its posts moved, enabled or allow_personal kept). A username stored for
    another Instagram id raises `AccountConflict`: the name changed hands, a person decides.
    """
    full_name, cleaned = for_postgres(full_name)
    seen_at = seen_at or datetime.now(UTC)
    name = username
    if instagram_id is not None:
        # registrations of one Instagram id (two folders of a renamed shop) one at a time
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"raw.accounts.instagram_id:{instagram_id}"},
        )
        rows = connection.execute(
            text(
                "SELECT id, username, instagram_id, enabled, allow_personal FROM raw.accounts "
                "WHERE instagram_id = :iid OR username = :username ORDER BY id FOR UPDATE"
            ),
            {"iid": instagram_id, "username": username},
        ).all()
        owner = next((r for r in rows if r.instagram_id == instagram_id), None)
        named = next((r for r in rows if r.username == username), None)
        if named is not None and named.instagram_id not in (None, instagram_id):
            raise AccountConflict(
                f"@{username} is stored for Instagram id {named.instagram_id}, and this profile "
                f"has id {instagram_id}: the name changed hands on Instagram; rename or purge "
                f"the stored @{username} first"
            )
        if owner is not None and owner.username != username:
            name = _rename(connection, owner=owner, named=named, username=username, seen_at=seen_at)
    row = connection.execute(
        _ACCOUNT_UPSERT,
        {
            "username": name,
            "instagram_id": instagram_id,
            "full_name": full_name,
            "is_business": is_business,
            "follower_count": follower_count,
            "enabled": enabled,
            "allow_personal": allow_personal,
            "cleaned": ["full_name"] if cleaned else None,
        },
    ).one()
    if cleaned:
        log.warning("@%s: full_name held text Postgres refuses; stored cleaned", name)
    connection.execute(
        _ACCOUNT_NAME_SEEN, {"account_id": row.id, "username": username, "seen_at": seen_at}
    )
    return AccountKey(row.id, row.allow_personal, row.created, name)


def _rename(
    connection: Connection, *, owner: Any, named: Any, username: str, seen_at: datetime
) -> str:
    """The account `owner` seen as `username`: merge the id-less row of that name into it, and
    take the name if it was seen after the current one. Returns the account's name now."""
    if named is not None:
        connection.execute(
            text(
                """
                UPDATE raw.posts SET account_id = :owner WHERE account_id = :named;
                INSERT INTO raw.account_names AS n (account_id, username, seen_from, seen_until)
                SELECT :owner, username, seen_from, seen_until FROM raw.account_names
                WHERE account_id = :named
                ON CONFLICT (account_id, username) DO UPDATE SET
                    seen_from = LEAST(n.seen_from, EXCLUDED.seen_from),
                    seen_until = GREATEST(n.seen_until, EXCLUDED.seen_until);
                DELETE FROM raw.accounts WHERE id = :named;
                UPDATE raw.accounts SET enabled = enabled OR :enabled,
                    allow_personal = allow_personal OR :allow_personal
                WHERE id = :owner;
                """
            ),
            {
                "owner": owner.id,
                "named": named.id,
                "enabled": named.enabled,
                "allow_personal": named.allow_personal,
            },
        )
        log.info("@%s merged into the account of the same Instagram id", username)
    current = connection.execute(
        text("SELECT seen_until FROM raw.account_names WHERE account_id = :id AND username = :u"),
        {"id": owner.id, "u": owner.username},
    ).scalar_one_or_none()
    if current is not None and seen_at < current:
        return owner.username  # an older name of the account: kept in the history only
    connection.execute(
        text(
            """
            UPDATE raw.accounts SET username = :username, updated_at = now(),
                status = CASE WHEN status = 'renamed' THEN 'active' ELSE status END,
                status_reason = CASE WHEN status = 'renamed' THEN NULL ELSE status_reason END
            WHERE id = :id
            """
        ),
        {"id": owner.id, "username": username},
    )
    log.info("@%s renamed to @%s on Instagram (id kept)", owner.username, username)
    return username


# -- the operator's commands ----------------------------------------------------------------------
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


# -- collection runs and takedowns ----------------------------------------------------------------
def disable_personal(
    *, connection: Connection, account_id: int, reason: str, as_failure: bool = False
) -> None:
    """A personal (non-business) account that was not allowed: disabled, with the reason;
    `as_failure` also records it as the last failure (live collection tried it)."""
    connection.execute(
        text(
            "UPDATE raw.accounts SET status = 'personal', enabled = false, "
            "status_reason = :reason, "
            "last_failure_at = CASE WHEN :as_failure THEN now() ELSE last_failure_at END, "
            "last_failure_reason = CASE WHEN :as_failure THEN :reason "
            "ELSE last_failure_reason END "
            "WHERE id = :id"
        ),
        {"id": account_id, "reason": reason, "as_failure": as_failure},
    )


_SAVE_RESUME_CURSOR = text(
    "UPDATE raw.accounts SET resume_cursor = :cursor, backfill_until = :until WHERE id = :id"
).bindparams(bindparam("cursor", type_=JSONB))


def save_resume_cursor(
    *, connection: Connection, account_id: int, segments: list[dict[str, Any]]
) -> None:
    """The account's resume cursor: the iterations a later run continues, in order."""
    cursor = {"segments": segments} if segments else None
    until = segments[-1]["until"] if segments else None
    connection.execute(_SAVE_RESUME_CURSOR, {"cursor": cursor, "until": until, "id": account_id})


def record_attempt(*, connection: Connection, account_id: int, at: datetime) -> None:
    connection.execute(
        text("UPDATE raw.accounts SET last_attempt_at = :at WHERE id = :id"),
        {"at": at, "id": account_id},
    )


def record_success(*, connection: Connection, account_id: int, at: datetime) -> None:
    """A collection run finished: the account is active, its newest post remembered."""
    connection.execute(
        text(
            """
            UPDATE raw.accounts a SET last_success_at = :at, status = 'active',
                status_reason = NULL, updated_at = now(),
                newest_post_taken_at = newest.taken_at, newest_shortcode = newest.shortcode
            FROM (SELECT taken_at, shortcode FROM raw.posts WHERE account_id = :id
                  ORDER BY taken_at DESC LIMIT 1) AS newest
            WHERE a.id = :id
            """
        ),
        {"at": at, "id": account_id},
    )


def record_failure(
    *, connection: Connection, account_id: int, status: str, reason: str, at: datetime
) -> None:
    """A lasting state (private, deleted, renamed, blocked) disables the account: an operator
    enables it again once the reason is fixed. "failing" is retried by the next run."""
    connection.execute(
        text(
            "UPDATE raw.accounts SET status = :status, status_reason = :reason, "
            "last_failure_at = :at, last_failure_reason = :reason, updated_at = now(), "
            "enabled = CASE WHEN :status = 'failing' THEN enabled ELSE false END "
            "WHERE id = :id"
        ),
        {"status": status, "reason": reason, "at": at, "id": account_id},
    )


def record_import(*, connection: Connection, usernames: list[str]) -> None:
    """An archive import stored the accounts' posts: their newest post is remembered (their
    status is live collection's to say)."""
    connection.execute(
        text(
            """
            UPDATE raw.accounts a SET last_success_at = now(), updated_at = now(),
                newest_post_taken_at = newest.taken_at, newest_shortcode = newest.shortcode
            FROM (
                SELECT DISTINCT ON (account_id) account_id, taken_at, shortcode
                FROM raw.posts ORDER BY account_id, taken_at DESC
            ) AS newest
            WHERE newest.account_id = a.id AND a.username = ANY(:accounts)
            """
        ),
        {"accounts": usernames},
    )


def delete_purged_account(*, connection: Connection, username: str) -> None:
    """A takedown's last step for an account, in the purge's transaction (its posts first)."""
    connection.execute(text("DELETE FROM raw.accounts WHERE username = :u"), {"u": username})

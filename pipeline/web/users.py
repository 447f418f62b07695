"""The workbench's people: accounts with a role and a salted password hash, their sessions, and
the throttle on failed sign-ins.

Roles rank `viewer` (sees) < `moderator` (labels, runs and undoes jobs) < `admin` (manages
people). Passwords are hashed with scrypt and a random salt of each person's own; a session is a
random token in an HttpOnly cookie, stored only as its SHA-256, with its CSRF token and expiry.
After `max_failures` failed sign-ins for one name within `FAILURE_WINDOW`, that name is refused
until the window passes, whatever the password, and one address that failed `CLIENT_FACTOR` times
as often (trying many names) is refused too: guessing is slowed to a few tries per window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, text

from pipeline.errors import CatalogueError

ROLES = ("viewer", "moderator", "admin")
FAILURE_WINDOW = timedelta(minutes=15)
CLIENT_FACTOR = 4  # one address may fail this many times a name's allowance (names guessed)
MIN_PASSWORD = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# scrypt's cost: 16 MiB and about 50 ms per hash on one core
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UserError(CatalogueError, ValueError):
    """A person cannot be added or changed as asked; the message says what to do."""


class LoginRefused(CatalogueError, PermissionError):
    """Wrong name or password, or a disabled account (never said which)."""


class LoginThrottled(LoginRefused):
    """Too many failed sign-ins for this name lately."""


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    role: str
    disabled: bool = False
    created_at: datetime | None = None

    def may(self, role: str) -> bool:
        """Whether this person's role includes `role`'s rights."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class SignedIn:
    person: Person
    csrf_token: str
    expires_at: datetime


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(found, base64.b64decode(digest))


# a hash compared when the name is unknown, so an unknown name takes as long as a wrong password
_UNKNOWN = hash_password(secrets.token_hex(16))


def _checked(name: str, role: str | None = None, password: str | None = None) -> None:
    if not _NAME.match(name):
        raise UserError(
            f"'{name[:64]}' is not a usable name: letters, digits and . _ @ - (64 at most), "
            "starting with a letter or digit"
        )
    if role is not None and role not in ROLES:
        raise UserError(f"role '{role}' is not one of {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise UserError(f"the password is too short: {MIN_PASSWORD} characters at least")


def add_person(*, engine: Engine, name: str, role: str, password: str) -> Person:
    _checked(name, role, password)
    with engine.begin() as connection:
        taken = connection.execute(
            text("SELECT name FROM catalogue.moderators WHERE lower(name) = lower(:n)"),
            {"n": name},
        ).scalar_one_or_none()
        if taken is not None:
            raise UserError(f"'{taken}' already exists: reset its password or pick another name")
        row = connection.execute(
            text(
                "INSERT INTO catalogue.moderators (name, role, password_hash) "
                "VALUES (:n, :r, :h) RETURNING id, name, role, created_at"
            ),
            {"n": name, "r": role, "h": hash_password(password)},
        ).one()
    return Person(row.id, row.name, row.role, False, row.created_at)


def list_people(*, engine: Engine) -> list[Person]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, name, role, disabled_at IS NOT NULL AS disabled, created_at "
                "FROM catalogue.moderators ORDER BY lower(name)"
            )
        ).all()
    return [Person(r.id, r.name, r.role, r.disabled, r.created_at) for r in rows]


def _find(connection, name: str) -> int:
    found = connection.execute(
        text("SELECT id FROM catalogue.moderators WHERE lower(name) = lower(:n) FOR UPDATE"),
        {"n": name},
    ).scalar_one_or_none()
    if found is None:
        raise UserError(f"no workbench user '{name[:64]}': `catalogue users list` shows them")
    return found


def disable_person(*, engine: Engine, name: str) -> None:
    """Refuse the person's sign-ins from now on and end their sessions; their labels stay."""
    with engine.begin() as connection:
        person = _find(connection, name)
        connection.execute(
            text(
                "UPDATE catalogue.moderators SET disabled_at = COALESCE(disabled_at, now()) "
                "WHERE id = :i"
            ),
            {"i": person},
        )
        connection.execute(
            text("DELETE FROM catalogue.web_sessions WHERE moderator_id = :i"), {"i": person}
        )


def reset_password(*, engine: Engine, name: str, password: str) -> None:
    """A new password (re-enabling a disabled person); their sessions end."""
    _checked(name, password=password)
    with engine.begin() as connection:
        person = _find(connection, name)
        connection.execute(
            text(
                "UPDATE catalogue.moderators SET password_hash = :h, disabled_at = NULL, "
                "password_changed_at = now() WHERE id = :i"
            ),
            {"h": hash_password(password), "i": person},
        )
        connection.execute(
            text("DELETE FROM catalogue.web_sessions WHERE moderator_id = :i"), {"i": person}
        )
        connection.execute(
            text("DELETE FROM catalogue.login_failures WHERE lower(name) = lower(:n)"),
            {"n": name},
        )


def authenticate(
    *, engine: Engine, name: str, password: str, client: str | None, max_failures: int
) -> Person:
    """The person, or `LoginRefused` (`LoginThrottled` after too many recent failures)."""
    with engine.begin() as connection:
        failures = connection.execute(
            text(
                "SELECT count(*) FROM catalogue.login_failures "
                "WHERE lower(name) = lower(:n) AND failed_at > now() - :window"
            ),
            {"n": name[:64], "window": FAILURE_WINDOW},
        ).scalar_one()
        from_client = connection.execute(
            text(
                "SELECT count(*) FROM catalogue.login_failures "
                "WHERE client = :c AND failed_at > now() - :window"
            ),
            {"c": client, "window": FAILURE_WINDOW},
        ).scalar_one()
        if client is not None and from_client >= max_failures * CLIENT_FACTOR:
            raise LoginThrottled(
                f"too many failed sign-ins from this address: try again in "
                f"{int(FAILURE_WINDOW.total_seconds() // 60)} minutes"
            )
        if failures >= max_failures:
            raise LoginThrottled(
                f"too many failed sign-ins for this name: try again in "
                f"{int(FAILURE_WINDOW.total_seconds() // 60)} minutes, or ask an admin to reset "
                "the password"
            )
        row = connection.execute(
            text(
                "SELECT id, name, role, password_hash FROM catalogue.moderators "
                "WHERE lower(name) = lower(:n) AND disabled_at IS NULL"
            ),
            {"n": name[:64]},
        ).one_or_none()
        if password_matches(password, row.password_hash if row else _UNKNOWN) and row:
            return Person(row.id, row.name, row.role)
        connection.execute(
            text("INSERT INTO catalogue.login_failures (name, client) VALUES (:n, :c)"),
            {"n": name[:64], "c": client},
        )
        connection.execute(  # only the window is ever read: the table stays small
            text("DELETE FROM catalogue.login_failures WHERE failed_at < now() - 2 * :window"),
            {"window": FAILURE_WINDOW},
        )
    raise LoginRefused("wrong name or password")


def start_session(*, engine: Engine, person: Person, hours: float) -> str:
    """A new session's cookie token (stored only as its hash)."""
    token = secrets.token_urlsafe(32)
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM catalogue.web_sessions WHERE expires_at < now()")
        )  # the expired ones of everybody: the table stays the size of who is signed in
        connection.execute(
            text(
                "INSERT INTO catalogue.web_sessions (token_sha256, moderator_id, csrf_token, "
                "expires_at) VALUES (:t, :m, :c, now() + :ttl)"
            ),
            {
                "t": _token_hash(token),
                "m": person.id,
                "c": secrets.token_urlsafe(32),
                "ttl": timedelta(hours=hours),
            },
        )
    return token


def signed_in(*, engine: Engine, token: str | None) -> SignedIn | None:
    """Who the session cookie belongs to, unless it expired or they were disabled."""
    if not token or len(token) > 200:
        return None
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT m.id, m.name, m.role, s.csrf_token, s.expires_at "
                "FROM catalogue.web_sessions s JOIN catalogue.moderators m "
                "ON m.id = s.moderator_id "
                "WHERE s.token_sha256 = :t AND s.expires_at > now() AND m.disabled_at IS NULL"
            ),
            {"t": _token_hash(token)},
        ).one_or_none()
    if row is None:
        return None
    return SignedIn(Person(row.id, row.name, row.role), row.csrf_token, row.expires_at)


def end_session(*, engine: Engine, token: str | None) -> None:
    if not token:
        return
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM catalogue.web_sessions WHERE token_sha256 = :t"),
            {"t": _token_hash(token)},
        )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

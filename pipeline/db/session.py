"""One engine per process, and clear errors when Postgres says no."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from pipeline.config import describe_url
from pipeline.errors import CatalogueError

CONNECT_TIMEOUT_S = 5


# Two writers met (serialization_failure, deadlock_detected): Postgres rolled one back, and the
# same transaction run again from the start completes.
COLLIDED_SQLSTATES = ("40001", "40P01")


def collided(exc: BaseException) -> bool:
    """Did a statement fail only because another writer held what it needed? (Retry it.)"""
    return getattr(getattr(exc, "orig", None), "pgcode", None) in COLLIDED_SQLSTATES


class DatabaseError(CatalogueError, RuntimeError):
    """Postgres cannot be used with the configured settings; the message says what to fix."""


class DatabaseUnreachable(DatabaseError):
    pass


class DatabaseCredentialsRefused(DatabaseError):
    pass


class DatabaseMissing(DatabaseError):
    pass


def explain_operational_error(
    exc: OperationalError, url: URL, *, setting: str = "CATALOGUE_DATABASE_URL"
) -> DatabaseError:
    """Turn psycopg2's connection failure into one line naming the setting to fix."""
    where = describe_url(url)
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else "unknown"
    # psycopg2 quotes the host it tried; a host holding an '@' holds part of the password
    credentials, at, host = (url.host or "").rpartition("@")
    if at:
        reason = reason.replace(f"{credentials}@{host}", host)
    if url.password and len(url.password) >= 4:
        reason = reason.replace(url.password, "***")
    lowered = reason.lower()
    if (
        "password authentication failed" in lowered
        or "no password supplied" in lowered
        or ("role" in lowered and "does not exist" in lowered)
    ):
        return DatabaseCredentialsRefused(
            f"the database at {where} refused the credentials ({reason}): "
            f"fix the user and password in {setting}"
        )
    if "database" in lowered and "does not exist" in lowered:
        return DatabaseMissing(
            f"the database named in {setting} does not exist at {where} ({reason}): "
            "create it (createdb) or name an existing one"
        )
    return DatabaseUnreachable(
        f"cannot reach the database at {where} ({reason}): "
        f"start Postgres there or fix the host and port in {setting}"
    )


@lru_cache(maxsize=8)
def _engine(url: URL) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,
        # kept open for reuse: the archive import's threads (16 by default) hold one each, and a
        # connection returned above pool_size is closed (a new one costs Postgres a backend start)
        pool_size=20,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "catalogue"},
    )


def get_engine(url: URL, *, check: bool = True, setting: str = "CATALOGUE_DATABASE_URL") -> Engine:
    """The process's engine for `url`; with `check`, prove it answers or raise `DatabaseError`."""
    engine = _engine(url)
    if check:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise explain_operational_error(exc, url, setting=setting) from None
    return engine

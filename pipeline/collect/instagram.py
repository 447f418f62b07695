"""Live collection: an account's new posts, through instaloader's own classes.

One account at a time (in Airflow the `instagram` pool has one slot per session). A run:

1. looks the profile up (`Profile.from_username`) and records its Instagram id, name, business
   flag and follower count; a personal account is disabled unless an operator allowed it;
2. walks the timeline newest first (`Profile.get_posts`), storing every post it has not stored,
   refreshing likes and comments of those inside the freshness window, and stops at the first
   stored post older than that window, looking past the first 3 posts, which may be pinned;
3. continues an earlier run's backfill from its frozen iterator (`NodeIterator.freeze/thaw`)
   until the `since` date, the backfill's lower bound, or the end of the timeline;
4. marks posts of the freshness window that Instagram no longer shows as unavailable.

`--max-posts` caps a run; the iterator state is saved after every post, so a capped or killed run
leaves a cursor that the next run continues after taking the new posts first.

Instagram's refusals: a 429 waits per the rate controller; 401 "Please wait a few minutes" backs
off and, if it persists, ends the account's run cleanly (what was stored stays, and the cursor);
a checkpoint, challenge or failed login stops the account with the reason on its row; a private,
renamed or deleted account is recorded as such and disabled instead of retried forever.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from pipeline.accounts import (
    AccountConflict,
    UnknownAccount,
    disable_personal,
    normalise_username,
    record_attempt,
    record_failure,
    record_success,
    save_resume_cursor,
    upsert_account,
)
from pipeline.collect.instaloader_posts import child_media_ids, from_instaloader
from pipeline.collect.posts import CollectedImage, ImageDownloadFailed, store_post
from pipeline.storage import ObjectStore

log = logging.getLogger(__name__)

SOURCE = "instagram"
PINNED_LOOKAHEAD = 3  # Instagram pins at most 3 posts; 4.16's is_pinned is unreliable
WAIT_MESSAGES = ("please wait a few minutes", "wait a few minutes before you try again")
BLOCK_MESSAGES = ("checkpoint_required", "challenge_required", "feedback_required", "checkpoint")


@dataclass(frozen=True)
class CollectOptions:
    max_posts: int | None = None
    since: datetime | None = None
    refresh_days: int = 3
    backoff_s: tuple[float, ...] = (60.0, 300.0, 900.0)  # 401 "Please wait": then give up


@dataclass
class AccountRun:
    username: str
    status: str = "active"  # active, private, renamed, deleted, personal, blocked, failing
    reason: str | None = None
    posts_seen: int = 0
    posts_new: int = 0
    posts_refreshed: int = 0
    posts_unavailable: int = 0
    images_new: int = 0
    quarantined: int = 0
    capped: bool = False
    backfill_pending: bool = False
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "active"


class _StopAccount(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def collect_account(
    *,
    engine: Engine,
    store: ObjectStore,
    loader: Any,
    username: str,
    options: CollectOptions = CollectOptions(),
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AccountRun:
    """Collect one account's posts; never raises for Instagram's refusals (see `AccountRun`)."""
    name = normalise_username(username)
    account = _account_row(engine, name)
    run = AccountRun(name)
    _mark_attempt(engine, account["id"], now())
    try:
        profile = _with_backoff(lambda: _profile(loader, name, account), options, sleep)
        if not _record_profile(engine, account, profile, run):
            return run
        stored = _stored_shortcodes(engine, account["id"])
        refresh_after = now() - timedelta(days=options.refresh_days)
        seen_in_window: set[str] = set()
        budget = [options.max_posts if options.max_posts is not None else float("inf")]
        # Backfills left by earlier runs, oldest work last; this run's own segment goes first.
        earlier = list((account["resume_cursor"] or {}).get("segments", []))
        watermark = account["newest_post_taken_at"]
        bounds = [b for b in (watermark, options.since) if b is not None]
        until = max(bounds) if bounds else None

        # 1. new posts (and the freshness window), newest first
        iterator = _with_backoff(profile.get_posts, options, sleep)
        finished = True
        window_seen = True  # every post of the freshness window was listed (none missed)
        for index, post in enumerate(_with_backoff_iter(iterator, options, sleep)):
            taken_at = post.date_utc.replace(tzinfo=UTC)
            known = post.shortcode in stored
            beyond_pins = index >= PINNED_LOOKAHEAD
            if beyond_pins and known and taken_at < refresh_after:
                break
            if beyond_pins and options.since and taken_at < options.since:
                window_seen = taken_at < refresh_after
                break
            if budget[0] <= 0:
                # past the window only if an older post, not a pinned one, stopped it
                run.capped, finished = True, False
                window_seen = beyond_pins and taken_at < refresh_after
                break
            if taken_at >= refresh_after:
                seen_in_window.add(post.shortcode)
            if not (known and taken_at < refresh_after):  # else a pinned post, already stored
                _store(engine, store, loader, account, post, run, stored, budget)
            _save_segments(engine, account["id"], [_segment(iterator, until), *earlier])
        _save_segments(
            engine, account["id"], ([] if finished else [_segment(iterator, until)]) + earlier
        )

        # 2. earlier runs' backfills
        remaining = list(earlier)
        while remaining and budget[0] > 0:
            done = _backfill(
                engine, store, loader, profile, account, run, stored, budget, options, sleep,
                segment=remaining[0], after=[*([] if finished else [_segment(iterator, until)])],
                rest=remaining[1:],
            )  # fmt: skip
            if not done:
                break
            remaining.pop(0)
        run.backfill_pending = bool(remaining) or not finished

        if window_seen:
            run.posts_unavailable = _mark_unavailable(
                engine, account["id"], refresh_after, seen_in_window, now()
            )
        _record_success(engine, account["id"], run, now())
    except _StopAccount as stop:
        run.status, run.reason = stop.status, stop.reason
        _record_failure(engine, account["id"], stop.status, stop.reason, now())
    except ImageDownloadFailed as exc:
        run.status, run.reason = "failing", f"picture download failed, retried next run: {exc}"
        _record_failure(engine, account["id"], run.status, run.reason, now())
    return run


# -- the profile ------------------------------------------------------------------------------
def _profile(loader: Any, name: str, account: dict) -> Any:
    from instaloader import Profile
    from instaloader.exceptions import ProfileNotExistsException

    try:
        return Profile.from_username(loader.context, name)
    except ProfileNotExistsException:
        renamed_to = _renamed_to(loader, account)
        if renamed_to:
            raise _StopAccount(
                "renamed",
                f"renamed to @{renamed_to} on Instagram: `catalogue accounts add {renamed_to}` "
                "to collect it under its new name",
            ) from None
        raise _StopAccount(
            "deleted", "Instagram has no profile by this name (deleted or renamed)"
        ) from None


def _renamed_to(loader: Any, account: dict) -> str | None:
    from instaloader import Profile
    from instaloader.exceptions import InstaloaderException

    if not account["instagram_id"]:
        return None
    try:
        profile = Profile.from_id(loader.context, account["instagram_id"])
    except InstaloaderException:
        return None
    return profile.username if profile.username != account["username"] else None


def _record_profile(engine: Engine, account: dict, profile: Any, run: AccountRun) -> bool:
    """Store the profile's facts; False when the account must not be collected.

    Through `upsert_account`, as the archive import: an account already stored under another
    name with this Instagram id (an archive of the shop's old name) takes this name, and the
    operator's row for it is merged in; `account` then describes the merged account.
    """
    is_business = bool(profile.is_business_account)
    try:
        with engine.begin() as connection:
            key = upsert_account(
                connection=connection,
                username=account["username"],
                instagram_id=profile.userid,
                full_name=profile.full_name,
                is_business=is_business,
                follower_count=profile.followers,
                enabled=account["enabled"],
            )
    except AccountConflict as exc:
        raise _StopAccount("renamed", exc.reason) from None
    if key.id != account["id"]:
        account.update(_account_row(engine, key.username))
    if not is_business and not account["allow_personal"]:
        reason = (
            "personal (non-business) account: disabled; `catalogue accounts add "
            f"{account['username']} --allow-personal` and `catalogue accounts enable` allow it"
        )
        run.status, run.reason = "personal", reason
        with engine.begin() as connection:
            disable_personal(
                connection=connection, account_id=account["id"], reason=reason, as_failure=True
            )
        return False
    return True


# -- posts ------------------------------------------------------------------------------------
def _store(
    engine: Engine,
    store: ObjectStore,
    loader: Any,
    account: dict,
    post: Any,
    run: AccountRun,
    stored: set[str],
    budget: list[float],
) -> None:
    every_image = _images(loader, post)
    images = every_image
    if post.shortcode in stored:  # a refresh: pictures already stored are not fetched again
        have = _stored_media_ids(engine, post.mediaid)
        images = [image for image in every_image if image.media_id not in have]
    collected = dataclasses.replace(
        from_instaloader(post, images=images, source=SOURCE),
        all_media_ids=tuple(image.media_id for image in every_image),
    )
    outcome = store_post(
        db=engine,
        store=store,
        account_id=account["id"],
        account=account["username"],
        post=collected,
    )
    run.posts_seen += 1
    run.posts_new += int(outcome.post_inserted)
    run.posts_refreshed += int(outcome.post_updated)
    run.images_new += outcome.images_inserted
    run.quarantined += outcome.images_quarantined + int(outcome.post_refused is not None)
    if outcome.post_inserted:
        budget[0] -= 1
    stored.add(post.shortcode)


def _images(loader: Any, post: Any) -> list[CollectedImage]:
    """A post's pictures: a carousel's children, a single image, or a video's cover."""
    if post.typename == "GraphSidecar":
        media_ids = child_media_ids(post._node)
        urls = [node.display_url for node in post.get_sidecar_nodes()]
        if len(media_ids) != len(urls):
            raise _StopAccount(
                "failing", f"post {post.shortcode}: carousel children without their media ids"
            )
    else:
        media_ids, urls = [post.mediaid], [post.url]
    return [
        CollectedImage(
            media_id=media_id,
            position=position,
            read=_downloader(loader, url),
            source_ref=f"https://www.instagram.com/p/{post.shortcode}/#{position}",
            is_video_cover=post.typename == "GraphVideo",
        )
        for position, (media_id, url) in enumerate(zip(media_ids, urls, strict=True))
    ]


def _downloader(loader: Any, url: str, attempts: int = 3) -> Callable[[], bytes]:
    """Fetch a CDN picture; a transient failure is retried, a lasting one ends the account's run
    (its post is not stored, so the next run fetches it again)."""

    def read() -> bytes:
        from instaloader.exceptions import ConnectionException

        for attempt in range(1, attempts + 1):
            try:
                return loader.context.get_raw(url).content
            except ConnectionException as exc:
                if attempt == attempts:
                    raise ImageDownloadFailed(f"{url}: {exc}") from None
                log.warning("picture download failed (%s), retrying", exc)
        raise AssertionError("unreachable")

    return read


def _backfill(
    engine: Engine,
    store: ObjectStore,
    loader: Any,
    profile: Any,
    account: dict,
    run: AccountRun,
    stored: set[str],
    budget: list[float],
    options: CollectOptions,
    sleep: Callable[[float], None],
    *,
    segment: dict,
    after: list[dict],
    rest: list[dict],
) -> bool:
    """Continue one frozen iteration down to its bound; True when it is complete."""
    from instaloader import FrozenNodeIterator
    from instaloader.exceptions import InvalidArgumentException

    iterator = _with_backoff(profile.get_posts, options, sleep)
    try:
        iterator.thaw(FrozenNodeIterator(**segment["iterator"]))
    except (InvalidArgumentException, TypeError, KeyError) as exc:
        log.warning("%s: a backfill cursor cannot be used (%s); dropped", run.username, exc)
        _save_segments(engine, account["id"], [*after, *rest])
        return True
    until = datetime.fromisoformat(segment["until"]) if segment.get("until") else None
    for post in _with_backoff_iter(iterator, options, sleep):
        if until and post.date_utc.replace(tzinfo=UTC) <= until:
            break
        if budget[0] <= 0:
            return False  # the segment saved after the last stored post stays
        if post.shortcode not in stored:
            _store(engine, store, loader, account, post, run, stored, budget)
        _save_segments(engine, account["id"], [*after, _segment(iterator, until), *rest])
    _save_segments(engine, account["id"], [*after, *rest])
    return True


def _segment(iterator: Any, until: datetime | None) -> dict:
    """Where an iteration stands (instaloader's frozen iterator) and where it stops."""
    return {"iterator": iterator.freeze()._asdict(), "until": until.isoformat() if until else None}


# -- Instagram's refusals -------------------------------------------------------------------------
def _classify(exc: BaseException) -> tuple[str, str, bool]:
    """(status, reason, worth waiting for) for an exception instaloader raised."""
    from instaloader.exceptions import (
        AbortDownloadException,
        ConnectionException,
        LoginException,
        LoginRequiredException,
        PrivateProfileNotFollowedException,
        TooManyRequestsException,
    )

    message = str(exc)
    lowered = message.lower()
    if any(word in lowered for word in BLOCK_MESSAGES) or isinstance(exc, AbortDownloadException):
        return (
            "blocked",
            "Instagram asks this session to pass a checkpoint or challenge: log in to "
            "instagram.com with a browser, solve it, refresh the session file "
            f"(CATALOGUE_INSTAGRAM_SESSION_FILE), then `catalogue accounts enable` ({message})",
            False,
        )
    if isinstance(exc, LoginException):
        return ("blocked", f"Instagram refused the login: {message}", False)
    if isinstance(exc, (LoginRequiredException, PrivateProfileNotFollowedException)):
        return ("private", "the profile is private: its posts cannot be collected", False)
    if isinstance(exc, TooManyRequestsException) or any(w in lowered for w in WAIT_MESSAGES):
        return ("failing", "Instagram asks to wait a few minutes (401/429); retried later", True)
    if isinstance(exc, ConnectionException):
        return ("failing", f"connection to Instagram failed: {message}", True)
    return ("failing", f"unexpected answer from Instagram: {type(exc).__name__}: {message}", True)


def _refusals() -> tuple[type[BaseException], ...]:
    from instaloader.exceptions import AbortDownloadException, InstaloaderException

    return (InstaloaderException, AbortDownloadException)


def _with_backoff(call: Callable[[], Any], options: CollectOptions, sleep) -> Any:
    for wait in (*options.backoff_s, None):
        try:
            return call()
        except _StopAccount:
            raise
        except _refusals() as exc:
            status, reason, transient = _classify(exc)
            if not transient or wait is None:
                raise _StopAccount(status, reason) from None
            log.warning("%s; waiting %.0f s", reason, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _with_backoff_iter(iterator: Iterator[Any], options: CollectOptions, sleep) -> Iterator[Any]:
    """The iterator's items; a refused request is asked for again after a wait.

    A NodeIterator advances its position before wrapping a node (anonymously that wrapping is a
    request of its own), so a refused item would be skipped on retry; its position is restored.
    """

    def step() -> Any:
        position = (iterator._page_index, iterator._total_index, iterator._data)
        try:
            return next(iterator, _END)
        except BaseException:
            iterator._page_index, iterator._total_index, iterator._data = position
            raise

    while True:
        item = _with_backoff(step, options, sleep)
        if item is _END:
            return
        yield item


_END = object()


# -- the account row --------------------------------------------------------------------------------
def _account_row(engine: Engine, name: str) -> dict:
    with engine.connect() as connection:
        row = (
            connection.execute(
                text(
                    "SELECT id, username, instagram_id, enabled, allow_personal, status, "
                    "newest_post_taken_at, resume_cursor FROM raw.accounts WHERE username = :u"
                ),
                {"u": name},
            )
            .mappings()
            .first()
        )
    if row is None:
        raise UnknownAccount(f"no account '{name}': add it with `catalogue accounts add {name}`")
    return dict(row)


def _stored_media_ids(engine: Engine, post_media_id: int) -> set[int]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                text(
                    "SELECT media_id FROM raw.post_images "
                    "WHERE post_media_id = :m AND removed_at IS NULL"
                ),
                {"m": post_media_id},
            ).scalars()
        )


def _stored_shortcodes(engine: Engine, account_id: int) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT shortcode FROM raw.posts WHERE account_id = :a"), {"a": account_id}
            ).scalars()
        )


def _save_segments(engine: Engine, account_id: int, segments: list[dict]) -> None:
    with engine.begin() as connection:
        save_resume_cursor(connection=connection, account_id=account_id, segments=segments)


def _mark_unavailable(
    engine: Engine, account_id: int, refresh_after: datetime, seen: set[str], now: datetime
) -> int:
    """Posts of the freshness window that Instagram no longer lists leave the marketplace."""
    with engine.begin() as connection:
        return connection.execute(
            text(
                "UPDATE raw.posts SET unavailable_since = :now WHERE account_id = :a "
                "AND taken_at >= :after AND unavailable_since IS NULL "
                "AND NOT (shortcode = ANY(:seen))"
            ),
            {"a": account_id, "after": refresh_after, "seen": sorted(seen), "now": now},
        ).rowcount


def _mark_attempt(engine: Engine, account_id: int, now: datetime) -> None:
    with engine.begin() as connection:
        record_attempt(connection=connection, account_id=account_id, at=now)


def _record_success(engine: Engine, account_id: int, run: AccountRun, now: datetime) -> None:
    with engine.begin() as connection:
        record_success(connection=connection, account_id=account_id, at=now)


def _record_failure(
    engine: Engine, account_id: int, status: str, reason: str, now: datetime
) -> None:
    with engine.begin() as connection:
        record_failure(
            connection=connection, account_id=account_id, status=status, reason=reason, at=now
        )


# -- running it -------------------------------------------------------------------------------------
def make_loader(
    *,
    engine: Engine,
    session_file: Any = None,
    username: str | None = None,
    session_cookies: dict[str, str] | None = None,
    rate_controller: Callable[[Any], Any] | None = None,
    sleep: bool = True,
) -> Any:
    """An instaloader that downloads nothing itself, its request history kept in Postgres, logged
    in from a session file or its cookies (an Airflow Variable) when given, anonymous otherwise."""
    import instaloader

    from pipeline.collect.rate_limits import PersistentRateController

    session = username or "anonymous"
    loader = instaloader.Instaloader(
        sleep=sleep,  # instaloader's own pauses between requests; tests turn them off
        quiet=True,
        download_pictures=False,
        download_videos=False,
        download_video_thumbnails=False,
        save_metadata=False,
        max_connection_attempts=3,
        rate_controller=rate_controller
        or (lambda context: PersistentRateController(context, engine=engine, session=session)),
    )
    if session_file is not None:
        loader.load_session_from_file(username, str(session_file))
    elif session_cookies:
        loader.load_session(username, session_cookies)
    return loader


def enabled_accounts(engine: Engine, only: list[str] | None = None) -> list[str]:
    with engine.connect() as connection:
        names = connection.execute(
            text("SELECT username FROM raw.accounts WHERE enabled ORDER BY username")
        ).scalars()
        enabled = list(names)
    if only:
        wanted = [normalise_username(name) for name in only]
        unknown = sorted(set(wanted) - set(enabled))
        if unknown:
            raise UnknownAccount(
                f"not registered or disabled: {', '.join(unknown)} (see `catalogue accounts list`)"
            )
        return wanted
    return enabled

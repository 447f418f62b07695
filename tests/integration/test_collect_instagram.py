"""Live collection: instaloader's real code, Instagram replayed at the HTTP transport level
(tests/instagram_replay.py), the real Postgres and S3 server, on a virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from pipeline.accounts import add_account
from pipeline.collect.instagram import CollectOptions, collect_account, make_loader
from pipeline.collect.rate_limits import PersistentRateController
from pipeline.storage import ObjectStore
from tests.instagram_replay import (
    InstagramReplay,
    ReplayAccount,
    ReplayImage,
    ReplayPost,
    VirtualTime,
    jpeg,
    session_data,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _post(
    number: int, *, days_ago: float, images: int = 1, video: bool = False, pinned: bool = False
) -> ReplayPost:
    media_id = 3_300_000_000_000_000_000 + number * 100
    colour = ((number * 37) % 256, (number * 91) % 256, (number * 53) % 256)
    pictures = [
        ReplayImage(
            media_id=media_id if images == 1 else media_id + k + 1,
            data=jpeg(colour=(colour[0], colour[1], (colour[2] + k * 40) % 256)),
        )
        for k in range(images)
    ]
    return ReplayPost(
        shortcode=f"P{number:04d}xyz", media_id=media_id,
        taken_at=NOW - timedelta(days=days_ago), caption=f"Look {number} #navyblue #tshirts",
        likes=10 + number, comments=number % 7, images=pictures, is_video=video, pinned=pinned,
    )  # fmt: skip


def _shop(username: str = "shopname", posts: int = 30, first: int = 1, **kwargs) -> ReplayAccount:
    timeline = [
        _post(
            n,
            days_ago=(n - first) * 2 + 1,
            images=3 if n - first in (3, 16) else 1,
            video=n - first == 8,
        )
        for n in range(first, first + posts)
    ]
    timeline.append(_post(first + 899, days_ago=200, pinned=True))  # old, pinned: listed first
    return ReplayAccount(username=username, profile_id=7_000_000_000 + len(username),
                         full_name=username.title(), posts=timeline, **kwargs)  # fmt: skip


@pytest.fixture
def catalogue(migrated):
    with migrated.begin() as connection:
        connection.execute(
            text("TRUNCATE raw.accounts, raw.quarantine, raw.instagram_requests CASCADE")
        )
    return migrated


@pytest.fixture
def store(settings) -> ObjectStore:
    return ObjectStore.for_images(settings)


def _collect(engine, store, username="shopname", *, time: VirtualTime, logged_in=False, **options):
    def controller(context):
        return PersistentRateController(
            context,
            engine=engine,
            session="test-session",
            clock=time.clock,
            wall=time.wall,
            sleep=time.sleep,
        )

    loader = make_loader(engine=engine, rate_controller=controller, sleep=False)
    if logged_in:
        loader.load_session("viewer", session_data())
    return collect_account(
        engine=engine, store=store, loader=loader, username=username,
        options=CollectOptions(backoff_s=(60.0, 300.0), **options), sleep=time.sleep,
        now=time.wall,
    )  # fmt: skip


def _stored(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            "posts": connection.execute(text("SELECT count(*) FROM raw.posts")).scalar_one(),
            "images": connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one(),
            "distinct_posts": connection.execute(
                text("SELECT count(DISTINCT shortcode) FROM raw.posts")
            ).scalar_one(),
        }


def _account(engine, username="shopname"):
    with engine.connect() as connection:
        return (
            connection.execute(
                text("SELECT * FROM raw.accounts WHERE username = :u"), {"u": username}
            )
            .mappings()
            .one()
        )


@pytest.mark.parametrize(
    "logged_in", [pytest.param(False, id="anonymous"), pytest.param(True, id="logged-in")]
)
def test_first_run_stores_every_post_and_picture(catalogue, store, logged_in):
    shop = _shop()
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([shop]) as replay:
        run = _collect(catalogue, store, time=VirtualTime(NOW), logged_in=logged_in)
    assert run.ok, run.reason
    assert run.posts_new == 31
    assert _stored(catalogue) == {"posts": 31, "images": 31 + 2 * 2, "distinct_posts": 31}
    account = _account(catalogue)
    assert account["instagram_id"] == shop.profile_id and account["is_business"]
    assert account["follower_count"] == shop.followers
    assert account["last_success_at"] is not None
    with catalogue.connect() as connection:
        carousel = connection.execute(
            text(
                "SELECT i.position, i.media_id FROM raw.images i JOIN raw.posts p "
                "ON p.id = i.post_id WHERE p.shortcode = 'P0004xyz' ORDER BY i.position"
            )
        ).all()
        video = connection.execute(
            text(
                "SELECT p.media_type, i.is_video_cover FROM raw.images i JOIN raw.posts p "
                "ON p.id = i.post_id WHERE p.shortcode = 'P0009xyz'"
            )
        ).one()
        post = connection.execute(
            text("SELECT like_count, hashtags FROM raw.posts WHERE shortcode = 'P0005xyz'")
        ).one()
    assert carousel == [(k, 3_300_000_000_000_000_400 + k + 1) for k in range(3)]
    assert tuple(video) == ("video", True)
    assert post.like_count == 15 and post.hashtags == ["navyblue", "tshirts"]
    picture = shop.posts[4].images[0]
    key = store.put_content(picture.data, content_type="image/jpeg").key
    assert store.get(key) == picture.data
    assert replay.count("other") == 0


def test_incremental_run_takes_only_new_posts_past_the_pinned_one(catalogue, store):
    shop = _shop()
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([shop]) as replay:
        _collect(catalogue, store, time=VirtualTime(NOW))
        replay.add_post("shopname", _post(31, days_ago=0.5))
        replay.add_post("shopname", _post(32, days_ago=0.2))
        before = len(replay.requests)
        run = _collect(catalogue, store, time=VirtualTime(NOW), refresh_days=1)
        second = replay.requests[before:]
    assert run.ok and run.posts_new == 2
    assert _stored(catalogue)["posts"] == 33
    # stopped early: no second timeline page, no post query past the known ones
    assert sum(r.kind == "timeline" for r in second) <= 1
    assert sum(r.kind == "image" for r in second) == 2


def test_capped_run_leaves_a_cursor_and_later_runs_take_new_posts_first(catalogue, store):
    shop = _shop()
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([shop]) as replay:
        first = _collect(catalogue, store, time=VirtualTime(NOW), max_posts=10)
        assert first.capped and first.backfill_pending and first.posts_new == 10
        assert _account(catalogue)["resume_cursor"] is not None

        replay.add_post("shopname", _post(40, days_ago=0.1))
        second = _collect(catalogue, store, time=VirtualTime(NOW), max_posts=10)
        with catalogue.connect() as connection:
            newest = connection.execute(
                text("SELECT 1 FROM raw.posts WHERE shortcode = 'P0040xyz'")
            ).scalar()
        assert newest == 1 and second.posts_new == 10

        third = _collect(catalogue, store, time=VirtualTime(NOW), max_posts=50)
    assert third.ok and not third.backfill_pending
    assert _stored(catalogue) == {"posts": 32, "images": 32 + 4, "distinct_posts": 32}
    assert _account(catalogue)["resume_cursor"] is None


def test_a_429_is_waited_out_by_the_rate_controller(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    time = VirtualTime(NOW)
    with InstagramReplay([_shop()]) as replay:
        replay.fail_next("timeline", status=429)
        run = _collect(catalogue, store, time=time)
    assert run.ok and run.posts_new == 31
    assert time.sleeps and max(time.sleeps) > 60  # instaloader's own wait, on the virtual clock


def test_please_wait_that_persists_ends_the_run_cleanly_and_a_later_run_completes(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    please_wait = {"message": "Please wait a few minutes before you try again.", "status": "fail"}
    with InstagramReplay([_shop()]) as replay:
        replay.fail_next("timeline", status=401, body=please_wait, times=100)
        time = VirtualTime(NOW)
        run = _collect(catalogue, store, time=time)
        assert run.status == "failing" and "wait" in run.reason
        assert time.sleeps[-2:] == [60.0, 300.0]  # backed off, then gave up
        kept = _stored(catalogue)["posts"]
        assert kept == 12  # the first page came with the profile page; it is kept
        account = _account(catalogue)
        assert account["enabled"] and "wait" in account["last_failure_reason"]

        replay._failures.clear()
        again = _collect(catalogue, store, time=VirtualTime(NOW))
    assert again.ok
    assert _stored(catalogue) == {"posts": 31, "images": 35, "distinct_posts": 31}


@pytest.mark.parametrize(
    ("world", "status", "words"),
    [
        pytest.param(
            lambda r: r.fail_next(
                "profile_page",
                status=400,
                body={
                    "message": "checkpoint_required",
                    "checkpoint_url": "/challenge/1/",
                    "status": "fail",
                },
            ),
            "blocked",
            "checkpoint",
            id="checkpoint",
        ),
        pytest.param(lambda r: r.make_private("shopname"), "private", "private", id="private"),
        pytest.param(lambda r: r.delete("shopname"), "deleted", "no profile", id="deleted"),
    ],
)
def test_refusals_stop_the_account_and_the_others_go_on(catalogue, store, world, status, words):
    add_account(engine=catalogue, username="shopname")
    add_account(engine=catalogue, username="othershop")
    with InstagramReplay([_shop(), _shop("othershop", posts=5, first=1001)]) as replay:
        world(replay)
        stopped = _collect(catalogue, store, time=VirtualTime(NOW))
        other = _collect(catalogue, store, "othershop", time=VirtualTime(NOW))
    assert stopped.status == status and words in stopped.reason
    account = _account(catalogue)
    assert account["status"] == status and not account["enabled"]
    assert words in account["last_failure_reason"]
    assert other.ok and other.posts_new == 6


def test_a_personal_account_is_disabled_unless_allowed(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop(is_business=False)]):
        run = _collect(catalogue, store, time=VirtualTime(NOW))
        assert run.status == "personal" and not _account(catalogue)["enabled"]
        assert _stored(catalogue)["posts"] == 0
        add_account(engine=catalogue, username="shopname", allow_personal=True)
        with catalogue.begin() as connection:
            connection.execute(text("UPDATE raw.accounts SET enabled = true"))
        allowed = _collect(catalogue, store, time=VirtualTime(NOW))
    assert allowed.ok and allowed.posts_new == 31


def test_a_picture_failing_once_is_fetched_again(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop()]) as replay:
        replay.fail_next("image", status=500)
        run = _collect(catalogue, store, time=VirtualTime(NOW))
    assert run.ok and _stored(catalogue)["images"] == 35


def test_freshness_pass_refreshes_counts_and_marks_deleted_posts(catalogue, store):
    shop = _shop()
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([shop]) as replay:
        _collect(catalogue, store, time=VirtualTime(NOW))
        shop.posts[0].likes = 999  # P0001, one day old
        replay.remove_post("shopname", "P0002xyz")  # three days old
        run = _collect(catalogue, store, time=VirtualTime(NOW), refresh_days=10)
    assert run.ok and run.posts_unavailable == 1
    with catalogue.connect() as connection:
        likes = connection.execute(
            text("SELECT like_count FROM raw.posts WHERE shortcode = 'P0001xyz'")
        ).scalar_one()
        gone = (
            connection.execute(
                text("SELECT shortcode FROM raw.posts WHERE unavailable_since IS NOT NULL")
            )
            .scalars()
            .all()
        )
    assert likes == 999 and gone == ["P0002xyz"]


def test_the_request_history_outlives_the_process(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop()]) as replay:
        _collect(catalogue, store, time=VirtualTime(NOW))
        made = len([r for r in replay.requests if r.kind != "image"])
    with catalogue.connect() as connection:
        recorded = connection.execute(text("SELECT count(*) FROM raw.instagram_requests")).scalar()
    assert recorded > 0 and recorded <= made
    time = VirtualTime(NOW)
    import instaloader

    controller = PersistentRateController(
        instaloader.Instaloader(sleep=False, quiet=True).context, engine=catalogue,
        session="test-session", clock=time.clock, wall=time.wall, sleep=time.sleep,
    )  # fmt: skip
    assert sum(len(v) for v in controller._query_timestamps.values()) == recorded


def test_a_renamed_account_is_recorded_with_its_new_name(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop()]) as replay:
        _collect(catalogue, store, time=VirtualTime(NOW))
        replay.rename("shopname", "shopname.official")
        run = _collect(catalogue, store, time=VirtualTime(NOW))
    assert run.status == "renamed" and "@shopname.official" in run.reason
    account = _account(catalogue)
    assert (
        not account["enabled"]
        and "catalogue accounts add shopname.official" in (account["last_failure_reason"])
    )
    assert _stored(catalogue)["posts"] == 31  # what was collected stays


def test_since_bounds_the_first_run(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop()]):
        run = _collect(catalogue, store, time=VirtualTime(NOW), since=NOW - timedelta(days=20))
    assert run.ok
    with catalogue.connect() as connection:
        oldest = connection.execute(
            text("SELECT min(taken_at) FROM raw.posts WHERE shortcode <> 'P0900xyz'")
        ).scalar_one()
        posts = connection.execute(text("SELECT count(*) FROM raw.posts")).scalar_one()
    assert oldest >= NOW - timedelta(days=20)
    assert posts == 10 + 1  # posts 1..10 are within 20 days; the pinned one is taken too


_KILLABLE_RUN = """
import sys, time
sys.path.insert(0, {repo!r})
import pipeline.collect.instagram as instagram
from pipeline.config import load_settings
from pipeline.db import get_engine
from pipeline.storage import ObjectStore
from tests.instagram_replay import InstagramReplay, VirtualTime
from tests.integration.test_collect_instagram import NOW, _collect, _shop

store_post = instagram.store_post
def slow_store_post(**kwargs):  # slow enough that the kill lands mid-run
    time.sleep(0.1)
    return store_post(**kwargs)
instagram.store_post = slow_store_post
settings = load_settings()
engine = get_engine(settings.database_url)
with InstagramReplay([_shop()]):
    _collect(engine, ObjectStore.for_images(settings), time=VirtualTime(NOW))
"""


def test_kill_during_collection_then_rerun_completes_without_duplicates(catalogue, store, services):
    import signal
    import subprocess
    import sys
    import time as clock
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    add_account(engine=catalogue, username="shopname")
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_RUN.format(repo=str(repo))],
        env=services.env(), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = clock.monotonic() + 60
    while clock.monotonic() < deadline and _stored(catalogue)["posts"] < 15:
        clock.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _stored(catalogue)["posts"]
    assert 15 <= partial < 31, process.stderr.read().decode()[-2000:]
    assert _account(catalogue)["resume_cursor"] is not None

    with InstagramReplay([_shop()]):
        rerun = _collect(catalogue, store, time=VirtualTime(NOW))
    assert rerun.ok and rerun.posts_new == 31 - partial
    assert _stored(catalogue) == {"posts": 31, "images": 35, "distinct_posts": 31}
    with catalogue.connect() as connection:
        keys = connection.execute(text("SELECT object_key FROM raw.images")).scalars().all()
    assert all(store.exists(key) for key in keys)
    assert _account(catalogue)["resume_cursor"] is None


def test_a_capped_run_never_takes_unlisted_posts_for_deleted(catalogue, store):
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop()]):
        _collect(catalogue, store, time=VirtualTime(NOW))
        capped = _collect(catalogue, store, time=VirtualTime(NOW), refresh_days=30, max_posts=0)
    assert capped.posts_unavailable == 0
    with catalogue.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM raw.posts WHERE unavailable_since IS NOT NULL")
            ).scalar_one()
            == 0
        )


def test_collecting_a_renamed_shop_under_its_new_name_keeps_one_account(catalogue, store):
    """The operator adds the new name the rename told of: collecting it finds the stored account
    by its Instagram id, which takes the new name (the old one kept in its history), with every
    post already collected and none twice."""
    add_account(engine=catalogue, username="shopname")
    with InstagramReplay([_shop()]) as replay:
        _collect(catalogue, store, time=VirtualTime(NOW))
        replay.rename("shopname", "shopname.official")
        _collect(catalogue, store, time=VirtualTime(NOW))  # recorded as renamed
        add_account(engine=catalogue, username="shopname.official")
        run = _collect(catalogue, store, "shopname.official", time=VirtualTime(NOW))
    assert run.ok, run.reason
    assert run.posts_new == 0
    assert _stored(catalogue) == {"posts": 31, "images": 35, "distinct_posts": 31}
    account = _account(catalogue, "shopname.official")
    assert account["enabled"] and account["status"] == "active"
    with catalogue.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM raw.accounts")).scalar_one() == 1
        names = connection.execute(
            text("SELECT username FROM raw.account_names WHERE account_id = :a"),
            {"a": account["id"]},
        ).scalars()  # fmt: skip
        assert set(names) == {"shopname", "shopname.official"}


def test_a_refresh_puts_reordered_slides_where_the_shop_moved_them(catalogue, store):
    shop = _shop()
    add_account(engine=catalogue, username="shopname")
    carousel = shop.posts[3]  # P0004xyz, three pictures, seven days old
    with InstagramReplay([shop]):
        _collect(catalogue, store, time=VirtualTime(NOW))
        first, second, third = carousel.images
        carousel.images = [third, first]  # the second slide deleted, the last one moved first
        run = _collect(catalogue, store, time=VirtualTime(NOW), refresh_days=10)
    assert run.ok, run.reason
    with catalogue.connect() as connection:
        slides = connection.execute(
            text(
                "SELECT i.media_id, i.position, i.removed_at IS NULL AS live FROM raw.images i "
                "JOIN raw.posts p ON p.id = i.post_id WHERE p.shortcode = 'P0004xyz'"
            )
        ).all()
    assert {(s.media_id, s.position, s.live) for s in slides if s.live} == {
        (third.media_id, 0, True), (first.media_id, 1, True),
    }  # fmt: skip
    assert [s.media_id for s in slides if not s.live] == [second.media_id]

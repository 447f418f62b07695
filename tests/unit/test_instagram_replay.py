"""instaloader 4.16's real classes against the Instagram replay: what they ask, what they raise."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import instaloader
import pytest
import requests
from instaloader import (
    AbortDownloadException,
    ConnectionException,
    FrozenNodeIterator,
    LoginRequiredException,
    PrivateProfileNotFollowedException,
    ProfileNotExistsException,
    TooManyRequestsException,
)
from instaloader.nodeiterator import resumable_iteration
from instaloader.structures import load_structure_from_file, save_structure_to_file

from tests.instagram_replay import (
    InstagramReplay,
    ReplayAccount,
    ReplayImage,
    ReplayPost,
    VirtualClockRateController,
    accounts_from_archive,
    jpeg,
    posts_of,
    replay_loader,
)

POST_ID_BASE = 3_100_000_000_000_000_000
CHILD_ID_BASE = 3_200_000_000_000_000_000
NEWEST = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CAROUSELS = {4: 3, 9: 2}  # position in the timeline (without the pinned post) -> slides
VIDEO = 6
PLEASE_WAIT = {"message": "Please wait a few minutes before you try again.", "status": "fail"}
CHECKPOINT = {
    "message": "checkpoint_required",
    "checkpoint_url": "/challenge/AXG1234/abcdef/",
    "lock": False,
    "status": "fail",
}


def make_post(
    index: int, *, pinned: bool = False, slides: int = 1, video: bool = False
) -> ReplayPost:
    media_id = POST_ID_BASE + index * 16
    if slides > 1:
        ids = [CHILD_ID_BASE + index * 16 + slide for slide in range(slides)]
    else:
        ids = [media_id]
    return ReplayPost(
        shortcode=instaloader.Post.mediaid_to_shortcode(media_id),
        media_id=media_id,
        taken_at=NEWEST - timedelta(days=index, minutes=index),
        caption=f"Linen shirt no. {index}\n\n#red #Shirts #shop{index}",
        likes=100 + index,
        comments=index % 5,
        images=[
            ReplayImage(media_id=i, data=jpeg(60, 80, (index * 7 % 256, n * 60, 90)))
            for n, i in enumerate(ids)
        ],
        is_video=video,
        pinned=pinned,
    )


def make_shop(username: str = "shopname") -> ReplayAccount:
    """30 posts, 2 carousels and 1 video among them, and a pinned post older than all others."""
    posts = [make_post(40, pinned=True)]
    for index in range(29):
        posts.append(make_post(index, slides=CAROUSELS.get(index, 1), video=index == VIDEO))
    return ReplayAccount(
        username=username,
        profile_id=40_000_000_123,
        full_name="Shop Name Clothing",
        followers=12_345,
        posts=posts,
    )


def kinds(replay: InstagramReplay, since: int = 0) -> list[str]:
    return [request.kind for request in replay.requests[since:]]


def child_ids(post: instaloader.Post) -> list[int]:
    """Where each shape keeps the carousel children's media ids (see the replay's docstring)."""
    node = post._node
    struct = node.get("iphone_struct", node)
    return [int(child["pk"]) for child in struct["carousel_media"] or []]


def assert_post_matches(post: instaloader.Post, expected: ReplayPost) -> None:
    assert post.shortcode == expected.shortcode
    assert post.mediaid == expected.media_id
    assert post.date_utc == expected.taken_at.replace(tzinfo=None)  # instaloader's is naive
    assert post.caption == expected.caption
    assert post.caption_hashtags == [
        "red",
        "shirts",
        f"shop{(expected.media_id - POST_ID_BASE) // 16}",
    ]
    assert post.likes == expected.likes
    assert post.is_video is expected.is_video
    assert post.mediacount == len(expected.images)
    if len(expected.images) > 1:
        assert post.typename == "GraphSidecar"
        nodes = list(post.get_sidecar_nodes())
        assert [
            f"/{image.media_id}_n.jpg" in n.display_url
            for n, image in zip(nodes, expected.images, strict=True)
        ] == [True] * len(expected.images)
        assert child_ids(post) == [image.media_id for image in expected.images]
        # Neither live shape has the children's ids where archived GraphQL nodes have them.
        assert all("id" not in e["node"] for e in post._node["edge_sidecar_to_children"]["edges"])
    else:
        assert post.typename == ("GraphVideo" if expected.is_video else "GraphImage")
        assert list(post.get_sidecar_nodes()) == []
    assert f"/{expected.images[0].media_id}_n.jpg" in post.url


@pytest.fixture
def shop() -> ReplayAccount:
    return make_shop()


@pytest.fixture
def replay(shop: ReplayAccount):
    with InstagramReplay([shop]) as replay:
        yield replay


# -- profile and timeline, logged out --------------------------------------------------------------
def test_profile_from_username_reads_the_profile_page(replay: InstagramReplay) -> None:
    loader = replay_loader()
    profile = instaloader.Profile.from_username(loader.context, "ShopName")

    assert (profile.userid, profile.username, profile.full_name) == (
        40_000_000_123,
        "shopname",
        "Shop Name Clothing",
    )
    assert (profile.followers, profile.is_private, profile.mediacount) == (12_345, False, 30)
    assert profile.business_category_name == "Clothing (Brand)"  # the page's "category"
    assert kinds(replay) == ["profile_page"]
    # The logged-out page has no is_business: instaloader asks web_profile_info.
    assert profile.is_business_account is True
    assert kinds(replay) == ["profile_page", "profile_info"]
    assert replay.requests[1].url.startswith(
        "https://www.instagram.com/api/v1/users/web_profile_info/?username=shopname"
    )


def test_anonymous_timeline_gives_every_post_with_its_media(
    replay: InstagramReplay, shop: ReplayAccount
) -> None:
    loader = replay_loader()
    profile = instaloader.Profile.from_username(loader.context, "shopname")
    iterator = profile.get_posts()
    posts = list(iterator)

    expected = list(posts_of(shop))
    assert posts[0].shortcode == expected[0].shortcode and expected[0].pinned  # pinned, older
    assert [p.shortcode for p in posts] == [p.shortcode for p in expected]
    # The first 12 come with the second profile page; pages 2 (12) and 3 (6) are api/graphql
    # queries; each node is wrapped with Post.from_shortcode: one api/graphql query per post,
    # the first of them preceded by the start page for the LSD token and the csrftoken cookie.
    assert Counter(kinds(replay)) == {"profile_page": 2, "start_page": 1, "timeline": 2, "post": 30}
    assert kinds(replay)[:4] == ["profile_page", "profile_page", "start_page", "post"]
    assert iterator.first_item is not None
    assert iterator.first_item.shortcode == expected[1].shortcode  # newest, not the pinned one

    before = len(replay.requests)
    for post, want in zip(posts, expected, strict=True):
        assert_post_matches(post, want)
        assert post.comments == want.comments
        assert post._node["timeline_pinned_user_ids"] == ([shop.profile_id] if want.pinned else [])
    assert len(replay.requests) == before  # everything above was in the node already
    assert sum(p.typename == "GraphSidecar" for p in posts) == 2
    video = next(p for p in posts if p.is_video)
    assert requests.get(video.video_url, timeout=5).headers["Content-Type"] == "video/mp4"


def test_logged_in_timeline_gives_iphone_structs(
    replay: InstagramReplay, shop: ReplayAccount
) -> None:
    loader = replay_loader(session_user="viewer")
    profile = instaloader.Profile.from_username(loader.context, "shopname")
    assert (profile.userid, profile.full_name) == (40_000_000_123, "Shop Name Clothing")
    assert kinds(replay) == ["profile_page"]
    assert (profile.is_business_account, profile.business_category_name) == (
        True,
        "Clothing (Brand)",
    )
    assert (profile.followers, profile.is_private, profile.mediacount) == (12_345, False, 30)
    assert kinds(replay) == ["profile_page", "profile_info"]  # graphql/query, the Polaris profile
    assert replay.requests[1].url == "https://www.instagram.com/graphql/query"

    posts = list(profile.get_posts())
    expected = list(posts_of(shop))
    assert [p.shortcode for p in posts] == [p.shortcode for p in expected]
    # All three pages are api/graphql queries; the nodes are whole media structs.
    assert kinds(replay)[2:] == ["start_page", "timeline", "timeline", "timeline"]

    before = len(replay.requests)
    for post, want in zip(posts, expected, strict=True):
        assert_post_matches(post, want)
        assert "iphone_struct" in post._node
    assert len(replay.requests) == before
    # Post.comments looks for edge_media_to_parent_comment, which from_iphone_struct's node lacks:
    # one graphql/query per post.
    assert [post.comments for post in posts] == [want.comments for want in expected]
    assert kinds(replay, before) == ["post"] * 30


# -- freezing and resuming -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "session_user", [pytest.param(None, id="anonymous"), pytest.param("viewer", id="logged-in")]
)
def test_frozen_iteration_resumes_where_it_was_interrupted(
    replay: InstagramReplay, shop: ReplayAccount, tmp_path: Path, session_user: str | None
) -> None:
    def run(loader: instaloader.Instaloader, stop_after: int | None) -> tuple[list[str], int]:
        profile = instaloader.Profile.from_username(loader.context, "shopname")
        iterator = profile.get_posts()
        done: list[str] = []
        with resumable_iteration(
            context=loader.context,
            iterator=iterator,
            load=load_structure_from_file,
            save=save_structure_to_file,
            format_path=lambda magic: str(tmp_path / f"resume_{magic}.json"),
        ) as (_, start_index):
            for post in iterator:
                if stop_after is not None and len(done) == stop_after:
                    raise KeyboardInterrupt  # taken, not processed: the next run gives it again
                done.append(post.shortcode)
        return done, start_index

    with pytest.raises(KeyboardInterrupt):
        run(replay_loader(session_user=session_user), 15)
    (resume_file,) = tmp_path.glob("resume_*.json")
    saved = json.loads(resume_file.read_text())["node"]
    frozen = load_structure_from_file(replay_loader().context, str(resume_file))
    assert isinstance(frozen, FrozenNodeIterator)
    assert sorted(saved) == sorted(FrozenNodeIterator._fields)
    assert frozen.total_index == 15
    assert frozen.query_hash is None and frozen.context_username == session_user
    # The 16th post was taken from page 2 (posts 12-23): the rest of that page is kept, from it on.
    assert len(frozen.remaining_data["edges"]) == 9
    assert frozen.remaining_data["page_info"]["has_next_page"] is True

    expected = [p.shortcode for p in posts_of(shop)]
    first_run = expected[:15]
    before = len(replay.requests)
    second_run, start_index = run(replay_loader(session_user=session_user), None)
    assert start_index == 15
    assert second_run == expected[15:]
    assert not set(first_run) & set(second_run)
    assert not resume_file.exists()
    if session_user is None:
        # from_username and get_posts pages, start page, page 3, posts 16-30, and one more post
        # query: after thawing, NodeIterator.first_item rebuilds the first item from first_node.
        assert Counter(kinds(replay, before)) == {
            "profile_page": 2,
            "start_page": 1,
            "timeline": 1,
            "post": 16,
        }
    else:
        # The NodeIterator queries page 1 when constructed, before thaw() replaces it; then page 3.
        # first_item is rebuilt from the media struct in first_node, without a request.
        assert Counter(kinds(replay, before)) == {
            "profile_page": 1,
            "profile_info": 1,
            "start_page": 1,
            "timeline": 2,
        }


# -- pictures --------------------------------------------------------------------------------------
def test_pictures_round_trip_through_every_client(
    replay: InstagramReplay, shop: ReplayAccount, tmp_path: Path
) -> None:
    loader = replay_loader()
    profile = instaloader.Profile.from_username(loader.context, "shopname")
    for post, want in zip(profile.get_posts(), posts_of(shop), strict=True):
        urls = [n.display_url for n in post.get_sidecar_nodes()] or [post.url]
        for url, image in zip(urls, want.images, strict=True):
            assert loader.context.get_raw(url).content == image.data
            assert requests.get(url, timeout=5).content == image.data
            assert loader.context._session.get(url).content == image.data
    assert replay.count("image") == 3 * 33  # 28 single pictures or covers and 5 slides, 3 ways

    post = next(iter(instaloader.Profile.from_username(loader.context, "shopname").get_posts()))
    assert loader.download_pic(str(tmp_path / "cover"), post.url, post.date_utc)
    assert (tmp_path / "cover.jpg").read_bytes() == shop.posts[0].images[0].data


def test_a_picture_failing_once_is_served_when_retried(
    replay: InstagramReplay, shop: ReplayAccount, tmp_path: Path
) -> None:
    loader = replay_loader()
    post = next(iter(instaloader.Profile.from_username(loader.context, "shopname").get_posts()))

    replay.fail_next("image", status=500)
    with pytest.raises(ConnectionException, match="500 Internal Server Error"):
        loader.context.get_raw(post.url)  # get_raw itself does not retry
    assert loader.context.get_raw(post.url).content == shop.posts[0].images[0].data

    replay.fail_next("image", status=500)
    assert loader.download_pic(str(tmp_path / "pic"), post.url, post.date_utc)  # retries
    assert (tmp_path / "pic.jpg").read_bytes() == shop.posts[0].images[0].data
    assert [(r.kind, r.status) for r in replay.requests if r.kind == "image"] == [
        ("image", 500),
        ("image", 200),
        ("image", 500),
        ("image", 200),
    ]


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "session_user", [pytest.param(None, id="anonymous"), pytest.param("viewer", id="logged-in")]
)
def test_a_429_is_waited_out_on_the_virtual_clock(
    replay: InstagramReplay, session_user: str | None
) -> None:
    loader = replay_loader(session_user=session_user)
    profile = instaloader.Profile.from_username(loader.context, "shopname")
    replay.fail_next("timeline", status=429, body={"message": "rate limited", "status": "fail"})

    assert len(list(profile.get_posts())) == 30

    controller = loader.context._rate_controller
    assert isinstance(controller, VirtualClockRateController)
    # handle_429: the oldest query of that doc_id in the 11-minute window + 660 s + 6 s.
    assert controller.slept == [pytest.approx(666.0)]
    assert [r.status for r in replay.requests if r.kind == "timeline"][:2] == [429, 200]


def test_please_wait_a_few_minutes_repeated_raises_connection_exception(
    replay: InstagramReplay,
) -> None:
    loader = replay_loader(max_connection_attempts=3)
    iterator = instaloader.Profile.from_username(loader.context, "shopname").get_posts()
    replay.fail_next("timeline", status=401, body=PLEASE_WAIT, times=5)

    with pytest.raises(ConnectionException) as raised:
        list(iterator)
    assert type(raised.value) is ConnectionException  # not TooManyRequestsException: no waiting
    assert str(raised.value) == (
        'JSON Query to api/graphql: 401 Unauthorized - "fail" status, message "Please wait a few '
        'minutes before you try again." when accessing https://www.instagram.com/api/graphql'
    )
    assert [r.status for r in replay.requests if r.kind == "timeline"] == [401, 401, 401]
    assert loader.context._rate_controller.slept == []


def test_checkpoint_on_the_profile_page_is_a_connection_exception(replay: InstagramReplay) -> None:
    replay.fail_next("profile_page", status=400, body=CHECKPOINT)
    with pytest.raises(ConnectionException, match="checkpoint") as raised:
        instaloader.Profile.from_username(replay_loader().context, "shopname")
    # _get_page does not look for checkpoint_required, unlike get_json: no AbortDownloadException.
    assert str(raised.value) == (
        '400 Bad Request - "fail" status, message "checkpoint_required" when accessing '
        "https://www.instagram.com/shopname/"
    )
    assert kinds(replay) == ["profile_page"]


def test_checkpoint_on_a_query_aborts_the_download(replay: InstagramReplay) -> None:
    loader = replay_loader()
    iterator = instaloader.Profile.from_username(loader.context, "shopname").get_posts()
    replay.fail_next("timeline", status=400, body=CHECKPOINT, times=3)
    with pytest.raises(AbortDownloadException, match="checkpoint_required"):
        list(iterator)
    assert not issubclass(AbortDownloadException, instaloader.InstaloaderException)
    assert [r.status for r in replay.requests if r.kind == "timeline"] == [400]  # no retry


def test_a_deleted_profile_does_not_exist(replay: InstagramReplay) -> None:
    replay.delete("shopname")
    with pytest.raises(ProfileNotExistsException, match="Profile shopname does not exist"):
        instaloader.Profile.from_username(replay_loader().context, "shopname")
    assert [(r.kind, r.status) for r in replay.requests] == [("profile_page", 404)]


def test_a_renamed_profile_answers_under_its_new_name_only(replay: InstagramReplay) -> None:
    replay.rename("shopname", "shopname.official")
    loader = replay_loader()
    with pytest.raises(ProfileNotExistsException):
        instaloader.Profile.from_username(loader.context, "shopname")
    profile = instaloader.Profile.from_username(loader.context, "shopname.official")
    assert profile.userid == 40_000_000_123
    post = next(iter(profile.get_posts()))
    assert post.owner_username == "shopname.official"


def test_a_private_profile(replay: InstagramReplay) -> None:
    replay.make_private("shopname")
    profile = instaloader.Profile.from_username(replay_loader().context, "shopname")
    assert profile.is_private is True
    with pytest.raises(LoginRequiredException, match="private profile shopname"):
        profile.get_posts()

    logged_in = instaloader.Profile.from_username(
        replay_loader(session_user="viewer").context, "shopname"
    )
    with pytest.raises(PrivateProfileNotFollowedException, match="private but not followed"):
        logged_in.get_posts()


def test_unknown_endpoints_fail_loudly(replay: InstagramReplay) -> None:
    assert (
        requests.get("https://www.instagram.com/api/v1/feed/timeline/", timeout=5).status_code
        == 404
    )
    assert requests.get("https://example.org/", timeout=5).status_code == 404
    assert [(r.kind, r.status) for r in replay.requests] == [("other", 404), ("other", 404)]


def test_the_world_changes_between_runs(replay: InstagramReplay, shop: ReplayAccount) -> None:
    loader = replay_loader()

    def shortcodes() -> list[str]:
        profile = instaloader.Profile.from_username(loader.context, "shopname")
        return [post.shortcode for post in profile.get_posts()]

    before = shortcodes()
    new = make_post(-1)
    replay.add_post("shopname", new)
    gone = shop.posts[3]
    replay.remove_post("shopname", gone.shortcode)
    carousel = make_shop().posts[5]  # 3 slides
    replay.remove_slide("shopname", carousel.shortcode, carousel.images[1].media_id)

    after = shortcodes()
    assert after == [before[0], new.shortcode] + [s for s in before[1:] if s != gone.shortcode]
    post = instaloader.Post.from_shortcode(loader.context, carousel.shortcode)
    assert child_ids(post) == [carousel.images[0].media_id, carousel.images[2].media_id]
    gone_url = f"https://scontent.cdninstagram.com/v/t51.2885-15/{gone.media_id}_n.jpg"
    assert requests.get(gone_url, timeout=5).status_code == 404
    with pytest.raises(ValueError, match="at least 2"):
        replay.remove_slide("shopname", carousel.shortcode, carousel.images[0].media_id)


def test_the_virtual_clock_advances_the_sliding_windows(replay: InstagramReplay) -> None:
    loader = replay_loader()
    for _ in range(76):  # 75 "other" requests (pages) per 11 minutes
        instaloader.Profile.from_username(loader.context, "shopname")
    controller = loader.context._rate_controller
    assert controller.slept == [pytest.approx(666.0)]
    for _ in range(74):
        instaloader.Profile.from_username(loader.context, "shopname")
    assert len(controller.slept) == 1  # the first 75 left the window when the clock moved on
    assert not isinstance(TooManyRequestsException("x"), AbortDownloadException)


# -- an archive, replayed --------------------------------------------------------------------------
def test_an_archive_replays_as_the_same_posts_and_pictures(dataset: Path, tmp_path: Path) -> None:
    from pipeline.samples import generate_sample_accounts

    archive = tmp_path / "sample"
    generate_sample_accounts(dataset, archive, size=40)
    with (archive / "manifest.csv").open(newline="", encoding="utf-8") as fp:
        manifest: dict[str, list[dict[str, Any]]] = {}
        for row in csv.DictReader(fp):
            manifest.setdefault(row["shortcode"], []).append(row)
    accounts = accounts_from_archive(archive)
    assert {a.username for a in accounts} == {rows[0]["account"] for rows in manifest.values()}

    with InstagramReplay(accounts) as replay:
        loader = replay_loader()
        for account in accounts:
            archived = sorted(
                (
                    load_structure_from_file(loader.context, str(f))
                    for f in (archive / account.username).glob("*_UTC.json.xz")
                ),
                key=lambda p: p.date_utc,
                reverse=True,
            )
            profile = instaloader.Profile.from_username(loader.context, account.username)
            assert profile.userid == account.profile_id
            posts = list(profile.get_posts())
            assert [p.shortcode for p in posts] == [p.shortcode for p in archived]
            for post in posts:
                rows = sorted(manifest[post.shortcode], key=lambda r: int(r["position"]))
                urls = [n.display_url for n in post.get_sidecar_nodes()] or [post.url]
                pictures = [loader.context.get_raw(url).content for url in urls]
                assert pictures == [(archive / r["file"]).read_bytes() for r in rows]
                if post.typename == "GraphSidecar":
                    assert child_ids(post) == [int(r["media_id"]) for r in rows]
        assert replay.count("other") == 0

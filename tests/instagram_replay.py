"""Instagram, replayed at the HTTP transport level for instaloader 4.16.

instagram.com cannot be reached from the tests, so `InstagramReplay` answers every request that
instaloader's own code makes (through `responses`, which patches `requests`' transport) with bodies
shaped exactly as instaloader 4.16 parses them. Our collector runs unchanged against it::

    with InstagramReplay([account]) as replay:
        loader = replay_loader()
        profile = instaloader.Profile.from_username(loader.context, account.username)
        for post in profile.get_posts():
            ...

What instaloader 4.16 asks for (tests/unit/test_instagram_replay.py asserts the counts):

anonymous
  `GET www.instagram.com/<user>/` (kind "profile_page"), once for `Profile.from_username` and once
  more for `Profile.get_posts`: an HTML page whose `<script type="application/json">` blocks hold
  `__bbox.result.data.xig_user_by_username` (`InstaloaderContext.get_page_data`), the second of
  them with the first 12 posts in `polaris_ordered_timeline_connection`.
  `GET www.instagram.com/` (kind "start_page"), once per loader: the web app's `LSD` and
  `IG_USER_EIMU` tokens (`InstaloaderContext._web_api_tokens`) and the `csrftoken` cookie
  (`_csrf_token`).
  `POST www.instagram.com/api/graphql` doc_id 28904005159232689 (kind "timeline") for each further
  page of 12; doc_id 27128499623469141 (kind "post") once per post, because the timeline wraps
  each node with `Post.from_shortcode`.
  `GET www.instagram.com/api/v1/users/web_profile_info/` (kind "profile_info") when a profile
  attribute the page lacks is read (`Profile._obtain_metadata`): `is_business_account`.

logged in (a session loaded with `Instaloader.load_session`)
  the profile page as above, once; `POST graphql/query` doc_id 27937681195819736 (kind
  "profile_info") for the attributes the logged-out page lacks; `GET /` with `DTSGInitialData`;
  `POST api/graphql` doc_id 29104886249145907 (kind "timeline") for every page, including the
  first, each node an iPhone media struct (`Post.from_iphone_struct`); `POST graphql/query` doc_id
  27128499623469141 (kind "post") only when an attribute the struct lacks is read
  (`Post.comments` is one).

Pictures and videos come from `scontent.cdninstagram.com` (kinds "image" and "video").

Where each shape keeps a carousel child's media id: an iPhone/Polaris media struct has it in
`carousel_media[i]["pk"]` (a string; `id` is `"<pk>_<owner pk>"`). The anonymous `Post._node` is
`Post._normalize_post_data` of that struct, whose `edge_sidecar_to_children` children carry no
`id`, so the ids are in `post._node["carousel_media"][i]["pk"]`. The logged-in `Post._node` is
`from_iphone_struct`'s node, whose children carry no id either; the ids are in
`post._node["iphone_struct"]["carousel_media"][i]["pk"]`. Only nodes in the old GraphQL shape
(archives written by instaloader, `pipeline.samples`) have `edge_sidecar_to_children.edges[i]
.node.id`.

Requests to anything else, on any host, are answered 404 and recorded with kind "other", so a test
notices an endpoint it did not expect; `responses` never lets a request reach the network.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import textwrap
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import instaloader
import requests
import responses

KINDS = (
    "start_page",
    "profile_page",
    "profile_info",
    "timeline",
    "post",
    "image",
    "video",
    "other",
)

# The doc_ids instaloader 4.16 sends (structures.py).
DOC_ID_TIMELINE_ANONYMOUS = "28904005159232689"  # Profile.get_posts, logged out
DOC_ID_TIMELINE_LOGGED_IN = "29104886249145907"  # Profile.get_posts, logged in
DOC_ID_POST = "27128499623469141"  # Post._obtain_metadata
DOC_ID_PROFILE = "27937681195819736"  # Profile._obtain_metadata (logged in), Profile.from_id

PAGE_LENGTH = 12  # NodeIterator._graphql_page_length; the profile page embeds as many
CDN = "https://scontent.cdninstagram.com"
MP4_PLACEHOLDER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
LSD_TOKEN = "AVqbxe3J_YA"
DTSG_TOKEN = "NAcMC4xCJ8fXvGq0aJ1hRk0bQw:17843696212148243:1712345678"
CSRF_TOKEN = "missing-csrf-replay-0123456789ab"
VIEWER_ID = 900_000_001  # the logged-in viewer's user id (ds_user_id) in `session_data`
_PAGE_ID_BASE = 17_841_400_000_000_000  # the profile page's "id" is not the user id

_CDN_MEDIA = re.compile(r"/(\d+)_n\.(jpg|mp4)$")
_PROFILE_PATH = re.compile(r"^/([a-z0-9._]{1,30})/$", re.IGNORECASE)


@dataclass
class ReplayImage:
    media_id: int  # the post's id for a single picture or a video's cover, the child's otherwise
    data: bytes
    width: int = 60
    height: int = 80


@dataclass
class ReplayPost:
    shortcode: str
    media_id: int
    taken_at: datetime  # tz-aware UTC
    caption: str
    likes: int
    comments: int
    images: list[ReplayImage]  # more than one: a carousel
    is_video: bool = False  # images[0] is then the video's cover
    pinned: bool = False
    location: dict[str, Any] | None = None  # {"id", "name", "slug", "lat", "lng", ...}


@dataclass
class ReplayAccount:
    username: str
    profile_id: int
    full_name: str
    is_business: bool = True
    is_private: bool = False
    followers: int = 1000
    # Newest first, as Instagram lists them; pinned posts first even if older. The replay lists
    # pinned posts first, then the others newest first, whatever the order here.
    posts: list[ReplayPost] = field(default_factory=list)
    business_category: str | None = "Clothing (Brand)"
    following: int = 150


@dataclass
class ReplayRequest:
    method: str
    url: str
    kind: str  # one of KINDS
    status: int


@dataclass
class _Failure:
    status: int
    body: str | dict[str, Any]
    times: int


_Answer = tuple[int, dict[str, str], bytes]


def replay_loader(
    *, session_user: str | None = None, max_connection_attempts: int = 3, **kwargs: Any
) -> instaloader.Instaloader:
    """An `Instaloader` that neither sleeps nor prints, rate-controlled on a virtual clock.

    With `session_user`, it is logged in with `session_data(session_user)`, as
    `Instaloader.load_session` does for a saved session; no login request is made.
    """
    loader = instaloader.Instaloader(
        sleep=False,
        quiet=True,
        max_connection_attempts=max_connection_attempts,
        rate_controller=lambda context: VirtualClockRateController(context),
        **kwargs,
    )
    if session_user is not None:
        loader.load_session(session_user, session_data())
    return loader


def session_data() -> dict[str, str]:
    """The cookies of a logged-in session, as `Instaloader.save_session` returns them."""
    return {
        "csrftoken": CSRF_TOKEN,
        "ds_user_id": str(VIEWER_ID),
        "ig_did": "C0FFEE00-0000-4000-8000-000000000001",
        "mid": "ZReplayAAAAAAAAAAAAAAAAAAAA",
        "sessionid": f"{VIEWER_ID}%3AReplaySession%3A1",
    }


def jpeg(width: int = 60, height: int = 80, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A valid JPEG of one colour, to stand for a product photo."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class VirtualClockRateController(instaloader.RateController):
    """instaloader's `RateController` on a virtual clock: `sleep` adds to `slept` and returns.

    `RateController.wait_before_query` and `handle_429` read `time.monotonic()` themselves, so
    they are restated here with `now()`, which advances only with the virtual sleeps; the sliding
    windows of `query_waittime` then see the waits as having passed.
    """

    def __init__(self, context: instaloader.InstaloaderContext, start: float = 0.0) -> None:
        super().__init__(context)
        self.slept: list[float] = []
        self._start = start

    def now(self) -> float:
        return self._start + sum(self.slept)

    def sleep(self, secs: float) -> None:
        self.slept.append(secs)

    def wait_before_query(self, query_type: str) -> None:
        # RateController.wait_before_query, with now() for time.monotonic().
        waittime = self.query_waittime(query_type, self.now(), False)
        assert waittime >= 0
        if waittime > 15:
            self._context.log(f"\nToo many queries in the last time. Need to wait {waittime:.0f}s.")
        if waittime > 0:
            self.sleep(waittime)
        self._query_timestamps.setdefault(query_type, []).append(self.now())

    def handle_429(self, query_type: str) -> None:
        # RateController.handle_429, with now() for time.monotonic().
        current_time = self.now()
        waittime = self.query_waittime(query_type, current_time, True)
        assert waittime >= 0
        self._dump_query_timestamps(current_time, query_type)
        self._context.error(
            'Instagram responded with HTTP error "429 - Too Many Requests".', repeat_at_end=False
        )
        if waittime > 0:
            self.sleep(waittime)


class InstagramReplay:
    """A world of Instagram accounts, answering instaloader's requests while entered."""

    def __init__(self, accounts: list[ReplayAccount]) -> None:
        self._accounts: dict[str, ReplayAccount] = {a.username.lower(): a for a in accounts}
        self._deleted: list[ReplayAccount] = []
        self._removed_media: set[int] = set()
        self._failures: dict[str, list[_Failure]] = defaultdict(list)
        self._lock = threading.Lock()
        self._mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        self.requests: list[ReplayRequest] = []
        catch_all = re.compile(r".*")
        for method in ("GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
            # One callback per method and our own routing: two overlapping `responses`
            # registrations would be consumed one after the other.
            self._mock.add_callback(method, catch_all, callback=self._respond)

    def __enter__(self) -> InstagramReplay:
        self._mock.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._mock.stop()
        self._mock.reset()

    # -- what the tests see and do -----------------------------------------------------------------
    def count(self, kind: str) -> int:
        """How many requests of this kind were answered so far."""
        return sum(r.kind == kind for r in self.requests)

    def fail_next(
        self, kind: str, *, status: int, body: str | dict[str, Any] = "", times: int = 1
    ) -> None:
        """Answer the next `times` requests of `kind` with `status` and `body` (a dict as JSON)."""
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}; one of {', '.join(KINDS)}")
        self._failures[kind].append(_Failure(status=status, body=body, times=times))

    def rename(self, old: str, new: str) -> None:
        account = self._account(old)
        del self._accounts[old.lower()]
        account.username = new
        self._accounts[new.lower()] = account

    def delete(self, username: str) -> None:
        self._deleted.append(self._accounts.pop(username.lower()))

    def make_private(self, username: str) -> None:
        self._account(username).is_private = True

    def add_post(self, username: str, post: ReplayPost) -> None:
        self._account(username).posts.append(post)

    def remove_post(self, username: str, shortcode: str) -> None:
        account = self._account(username)
        post = self._post(account, shortcode)
        account.posts.remove(post)
        self._removed_media.update({post.media_id, *(i.media_id for i in post.images)})

    def remove_slide(self, username: str, shortcode: str, media_id: int) -> None:
        post = self._post(self._account(username), shortcode)
        if len(post.images) <= 2:
            raise ValueError(
                f"{shortcode} has {len(post.images)} slides; Instagram keeps at least 2 in a "
                "carousel: remove the post instead"
            )
        post.images = [image for image in post.images if image.media_id != media_id]
        self._removed_media.add(media_id)

    def _account(self, username: str) -> ReplayAccount:
        try:
            return self._accounts[username.lower()]
        except KeyError:
            raise KeyError(f"no account {username!r} in the replay") from None

    @staticmethod
    def _post(account: ReplayAccount, shortcode: str) -> ReplayPost:
        for post in account.posts:
            if post.shortcode == shortcode:
                return post
        raise KeyError(f"{account.username} has no post {shortcode}")

    # -- routing -----------------------------------------------------------------------------------
    def _respond(self, request: requests.PreparedRequest) -> _Answer:
        with self._lock:
            kind, answer = self._route(request)
            failures = self._failures[kind]
            if failures:
                failure = failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    failures.pop(0)
                status, headers, body = _body(failure.status, failure.body)
            else:
                status, headers, body = answer()
            self.requests.append(ReplayRequest(str(request.method), str(request.url), kind, status))
            return status, headers, body

    def _route(self, request: requests.PreparedRequest) -> tuple[str, Callable[[], _Answer]]:
        url = urllib.parse.urlsplit(str(request.url))
        query = dict(urllib.parse.parse_qsl(url.query))
        method = request.method
        if url.hostname == "www.instagram.com":
            if method == "GET" and url.path == "/":
                return "start_page", lambda: self._start_page(request)
            if method == "GET" and url.path == "/api/v1/users/web_profile_info/":
                return "profile_info", lambda: self._web_profile_info(query.get("username", ""))
            if method == "POST" and url.path in ("/api/graphql", "/graphql/query"):
                return self._route_graphql(request, web_api=url.path == "/api/graphql")
            match = _PROFILE_PATH.match(url.path)
            if method == "GET" and match:
                return "profile_page", lambda: self._profile_page(match.group(1))
        if url.hostname == "i.instagram.com" and method == "GET":
            match = re.fullmatch(r"/api/v1/media/(\d+)/info/", url.path)
            if match:
                return "post", lambda: self._iphone_media_info(int(match.group(1)))
        if url.hostname and url.hostname.endswith(".cdninstagram.com") and method == "GET":
            match = _CDN_MEDIA.search(url.path)
            if match:
                kind = "video" if match.group(2) == "mp4" else "image"
                return kind, lambda: self._media_file(int(match.group(1)), kind)
        return "other", lambda: _body(404, f"the Instagram replay has no answer for {url.geturl()}")

    def _route_graphql(
        self, request: requests.PreparedRequest, *, web_api: bool
    ) -> tuple[str, Callable[[], _Answer]]:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        form = dict(urllib.parse.parse_qsl(body))
        doc_id = form.get("doc_id", "")
        variables = json.loads(form.get("variables") or "{}")
        if doc_id == DOC_ID_TIMELINE_ANONYMOUS:
            return "timeline", lambda: self._timeline_anonymous(variables)
        if doc_id == DOC_ID_TIMELINE_LOGGED_IN:
            return "timeline", lambda: self._timeline_logged_in(variables)
        if doc_id == DOC_ID_POST:
            return "post", lambda: self._post_info(variables, web_api=web_api)
        if doc_id == DOC_ID_PROFILE:
            return "profile_info", lambda: self._profile_query(variables, web_api=web_api)
        return "other", lambda: _body(404, f"the Instagram replay has no doc_id {doc_id!r}")

    # -- www.instagram.com pages -------------------------------------------------------------------
    def _start_page(self, request: requests.PreparedRequest) -> _Answer:
        """The start page: the tokens `InstaloaderContext._web_api_tokens` reads, and the cookie
        `_csrf_token` wants.

        Logged out it has no `DTSGInitialData`, and `IG_USER_EIMU` is 0.
        """
        logged_in = bool(_cookies(request).get("sessionid"))
        define = [["LSD", [], {"token": LSD_TOKEN}, 323]]
        if logged_in:
            define.append(["DTSGInitialData", [], {"token": DTSG_TOKEN}, 258])
        config = {"IG_USER_EIMU": str(VIEWER_ID) if logged_in else "0"}
        payload = {"require": [["ServerJSDefine", "handleDefines", None, [define]]], **config}
        html = _html("Instagram", [payload])
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Set-Cookie": f"csrftoken={CSRF_TOKEN}; Domain=.instagram.com; Path=/; Secure",
        }
        return 200, headers, html.encode()

    def _profile_page(self, username: str) -> _Answer:
        """`www.instagram.com/<user>/` as a logged-out visitor gets it (`get_page_data`).

        Two embedded query results, as `Profile.from_username` expects: the profile's details
        (`xig_user_by_username` with `pk`; the page's own `id` is not the user id) and its first 12
        posts (`xig_user_by_username.polaris_ordered_timeline_connection`, read by
        `Profile.get_posts`). A private profile's page has no posts. The details are what the page
        shows a visitor: no `is_business`, so `Profile.is_business_account` asks
        `web_profile_info` (anonymously) or the profile query (logged in).
        """
        account = self._accounts.get(username.lower())
        if account is None:
            return _not_found_page()
        details = {
            "__typename": "XDTUserDict",
            "pk": str(account.profile_id),
            "id": _page_id(account),
            "username": account.username,
            "full_name": account.full_name,
            "biography": f"Official {account.full_name} store.",
            "category": account.business_category if account.is_business else None,
            "is_private": account.is_private,
            "is_verified": False,
            "follower_count": account.followers,
            "following_count": account.following,
            "all_media_count": len(account.posts),
            "profile_pic_url": f"{CDN}/v/t51.2885-19/{account.profile_id}_n.jpg",
        }
        results = [{"xig_user_by_username": details}]
        if not account.is_private:
            connection = self._connection(account, after=None, first=PAGE_LENGTH, shape="short")
            posts = {"id": _page_id(account), "polaris_ordered_timeline_connection": connection}
            results.append({"xig_user_by_username": posts})
        html = _html(f"{account.full_name} (@{account.username})", _relay_payloads(results))
        return 200, {"Content-Type": "text/html; charset=utf-8"}, html.encode()

    def _web_profile_info(self, username: str) -> _Answer:
        """`api/v1/users/web_profile_info/`: the legacy node (`Profile._obtain_metadata`)."""
        account = self._accounts.get(username.lower())
        if account is None:
            return _body(404, {"message": "User not found", "status": "fail"})
        user = {
            "id": str(account.profile_id),
            "fbid": _page_id(account),
            "username": account.username,
            "full_name": account.full_name,
            "biography": f"Official {account.full_name} store.",
            "external_url": None,
            "is_private": account.is_private,
            "is_verified": False,
            "is_business_account": account.is_business,
            "is_professional_account": account.is_business,
            "business_category_name": account.business_category if account.is_business else None,
            "category_name": account.business_category,
            "edge_followed_by": {"count": account.followers},
            "edge_follow": {"count": account.following},
            # Instagram fills `edges` with the first 12 posts; instaloader 4.16 never reads them.
            "edge_owner_to_timeline_media": {
                "count": len(account.posts),
                "page_info": {"has_next_page": False, "end_cursor": None},
                "edges": [],
            },
            "edge_felix_video_timeline": {"count": 0, "edges": []},
            "profile_pic_url": f"{CDN}/v/t51.2885-19/{account.profile_id}_n.jpg",
            "profile_pic_url_hd": f"{CDN}/v/t51.2885-19/{account.profile_id}_n.jpg",
            "followed_by_viewer": False,
            "follows_viewer": False,
            "blocked_by_viewer": False,
            "has_blocked_viewer": False,
            "requested_by_viewer": False,
            "has_requested_viewer": False,
            "highlight_reel_count": 0,
        }
        return _body(200, {"data": {"user": user}, "status": "ok"})

    # -- GraphQL -----------------------------------------------------------------------------------
    def _timeline_anonymous(self, variables: dict[str, Any]) -> _Answer:
        """doc_id 28904005159232689: `d["data"]["node"]["polaris_ordered_timeline_connection"]`."""
        account = next(
            (a for a in self._accounts.values() if _page_id(a) == variables.get("id")), None
        )
        if account is None or account.is_private:
            return _body(200, {"data": {"node": None}, "extensions": {"is_final": True}})
        connection = self._connection(
            account,
            after=variables.get("after"),
            first=int(variables.get("first") or PAGE_LENGTH),
            shape="short",
        )
        node = {
            "__typename": "XDTUserDict",
            "id": _page_id(account),
            "polaris_ordered_timeline_connection": connection,
        }
        return _body(200, {"data": {"node": node}, "extensions": {"is_final": True}})

    def _timeline_logged_in(self, variables: dict[str, Any]) -> _Answer:
        """doc_id 29104886249145907:
        `d["data"]["xdt_api__v1__feed__user_timeline_graphql_connection"]`, whose nodes are iPhone
        media structs (`Post.from_iphone_struct`)."""
        account = self._accounts.get(str(variables.get("username", "")).lower())
        if account is None or account.is_private:
            connection: dict[str, Any] = {
                "edges": [],
                "page_info": {"has_next_page": False, "end_cursor": None},
            }
        else:
            connection = self._connection(
                account,
                after=variables.get("after"),
                first=int(variables.get("first") or PAGE_LENGTH),
                shape="media",
            )
        data = {"xdt_api__v1__feed__user_timeline_graphql_connection": connection}
        return _body(200, {"data": data, "extensions": {"is_final": True}})

    def _post_info(self, variables: dict[str, Any], *, web_api: bool) -> _Answer:
        """doc_id 27128499623469141: `data.xdt_api__v1__media__shortcode__web_info.items[0]`, the
        Polaris media struct that `Post._normalize_post_data` reads (`Post._obtain_metadata`)."""
        found = self._find_post(str(variables.get("shortcode", "")))
        items = []
        # The viewer, logged in or not, follows no one: a private account's posts are not shown.
        if found is not None and not found[0].is_private:
            items = [_media(*found)]
        body: dict[str, Any] = {
            "data": {"xdt_api__v1__media__shortcode__web_info": {"items": items}}
        }
        body["extensions"] = {"is_final": True}
        if not web_api:
            body["status"] = "ok"  # graphql/query answers carry a status
        return _body(200, body)

    def _profile_query(self, variables: dict[str, Any], *, web_api: bool) -> _Answer:
        """doc_id 27937681195819736: `data.user` in the Polaris shape that
        `Profile._normalize_profile_data` maps (`Profile._obtain_metadata` logged in, `from_id`)."""
        account = next(
            (a for a in self._accounts.values() if str(a.profile_id) == variables.get("id")), None
        )
        user = None
        if account is not None:
            user = {
                "pk": str(account.profile_id),
                "id": str(account.profile_id),
                "username": account.username,
                "full_name": account.full_name,
                "biography": f"Official {account.full_name} store.",
                "external_url": None,
                "is_private": account.is_private,
                "is_verified": False,
                "is_business": account.is_business,
                "account_type": 2 if account.is_business else 1,
                "category": account.business_category if account.is_business else None,
                "follower_count": account.followers,
                "following_count": account.following,
                "media_count": len(account.posts),
                "profile_pic_url": f"{CDN}/v/t51.2885-19/{account.profile_id}_n.jpg",
                "hd_profile_pic_url_info": {
                    "url": f"{CDN}/v/t51.2885-19/{account.profile_id}_hd.jpg"
                },
                "friendship_status": {
                    "following": False,
                    "followed_by": False,
                    "blocking": False,
                    "incoming_request": False,
                    "outgoing_request": False,
                },
            }
        body: dict[str, Any] = {"data": {"user": user}, "extensions": {"is_final": True}}
        if not web_api:
            body["status"] = "ok"
        return _body(200, body)

    def _iphone_media_info(self, media_id: int) -> _Answer:
        """`i.instagram.com/api/v1/media/<id>/info/`: `items[0]` (`Post._iphone_struct`)."""
        for account in self._accounts.values():
            for post in account.posts:
                if post.media_id == media_id:
                    return _body(200, {"items": [_media(account, post)], "status": "ok"})
        return _body(400, {"message": "Media not found or unavailable", "status": "fail"})

    def _connection(
        self, account: ReplayAccount, *, after: str | None, first: int, shape: str
    ) -> dict[str, Any]:
        """A page of the profile's timeline: `edges[].node`, `page_info{has_next_page,end_cursor}`
        (`NodeIterator.__next__`). `shape` "short" is the logged-out page's node (`code` is all that
        `get_posts` reads); "media" the whole iPhone media struct."""
        listing = _listing(account)
        start = _cursor_position(listing, after)
        page = listing[start : start + first]
        edges = []
        for post in page:
            if shape == "media":
                node = _media(account, post)
            else:
                node = {
                    "__typename": "XDTMediaDict",
                    "code": post.shortcode,
                    "pk": str(post.media_id),
                    "id": f"{post.media_id}_{account.profile_id}",
                    "media_type": _media_type(post),
                    "taken_at": int(post.taken_at.timestamp()),
                }
            edges.append({"node": node, "cursor": _cursor(post)})
        has_next = start + first < len(listing)
        return {
            "edges": edges,
            "page_info": {
                "has_next_page": has_next,
                "has_previous_page": start > 0,
                "start_cursor": _cursor(page[0]) if page else None,
                "end_cursor": _cursor(page[-1]) if page else None,
            },
        }

    # -- the CDN -----------------------------------------------------------------------------------
    def _media_file(self, media_id: int, kind: str) -> _Answer:
        """A picture (`InstaloaderContext.get_raw`, `Instaloader.download_pic`) or a video."""
        if media_id not in self._removed_media:
            for account in self._accounts.values():
                for post in account.posts:
                    if kind == "video" and post.is_video and post.media_id == media_id:
                        return 200, {"Content-Type": "video/mp4"}, MP4_PLACEHOLDER
                    for image in post.images if kind == "image" else ():
                        if image.media_id == media_id:
                            return 200, {"Content-Type": "image/jpeg"}, image.data
        return 404, {"Content-Type": "text/plain"}, b"URL signature expired"

    def _find_post(self, shortcode: str) -> tuple[ReplayAccount, ReplayPost] | None:
        for account in self._accounts.values():
            for post in account.posts:
                if post.shortcode == shortcode:
                    return account, post
        return None


# -- response bodies -------------------------------------------------------------------------------
def _media(account: ReplayAccount, post: ReplayPost) -> dict[str, Any]:
    """An Instagram media struct (XDTMediaDict), the shape of the logged-in timeline's nodes
    (`Post.from_iphone_struct`), of `xdt_api__v1__media__shortcode__web_info.items[0]`
    (`Post._normalize_post_data`) and of `api/v1/media/<id>/info/` (`Post._iphone_struct`)."""
    taken_at = int(post.taken_at.timestamp())
    user = {
        "__typename": "XDTUserDict",
        "pk": str(account.profile_id),
        "id": str(account.profile_id),
        "username": account.username,
        "full_name": account.full_name,
        "is_private": account.is_private,
        "is_verified": False,
        "profile_pic_url": f"{CDN}/v/t51.2885-19/{account.profile_id}_n.jpg",
    }
    cover = post.images[0]
    media: dict[str, Any] = {
        "__typename": "XDTMediaDict",
        "code": post.shortcode,
        "pk": str(post.media_id),
        "id": f"{post.media_id}_{account.profile_id}",
        "media_type": _media_type(post),
        "product_type": {1: "feed", 2: "clips", 8: "carousel_container"}[_media_type(post)],
        "taken_at": taken_at,
        "user": user,
        "owner": user,
        "caption": (
            {"pk": str(post.media_id + 1), "text": post.caption, "created_at": taken_at}
            if post.caption
            else None
        ),
        "like_count": post.likes,
        "comment_count": post.comments,
        "has_liked": False,
        "accessibility_caption": None,
        "original_width": cover.width,
        "original_height": cover.height,
        "image_versions2": {"candidates": [_candidate(cover)]},
        "location": ({"pk": str(post.location["id"]), **post.location} if post.location else None),
        "timeline_pinned_user_ids": [account.profile_id] if post.pinned else [],
        "usertags": None,
        "carousel_media_count": None,
        "carousel_media": None,
        "video_versions": None,
    }
    if len(post.images) > 1:
        media["carousel_media_count"] = len(post.images)
        media["carousel_media"] = [
            {
                "__typename": "XDTMediaDict",
                "pk": str(image.media_id),
                "id": f"{image.media_id}_{account.profile_id}",
                "media_type": 1,
                "accessibility_caption": None,
                "original_width": image.width,
                "original_height": image.height,
                "image_versions2": {"candidates": [_candidate(image)]},
                "video_versions": None,
            }
            for image in post.images
        ]
    if post.is_video:
        media["video_versions"] = [
            {
                "type": 101,
                "width": cover.width,
                "height": cover.height,
                "url": f"{CDN}/v/t50.2886-16/{post.media_id}_n.mp4?_nc_cat=1&_nc_ht=scontent",
            }
        ]
        media["video_duration"] = 12.5
        media["view_count"] = post.likes * 5
        media["play_count"] = post.likes * 5
    return media


def _candidate(image: ReplayImage) -> dict[str, Any]:
    signature = hashlib.sha256(str(image.media_id).encode()).hexdigest()[:32]
    query = f"stp=dst-jpg_e35&_nc_ht=scontent.cdninstagram.com&oh=00_{signature}&oe=6A1B2C3D"
    return {
        "width": image.width,
        "height": image.height,
        "url": f"{CDN}/v/t51.2885-15/{image.media_id}_n.jpg?{query}",
    }


def _media_type(post: ReplayPost) -> int:
    return 2 if post.is_video else 8 if len(post.images) > 1 else 1


def _listing(account: ReplayAccount) -> list[ReplayPost]:
    """The profile grid: pinned posts first, then the others, newest first."""
    newest_first = sorted(account.posts, key=lambda p: p.taken_at, reverse=True)
    return [p for p in newest_first if p.pinned] + [p for p in newest_first if not p.pinned]


def _cursor(post: ReplayPost) -> str:
    raw = f"{post.media_id}:{int(post.taken_at.timestamp())}:{int(post.pinned)}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _cursor_position(listing: list[ReplayPost], after: str | None) -> int:
    """Where the page after `after` starts; after a post removed since, at the first post older
    than it was."""
    if not after:
        return 0
    media_id, taken_at, pinned = (
        int(part) for part in base64.urlsafe_b64decode(after.encode()).decode().split(":")
    )
    for index, post in enumerate(listing):
        if post.media_id == media_id:
            return index + 1
    for index, post in enumerate(listing):
        if not post.pinned and (pinned or int(post.taken_at.timestamp()) < taken_at):
            return index
    return len(listing)


def _page_id(account: ReplayAccount) -> str:
    return str(_PAGE_ID_BASE + account.profile_id)


def _relay_payloads(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Query results as the web app embeds them: `__bbox.result.data` inside the
    `RelayPrefetchedStreamCache` entries of a `ScheduledServerJS` payload, which
    `instaloadercontext._embedded_query_data` walks."""
    payloads = []
    for i, data in enumerate(results):
        preloaded = [
            f"adp_PolarisProfilePageQueryRelayPreloader_{i}",
            {"__bbox": {"complete": True, "result": {"data": data}}},
        ]
        handle = {"__bbox": {"require": [["RelayPrefetchedStreamCache", "next", [], preloaded]]}}
        payloads.append({"require": [["ScheduledServerJS", "handle", None, [handle]]]})
    return payloads


def _html(title: str, payloads: list[dict[str, Any]]) -> str:
    texts = [json.dumps(p, separators=(",", ":")).replace("<", "\\u003c") for p in payloads]
    scripts = "\n".join(
        f'<script type="application/json" data-content-len="{len(text)}" data-sjs>{text}</script>'
        for text in texts
    )
    return textwrap.dedent(
        """\
        <!DOCTYPE html>
        <html lang="en" class="_9dls"><head><meta charset="utf-8">
        <title>{title} &#x2022; Instagram photos and videos</title></head>
        <body>{scripts}</body></html>
        """
    ).format(title=title, scripts=scripts)


def _not_found_page() -> _Answer:
    html = _html("Page not found", [])
    html = html.replace("<body>", "<body><h2>Sorry, this page isn&#039;t available.</h2>")
    return 404, {"Content-Type": "text/html; charset=utf-8"}, html.encode()


def _body(status: int, body: str | dict[str, Any]) -> _Answer:
    if isinstance(body, dict):
        return (
            status,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(body).encode(),
        )
    return status, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


def _cookies(request: requests.PreparedRequest) -> dict[str, str]:
    header = request.headers.get("Cookie", "")
    pairs = (part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    return {name: value for name, value in pairs}


# -- archives --------------------------------------------------------------------------------------
def accounts_from_archive(archive_dir: Path) -> list[ReplayAccount]:
    """The accounts of an instaloader-format archive (as `pipeline.samples` writes), to replay.

    Profiles and posts are read with instaloader's `load_structure_from_file`; the pictures of
    each post, in order, come from `manifest.csv` (`account,shortcode,position,media_id,...,file`).
    Every picture is held in memory: meant for small samples.
    """
    archive_dir = Path(archive_dir)
    pictures: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    with (archive_dir / "manifest.csv").open(newline="", encoding="utf-8") as fp:
        for row in csv.DictReader(fp):
            pictures[row["account"], row["shortcode"]].append(
                (int(row["position"]), int(row["media_id"]), row["file"])
            )
    context = instaloader.InstaloaderContext(sleep=False, quiet=True)
    accounts = []
    for folder in sorted(p for p in archive_dir.iterdir() if p.is_dir()):
        profile_files = [f for f in folder.glob(f"{folder.name}_*.json*") if "_UTC" not in f.name]
        if not profile_files:
            continue
        profile = instaloader.load_structure_from_file(context, str(profile_files[0]))
        node = profile._node  # read the node itself: a missing field must not cause a request
        posts = []
        for post_file in sorted(folder.glob("*_UTC.json*")):
            post = instaloader.load_structure_from_file(context, str(post_file))
            posts.append(
                _archive_post(post._node, pictures[folder.name, post.shortcode], archive_dir)
            )
        accounts.append(
            ReplayAccount(
                username=node["username"],
                profile_id=int(node["id"]),
                full_name=node.get("full_name") or "",
                is_business=bool(node.get("is_business_account")),
                is_private=bool(node.get("is_private")),
                followers=int((node.get("edge_followed_by") or {}).get("count") or 0),
                business_category=node.get("business_category_name"),
                following=int((node.get("edge_follow") or {}).get("count") or 0),
                posts=sorted(posts, key=lambda p: p.taken_at, reverse=True),
            )
        )
    return accounts


def _archive_post(
    node: dict[str, Any], rows: list[tuple[int, int, str]], archive_dir: Path
) -> ReplayPost:
    from PIL import Image

    if not rows:
        raise ValueError(f"manifest.csv lists no picture of post {node['shortcode']}")
    images = []
    for _, media_id, file in sorted(rows):
        data = (archive_dir / file).read_bytes()
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
        images.append(ReplayImage(media_id=media_id, data=data, width=width, height=height))
    caption_edges = (node.get("edge_media_to_caption") or {}).get("edges") or []
    comments = node.get("edge_media_to_comment") or node.get("edge_media_to_parent_comment") or {}
    return ReplayPost(
        shortcode=node["shortcode"],
        media_id=int(node["id"]),
        taken_at=datetime.fromtimestamp(node["taken_at_timestamp"], UTC),
        caption=caption_edges[0]["node"]["text"] if caption_edges else "",
        likes=int((node.get("edge_media_preview_like") or {}).get("count") or 0),
        comments=int(comments.get("count") or 0),
        images=images,
        is_video=bool(node.get("is_video")),
        location=node.get("location"),
    )


def posts_of(account: ReplayAccount) -> Iterator[ReplayPost]:
    """The account's posts in the order Instagram lists them (pinned first)."""
    yield from _listing(account)


__all__ = [
    "CDN",
    "KINDS",
    "InstagramReplay",
    "ReplayAccount",
    "ReplayImage",
    "ReplayPost",
    "ReplayRequest",
    "VirtualClockRateController",
    "accounts_from_archive",
    "jpeg",
    "posts_of",
    "replay_loader",
    "session_data",
]


class VirtualTime:
    """A clock for the collector and its rate controller that advances only when they sleep:
    `clock` (monotonic seconds), `wall` (a datetime from `start`) and `sleep`."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.elapsed

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds


def accounts_from_spec(spec: dict[str, int]) -> list[ReplayAccount]:
    """`{"username": number of posts}` -> accounts of single-picture posts, one a day, for a
    process that cannot receive Python objects (an Airflow task run in a subprocess)."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    accounts = []
    for index, (username, posts) in enumerate(sorted(spec.items())):
        base = 3_500_000_000_000_000_000 + index * 1_000_000
        accounts.append(
            ReplayAccount(
                username=username,
                profile_id=9_000_000_000 + index,
                full_name=username.title(),
                posts=[
                    ReplayPost(
                        shortcode=f"S{index:02d}{n:05d}",
                        media_id=base + n,
                        taken_at=start - timedelta(days=n + 1),
                        caption=f"{username} look {n} #shop",
                        likes=n,
                        comments=0,
                        images=[ReplayImage(base + n, jpeg(colour=(index * 40 % 256, n % 256, 9)))],
                    )
                    for n in range(posts)
                ],
            )
        )
    return accounts

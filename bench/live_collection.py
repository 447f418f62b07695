"""Live collection cost: HTTP requests per post and per picture, and the posts/hour ceiling of one
Instagram session, anonymous and logged in.

    .venv/bin/python bench/live_collection.py --posts 600

instagram.com cannot be reached from here: the timeline is replayed at the HTTP transport level
(tests/instagram_replay.py, response shapes from instaloader 4.16's own parsing code) and the
collector runs instaloader's real code against it, storing into the configured Postgres and S3
(a scratch database and bucket). The rate controller (instaloader's sliding windows, kept in
Postgres) runs on a virtual clock, so its waits cost no time here; the ceiling is the posts per
virtual hour, plus instaloader's own random pause before each request (mean 1/0.6 s, capped at
15 s) that production keeps.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import text  # noqa: E402

from bench.header import result_header  # noqa: E402
from bench.scratch import scratch_services  # noqa: E402
from pipeline.accounts import add_account  # noqa: E402
from pipeline.collect.instagram import CollectOptions, collect_account, make_loader  # noqa: E402
from pipeline.collect.rate_limits import PersistentRateController  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from tests.instagram_replay import (  # noqa: E402
    InstagramReplay,
    ReplayAccount,
    ReplayImage,
    ReplayPost,
    VirtualTime,
    jpeg,
    session_data,
)

INSTALOADER_MEAN_PAUSE_S = 1 / 0.6  # instaloader's do_sleep: expovariate(0.6), capped at 15 s
START = datetime(2026, 6, 1, tzinfo=UTC)


def timeline(posts: int) -> ReplayAccount:
    """Newest first; every 10th post a carousel of 3, every 50th a video."""
    picture = jpeg()
    items = []
    for n in range(posts):
        media_id = 3_400_000_000_000_000_000 + n * 10
        count = 3 if n % 10 == 5 else 1
        images = [
            ReplayImage(media_id=media_id if count == 1 else media_id + k + 1,
                        data=picture[:-2] + bytes([n % 256, k]) + picture[-2:])
            for k in range(count)
        ]  # fmt: skip
        items.append(
            ReplayPost(shortcode=f"B{n:06d}", media_id=media_id,
                       taken_at=START - timedelta(hours=6 * n), caption=f"Look {n} #tshirts",
                       likes=n, comments=1, images=images, is_video=n % 50 == 7)
        )  # fmt: skip
    return ReplayAccount(username="benchshop", profile_id=8_100_000_001, full_name="Bench Shop",
                         posts=items)  # fmt: skip


def measure(settings, posts: int, *, logged_in: bool) -> dict:
    account = timeline(posts)
    virtual = VirtualTime(START)
    with scratch_services(settings, f"bench-live-{secrets.token_hex(3)}") as (store, engine):
        add_account(engine=engine, username=account.username)

        def controller(context):
            return PersistentRateController(context, engine=engine, session="bench",
                                            clock=virtual.clock, wall=virtual.wall,
                                            sleep=virtual.sleep)  # fmt: skip

        loader = make_loader(engine=engine, rate_controller=controller, sleep=False)
        if logged_in:
            loader.load_session("viewer", session_data())
        with InstagramReplay([account]) as replay:
            started = time.perf_counter()
            run = collect_account(
                engine=engine, store=store, loader=loader, username=account.username,
                options=CollectOptions(refresh_days=0), sleep=virtual.sleep, now=virtual.wall,
            )  # fmt: skip
            real_s = time.perf_counter() - started
            kinds = Counter(request.kind for request in replay.requests)
        assert run.ok, run.reason
        with engine.connect() as connection:
            images = connection.execute(text("SELECT count(*) FROM raw.images")).scalar_one()
    requests = sum(kinds.values())
    api_requests = requests - kinds["image"] - kinds["video"]
    waited_s = virtual.elapsed
    pauses_s = requests * INSTALOADER_MEAN_PAUSE_S
    return {
        "mode": "logged in" if logged_in else "anonymous",
        "posts": run.posts_new,
        "images": images,
        "requests": dict(sorted(kinds.items())),
        "requests_per_post": round(requests / run.posts_new, 3),
        "api_requests_per_post": round(api_requests / run.posts_new, 3),
        "requests_per_image": round(requests / images, 3),
        "rate_controller_wait_s": round(waited_s, 1),
        "posts_per_hour_rate_controller": round(run.posts_new / (waited_s / 3600), 0)
        if waited_s
        else None,
        "posts_per_hour_with_instaloader_pauses": round(
            run.posts_new / ((waited_s + pauses_s) / 3600), 0
        ),
        "real_seconds_here": round(real_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=600)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    settings = load_settings()
    result = {
        **result_header("live_collection"),
        "timeline": {"posts": args.posts, "carousels_of_3": "every 10th", "videos": "every 50th"},
        "runs": [measure(settings, args.posts, logged_in=mode) for mode in (False, True)],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "live_collection.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

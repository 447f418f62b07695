"""Sample business accounts written as `instaloader` writes them, whatever photos they show.

The folder tree `instaloader` leaves when it downloads profiles with its default settings: one
folder per account holding the profile's metadata, its `id` file, and for every post the
`{date_utc}_UTC` picture(s), caption `.txt` and compressed `.json.xz` metadata. The metadata is
written by instaloader itself (`Post`/`Profile` structures saved with `save_metadata_json`), so
`instaloader.structures.load_structure_from_file` reads it back without any request. Each photo is
a `Product`; `plan_posts` groups an account's products into posts and `write_accounts` writes them.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import instaloader
from PIL import Image, ImageOps

from pipeline.labels.taxonomy import Taxonomy, UnknownValue

MANIFEST = "manifest.csv"
# The data set's own colour and category of each picture, as a label CSV (ARCHITECTURE.md's
# contract) that `catalogue labels import` loads like a moderator's file.
LABELS = "labels.csv"
LABEL_COLUMNS = ("shortcode", "position", "colour", "category", "moderator", "note")

GRAPH_IMAGE, GRAPH_SIDECAR, GRAPH_VIDEO = "GraphImage", "GraphSidecar", "GraphVideo"

# Posts are dated in the year before this instant, never "now", so reruns give identical bytes.
WINDOW_END = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW_SECONDS = 365 * 24 * 3600

# 19-digit media ids like Instagram's, below 2**63; children get their own range so a carousel
# child never collides with a post, and `* 16` leaves room for more media per product later.
POST_MEDIA_ID_BASE = 3_100_000_000_000_000_000
CHILD_MEDIA_ID_BASE = 3_200_000_000_000_000_000
PROFILE_ID_BASE = 40_000_000_000
PROFILE_ID_SPAN = 10_000_000_000

USERNAME_MAX_LENGTH = 30
CAROUSEL_SIZES = (2, 4)
LOCATION_SHARE = 0.08
JPEG_QUALITY = 90
CDN = "https://scontent.cdninstagram.com"

# A bare `ftyp` box: enough for file sniffers to call it MP4; nothing reads the video itself.
MP4_PLACEHOLDER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"

BUSINESS_CATEGORIES = {
    "Apparel": "Clothing (Brand)",
    "Footwear": "Shoe Store",
    "Accessories": "Fashion Accessories",
    "Personal Care": "Health/Beauty",
    "Sporting Goods": "Sports & Recreation",
    "Home": "Home Decor",
}
DEFAULT_BUSINESS_CATEGORY = "Shopping & Retail"

# Where Myntra's sellers are; ids are made up but shaped like Instagram's.
LOCATIONS = (
    ("212988663", "Mumbai, Maharashtra", "mumbai-maharashtra", 19.0760, 72.8777),
    ("213326726", "Bangalore, India", "bangalore-india", 12.9716, 77.5946),
    ("213131048", "New Delhi, India", "new-delhi-india", 28.6139, 77.2090),
    ("214292307", "Chennai, India", "chennai-india", 13.0827, 80.2707),
    ("215474311", "Kolkata, India", "kolkata-india", 22.5726, 88.3639),
    ("223041359", "Hyderabad, India", "hyderabad-india", 17.3850, 78.4867),
    ("226012617", "Pune, Maharashtra", "pune-maharashtra", 18.5204, 73.8567),
    ("219851427", "Jaipur, Rajasthan", "jaipur-rajasthan", 26.9124, 75.7873),
)

_NOT_USERNAME = re.compile(r"[^a-z0-9._]")
_NOT_HASHTAG = re.compile(r"[^a-z0-9_]")
_DOTS = re.compile(r"\.{2,}")


@dataclass(frozen=True)
class SampleSummary:
    accounts: int
    posts: int
    images: int
    carousels: int
    videos: int
    out_dir: Path
    skipped_rows: int = 0  # malformed rows of styles.csv (column count, id, duplicate id)
    missing_images: int = 0  # well-formed rows whose images/<id>.jpg is absent
    values_left_out: int = 0  # colours and categories of labels.csv the taxonomy does not know
    non_garments: int = 0  # clothing photos labelled Not sure, Other or Skip: no category


@dataclass(frozen=True)
class Product:
    product_id: int
    master_category: str
    article_type: str
    base_colour: str
    display_name: str
    brand: str  # the first word of the display name, as written
    username: str
    image_file: str  # the picture's name in the data set's images/ folder


@dataclass(frozen=True)
class Account:
    username: str
    profile_id: int
    full_name: str
    business_category: str
    followers: int
    followees: int


@dataclass(frozen=True)
class PlannedPost:
    typename: str
    products: tuple[Product, ...]


def taxonomy_accepts(taxonomy: Taxonomy, attribute: str, value: str) -> bool:
    try:
        taxonomy.attribute(attribute).canonical(value)
    except UnknownValue:
        return False
    return True


def require_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        # Mixing two samples would make the manifest lie about the folder; deleting is the user's call.
        raise FileExistsError(
            f"{out_dir} already exists and is not an empty folder: "
            "choose a new output folder or delete that one first"
        )


def check_arguments(
    *, size: int | None, image_size: tuple[int, int] | None, shares: tuple[float, float]
) -> None:
    if size is not None and size < 0:
        raise ValueError(f"size must be a number of products, 0 or more; got {size}")
    if image_size is not None and (
        len(image_size) != 2 or not all(isinstance(n, int) and n > 0 for n in image_size)
    ):
        raise ValueError(f"image_size must be (width, height) in pixels; got {image_size!r}")
    if not all(0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0:
        raise ValueError(
            f"carousel_share and video_share must be between 0 and 1 and add up to at most 1; "
            f"got {shares[0]} and {shares[1]}"
        )


def brand_username(brand: str) -> str:
    """The Instagram username of a brand: `[a-z0-9._]`, no leading, trailing or double dots."""
    username = _DOTS.sub(".", _NOT_USERNAME.sub("", brand.lower())).strip(".")
    return username[:USERNAME_MAX_LENGTH].rstrip(".")


# -- accounts and posts ---------------------------------------------------------------------------
def business_accounts(
    products: list[Product], usernames: list[str], *, seed: int
) -> dict[str, Account]:
    # Names and categories come from the whole data set, so an account looks the same in any slice.
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    categories: dict[str, Counter[str]] = defaultdict(Counter)
    for product in products:
        spellings[product.username][product.brand] += 1
        categories[product.username][product.master_category] += 1

    accounts: dict[str, Account] = {}
    taken: set[int] = set()
    for username in usernames:
        profile_id = _profile_id(username)
        while profile_id in taken:
            profile_id = PROFILE_ID_BASE + (profile_id - PROFILE_ID_BASE + 1) % PROFILE_ID_SPAN
        taken.add(profile_id)
        rng = random.Random(f"{seed}:{username}:profile")
        accounts[username] = Account(
            username=username,
            profile_id=profile_id,
            full_name=_most_common(spellings[username]),
            business_category=BUSINESS_CATEGORIES.get(
                _most_common(categories[username]), DEFAULT_BUSINESS_CATEGORY
            ),
            followers=int(10 ** rng.uniform(3.0, 6.2)),
            followees=rng.randint(20, 1500),
        )
    return accounts


def _most_common(counts: Counter[str]) -> str:
    return min(counts, key=lambda value: (-counts[value], value))


def _profile_id(username: str) -> int:
    digest = hashlib.sha256(f"profile:{username}".encode()).digest()
    return PROFILE_ID_BASE + int.from_bytes(digest[:8], "big") % PROFILE_ID_SPAN


def plan_posts(
    by_account: dict[str, list[Product]], *, seed: int, shares: tuple[float, float]
) -> dict[str, list[PlannedPost]]:
    """Group each account's products into posts.

    Shares are kept over the whole sample, not per account: a carousel owed while an account has a
    single product left is made up by the next account that can hold one, so small slices with many
    one-product brands still come close to `carousel_share`.
    """
    carousel_share, video_share = shares
    rng = random.Random(f"{seed}:posts")
    carousel_credit, video_credit = rng.random(), rng.random()
    plans: dict[str, list[PlannedPost]] = {}
    for username in sorted(by_account):
        products, posts, i = by_account[username], [], 0
        while i < len(products):
            carousel_credit += carousel_share
            video_credit += video_share
            left = len(products) - i
            if carousel_credit >= 1 and left >= 2:
                carousel_credit -= 1
                count = min(rng.randint(*CAROUSEL_SIZES), left)
                posts.append(PlannedPost(GRAPH_SIDECAR, tuple(products[i : i + count])))
            elif video_credit >= 1:
                video_credit -= 1
                count = 1
                posts.append(PlannedPost(GRAPH_VIDEO, (products[i],)))
            else:
                count = 1
                posts.append(PlannedPost(GRAPH_IMAGE, (products[i],)))
            i += count
        plans[username] = posts
    return plans


def _timestamps(seed: int, username: str, count: int) -> list[int]:
    """Distinct seconds, newest first: the file name is the date, so two posts never share one."""
    rng = random.Random(f"{seed}:{username}:dates")
    end = int(WINDOW_END.timestamp())
    return [end - 1 - offset for offset in sorted(rng.sample(range(WINDOW_SECONDS), count))]


# -- writing --------------------------------------------------------------------------------------
def write_accounts(
    out_dir: Path,
    accounts: dict[str, Account],
    plans: dict[str, list[PlannedPost]],
    *,
    seed: int,
    images_dir: Path,
    image_size: tuple[int, int] | None,
) -> list[tuple[str, str, int, int, int, str]]:
    """Every account's profile and posts; the manifest rows of the pictures, in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # `{target}` is the account folder, as with `instaloader <profile>`; braces in out_dir escaped.
    pattern = str(out_dir).replace("{", "{{").replace("}", "}}") + os.sep + "{target}"
    manifest: list[tuple[str, str, int, int, int, str]] = []
    with instaloader.Instaloader(quiet=True, dirname_pattern=pattern) as loader:
        for username in sorted(plans):
            account = accounts[username]
            _write_profile(loader, account, post_count=len(plans[username]))
            timestamps = _timestamps(seed, username, len(plans[username]))
            for plan, taken_at in zip(plans[username], timestamps, strict=True):
                manifest += _write_post(
                    loader,
                    account,
                    plan,
                    taken_at=taken_at,
                    seed=seed,
                    images_dir=images_dir,
                    out_dir=out_dir,
                    image_size=image_size,
                )
    return manifest


def _write_profile(loader: instaloader.Instaloader, account: Account, *, post_count: int) -> None:
    picture = f"{CDN}/v/t51.2885-19/{account.profile_id}_n.jpg"
    profile = instaloader.Profile(
        loader.context,
        {
            "id": str(account.profile_id),
            "username": account.username,
            "full_name": account.full_name,
            "biography": f"Official {account.full_name} store. New arrivals every week.",
            "external_url": None,
            "is_private": False,
            "is_verified": account.followers >= 100_000,
            "is_business_account": True,
            "is_professional_account": True,
            "business_category_name": account.business_category,
            "edge_followed_by": {"count": account.followers},
            "edge_follow": {"count": account.followees},
            "edge_owner_to_timeline_media": {"count": post_count},
            "followed_by_viewer": False,
            "follows_viewer": False,
            "blocked_by_viewer": False,
            "has_blocked_viewer": False,
            "requested_by_viewer": False,
            "has_requested_viewer": False,
            "highlight_reel_count": 0,
            "profile_pic_url": picture,
            "profile_pic_url_hd": picture,
        },
    )
    folder = loader.dirname_pattern.format(profile=account.username, target=account.username)
    loader.save_metadata_json(
        os.path.join(folder, f"{account.username}_{account.profile_id}"), profile
    )
    loader.save_profile_id(profile)


def _write_post(
    loader: instaloader.Instaloader,
    account: Account,
    plan: PlannedPost,
    *,
    taken_at: int,
    seed: int,
    images_dir: Path,
    out_dir: Path,
    image_size: tuple[int, int] | None,
) -> list[tuple[str, str, int, int, int, str]]:
    first = plan.products[0]
    media_id = POST_MEDIA_ID_BASE + first.product_id * 16
    shortcode = instaloader.Post.mediaid_to_shortcode(media_id)
    rng = random.Random(f"{seed}:{media_id}:post")
    likes = int(account.followers * rng.uniform(0.004, 0.06))
    folder = out_dir / account.username
    sidecar = plan.typename == GRAPH_SIDECAR

    # The name is instaloader's own `{date_utc}_UTC`; only the date is needed to format it.
    stem = loader.format_filename(
        instaloader.Post(loader.context, {"shortcode": shortcode, "taken_at_timestamp": taken_at}),
        target=account.username,
    )
    pictures: list[tuple[int, Product, Path]] = []
    for position, product in enumerate(plan.products):
        image_id = CHILD_MEDIA_ID_BASE + product.product_id * 16 if sidecar else media_id
        name = f"{stem}_{position + 1}.jpg" if sidecar else f"{stem}.jpg"
        pictures.append((image_id, product, folder / name))

    dimensions: list[dict[str, int]] = []
    for _, product, path in pictures:
        width, height = _write_picture(images_dir / product.image_file, path, image_size)
        os.utime(path, (taken_at, taken_at))  # instaloader dates every file it downloads
        dimensions.append({"height": height, "width": width})

    node: dict[str, object] = {
        "__typename": plan.typename,
        "id": str(media_id),
        "shortcode": shortcode,
        "dimensions": dimensions[0],
        "display_url": _display_url(pictures[0][0]),
        "edge_media_to_tagged_user": {"edges": []},
        "owner": {"id": str(account.profile_id), "username": account.username},
        "is_video": plan.typename == GRAPH_VIDEO,
        "accessibility_caption": (
            f"Photo by {account.full_name} on {datetime.fromtimestamp(taken_at, UTC):%B %d, %Y}. "
            f"May be an image of {first.article_type.lower()}."
        ),
        "title": None,
        "edge_media_to_caption": {"edges": [{"node": {"text": _caption(plan.products)}}]},
        "edge_media_to_comment": {"count": int(likes * rng.uniform(0.0, 0.04))},
        "comments_disabled": False,
        "taken_at_timestamp": taken_at,
        "edge_liked_by": {"count": likes},
        "edge_media_preview_like": {"count": likes},
        "edge_media_to_sponsor_user": {"edges": []},
        "viewer_has_liked": False,
        "location": _location(rng),
    }
    if plan.typename == GRAPH_VIDEO:
        node["video_url"] = f"{CDN}/v/t50.2886-16/{media_id}_n.mp4"
        node["video_view_count"] = likes * rng.randint(3, 12)
        node["video_play_count"] = node["video_view_count"]
        node["video_duration"] = round(rng.uniform(6.0, 45.0), 3)
    if sidecar:
        node["edge_sidecar_to_children"] = {
            "edges": [
                {
                    "node": {
                        "__typename": GRAPH_IMAGE,
                        "id": str(image_id),
                        "shortcode": instaloader.Post.mediaid_to_shortcode(image_id),
                        "display_url": _display_url(image_id),
                        "is_video": False,
                        "dimensions": size,
                    }
                }
                for (image_id, _, _), size in zip(pictures, dimensions, strict=True)
            ]
        }

    post = instaloader.Post(loader.context, node)
    base = os.path.join(folder, stem)
    # What `Instaloader.download_post` does after the pictures, with the default settings.
    loader.save_caption(filename=base, mtime=post.date_local, caption=(post.caption or "").strip())
    if post.is_video:
        video = Path(f"{base}.mp4")
        video.write_bytes(MP4_PLACEHOLDER)
        os.utime(video, (taken_at, taken_at))
    loader.save_metadata_json(base, post)

    return [
        (
            account.username,
            shortcode,
            position,
            image_id,
            product.product_id,
            path.relative_to(out_dir).as_posix(),
        )
        for position, (image_id, product, path) in enumerate(pictures)
    ]


def _write_picture(
    source: Path, target: Path, image_size: tuple[int, int] | None
) -> tuple[int, int]:
    if image_size is None:
        shutil.copyfile(source, target)
        with Image.open(target) as image:
            return image.size
    with Image.open(source) as image:
        # Padding on white keeps the whole product in frame, as shops shoot them on white.
        framed = ImageOps.pad(
            image.convert("RGB"),
            image_size,
            method=Image.Resampling.LANCZOS,
            color=(255, 255, 255),
        )
    framed.save(target, "JPEG", quality=JPEG_QUALITY)
    return framed.size


def _display_url(media_id: int) -> str:
    return f"{CDN}/v/t51.2885-15/{media_id}_n.jpg"


def _caption(products: Sequence[Product]) -> str:
    words = [word for p in products for word in (p.base_colour, p.article_type)]
    tags: list[str] = []
    for word in [*words, products[0].username]:
        tag = "" if word.upper() == "NA" else _NOT_HASHTAG.sub("", word.lower())
        if tag and tag not in tags:
            tags.append(tag)
    return products[0].display_name + "\n\n" + " ".join(f"#{tag}" for tag in tags)


def _location(rng: random.Random) -> dict[str, object] | None:
    if rng.random() >= LOCATION_SHARE:
        return None
    location_id, name, slug, lat, lng = rng.choice(LOCATIONS)
    # lat and lng present: a logged-in loader asks Instagram for a location lacking them.
    return {
        "id": location_id,
        "has_public_page": True,
        "name": name,
        "slug": slug,
        "lat": lat,
        "lng": lng,
    }

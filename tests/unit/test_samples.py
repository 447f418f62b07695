"""Sample accounts are instaloader archives: instaloader itself reads them back, offline."""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import instaloader
import pytest
import requests
from instaloader.structures import get_json_structure, load_structure_from_file
from PIL import Image

from pipeline.labels.taxonomy import load_taxonomy
from pipeline.samples import (
    CAROUSEL_SIZES,
    LABEL_COLUMNS,
    LABELS,
    MANIFEST,
    MANIFEST_COLUMNS,
    MP4_PLACEHOLDER,
    STYLES_COLUMNS,
    WINDOW_END,
    WINDOW_SECONDS,
    SampleSummary,
    brand_username,
    generate_sample_accounts,
)

DATASET = Path(
    os.environ.get("CATALOGUE_DATASET_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "fashion-products"
)
POST_FILE = re.compile(
    r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC(?:_(\d+))?\.(jpg|mp4|txt|json\.xz)$"
)
SIZE = 120


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset() -> Path:
    if not (DATASET / "styles.csv").is_file() or not (DATASET / "images").is_dir():
        pytest.skip(
            f"the fashion product data set is not at {DATASET} (styles.csv + images/): "
            "set CATALOGUE_DATASET_DIR to run these tests"
        )
    return DATASET


@pytest.fixture(scope="module")
def styles(dataset: Path) -> dict[int, dict[str, str]]:
    with (dataset / "styles.csv").open(newline="", encoding="utf-8") as fp:
        return {int(row["id"]): row for row in csv.DictReader(fp)}


@pytest.fixture(scope="module")
def sample(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    # A higher video share than the default so a slice this small surely holds videos.
    out_dir = tmp_path_factory.mktemp("sample") / "accounts"
    return generate_sample_accounts(dataset, out_dir, size=SIZE, seed=7, video_share=0.05)


@dataclass
class Offline:
    """An instaloader context for which any request, by any session or socket, fails the test."""

    context: instaloader.InstaloaderContext
    attempts: list[str] = field(default_factory=list)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Offline]:
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:200])
        raise AssertionError(f"network request attempted: {args!r}")

    # Every session instaloader opens (its own, get_raw()'s, the copies for GraphQL) sends through
    # Session.send, even where it pinned a bound `request`; name lookups and sockets fail too.
    monkeypatch.setattr(requests.Session, "send", lambda self, *a, **k: refuse(*a, **k))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    loader = instaloader.Instaloader(sleep=False, quiet=True)
    offline = Offline(context=loader.context, attempts=attempts)
    yield offline
    assert offline.attempts == []


def _manifest(out_dir: Path) -> list[dict[str, str]]:
    with (out_dir / MANIFEST).open(newline="", encoding="utf-8") as fp:
        reader = csv.DictReader(fp)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        return list(reader)


def _by_shortcode(out_dir: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _manifest(out_dir):
        rows[row["shortcode"]].append(row)
    return rows


def _post_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*/*_UTC.json.xz"))


def _load_posts(out_dir: Path, context) -> list[tuple[Path, instaloader.Post]]:
    posts = []
    for path in _post_files(out_dir):
        post = load_structure_from_file(context, str(path))
        assert isinstance(post, instaloader.Post), path
        posts.append((path, post))
    return posts


def _stem(path: Path) -> str:
    return path.name.removesuffix(".json.xz")


# -- instaloader reads it all back, offline -------------------------------------------------------
def test_every_post_loads_with_instaloader_without_a_request(sample, offline):
    rows = _by_shortcode(sample.out_dir)
    posts = _load_posts(sample.out_dir, offline.context)
    assert len(posts) == sample.posts == len(rows)

    typenames = set()
    for path, post in posts:
        expected = rows[post.shortcode]
        assert post.owner_username == path.parent.name == expected[0]["account"]
        assert str(post.owner_id) == (path.parent / "id").read_text().strip()
        assert post.mediaid == instaloader.Post.shortcode_to_mediaid(post.shortcode)
        assert post.date_utc.strftime("%Y-%m-%d_%H-%M-%S") + "_UTC" == _stem(path)
        assert post.caption_hashtags and post.caption_hashtags[-1] == re.sub(
            r"[^a-z0-9_]", "", post.owner_username
        )
        assert post.likes >= 0 and post.comments >= 0
        assert post.mediacount == len(expected)
        sidecar = post.typename == "GraphSidecar"
        assert post.get_is_videos() == ([False] * len(expected) if sidecar else [post.is_video])
        assert post.url.startswith("https://scontent.cdninstagram.com/")
        # What an importer may read; each would ask Instagram if the archive lacked it.
        assert post.caption_mentions == [] and post.tagged_users == [] and not post.is_sponsored
        assert post.accessibility_caption and post.title is None and post.location is None
        assert post.viewer_has_liked is None and post.pcaption

        typenames.add(post.typename)
        if post.typename == "GraphSidecar":
            nodes = list(post.get_sidecar_nodes())
            assert len(nodes) == len(expected) >= CAROUSEL_SIZES[0]
            for node, row in zip(nodes, expected, strict=True):
                assert not node.is_video and node.video_url is None
                assert row["media_id"] in node.display_url
        else:
            assert len(expected) == 1 and int(expected[0]["media_id"]) == post.mediaid
        if post.typename == "GraphVideo":
            assert post.is_video and post.video_url.endswith(".mp4")
            assert post.video_view_count > 0 and post.video_duration > 0
            assert post.video_play_count is not None
        else:
            assert not post.is_video and post.video_url is None
    assert typenames == {"GraphImage", "GraphSidecar", "GraphVideo"}
    assert offline.attempts == []


def test_the_offline_guard_catches_what_instaloader_would_fetch(offline):
    bare = instaloader.Post(offline.context, {"shortcode": "CsFaZNTvLAA"})
    with pytest.raises(AssertionError, match="network request attempted"):
        _ = bare.likes
    assert offline.attempts, "the guard saw the request"
    offline.attempts.clear()


def test_profiles_load_as_public_business_accounts(sample, offline):
    accounts = sorted(p for p in sample.out_dir.iterdir() if p.is_dir())
    assert len(accounts) == sample.accounts
    for folder in accounts:
        profile_id = (folder / "id").read_text()
        assert re.fullmatch(r"\d+\n", profile_id), "instaloader writes the id and a newline"
        path = folder / f"{folder.name}_{profile_id.strip()}.json.xz"
        profile = load_structure_from_file(offline.context, str(path))
        assert isinstance(profile, instaloader.Profile)
        assert profile.username == folder.name
        assert profile.userid == int(profile_id)
        assert profile.is_business_account and profile.business_category_name
        assert not profile.is_private and profile.full_name
        assert profile.followers > 0 and profile.followees > 0
        assert profile.biography and profile.profile_pic_url.startswith("https://")
    assert offline.attempts == []


def test_a_location_loads_for_a_logged_in_loader_without_a_request(sample, offline):
    # Logged in, instaloader fetches a location that lacks its name, slug or coordinates.
    context = instaloader.Instaloader(sleep=False, quiet=True, iphone_support=False).context
    context.username = "moderator"
    located = [post.location for _, post in _load_posts(sample.out_dir, context) if post.location]
    assert located, "some posts carry a location"
    for location in located:
        assert location.name and location.slug and location.lat is not None
    assert offline.attempts == []


# -- the folder tree ------------------------------------------------------------------------------
def test_manifest_rows_match_posts_and_files(sample):
    rows = _manifest(sample.out_dir)
    assert len(rows) == sample.images
    assert len({row["product_id"] for row in rows}) == sample.images == SIZE
    posts = _by_shortcode(sample.out_dir)
    assert len(posts) == sample.posts
    assert sum(len(r) > 1 for r in posts.values()) == sample.carousels >= 1

    for shortcode, post_rows in posts.items():
        assert [int(r["position"]) for r in post_rows] == list(range(len(post_rows)))
        assert len({r["account"] for r in post_rows}) == 1
        files = [sample.out_dir / r["file"] for r in post_rows]
        assert all(f.is_file() and f.parent.name == post_rows[0]["account"] for f in files)
        stem = files[0].name.split("_UTC")[0] + "_UTC"
        if len(post_rows) > 1:
            assert [f.name for f in files] == [f"{stem}_{i}.jpg" for i in range(1, len(files) + 1)]
        else:
            assert files[0].name == f"{stem}.jpg"
        assert (files[0].parent / f"{stem}.json.xz").is_file(), shortcode
        assert (files[0].parent / f"{stem}.txt").is_file(), shortcode


def test_file_names_follow_instaloaders_default_pattern(sample, offline):
    formatter = instaloader.Instaloader(quiet=True)
    videos = 0
    for path, post in _load_posts(sample.out_dir, offline.context):
        assert formatter.format_filename(post, target=post.owner_username) == _stem(path)
        if post.is_video:
            videos += 1
            assert path.with_name(f"{_stem(path)}.mp4").read_bytes() == MP4_PLACEHOLDER
            assert path.with_name(f"{_stem(path)}.jpg").is_file(), "the thumbnail"
    assert videos == sample.videos >= 1

    for folder in (p for p in sample.out_dir.iterdir() if p.is_dir()):
        for file in folder.iterdir():
            if file.name == "id" or re.fullmatch(
                rf"{re.escape(folder.name)}_\d+\.json\.xz", file.name
            ):
                continue
            match = POST_FILE.match(file.name)
            assert match, file
            if match[1]:
                assert int(match[1]) >= 1, "carousel pictures count from _1, as instaloader's"
    assert sorted(p.name for p in sample.out_dir.iterdir() if p.is_file()) == [LABELS, MANIFEST]


def test_labels_file_gives_each_picture_its_products_colour_and_category(sample, styles):
    with (sample.out_dir / LABELS).open(newline="", encoding="utf-8") as fp:
        reader = csv.DictReader(fp)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        labels = {(row["shortcode"], row["position"]): row for row in reader}
    manifest = _manifest(sample.out_dir)
    assert len(labels) == len(manifest)
    taxonomy = load_taxonomy()
    for row in manifest:
        label, style = labels[(row["shortcode"], row["position"])], styles[int(row["product_id"])]
        for attribute, column in (("colour", "baseColour"), ("category", "articleType")):
            if label[attribute]:
                assert label[attribute] == style[column]
            else:
                assert style[column] == "NA" or f"{column} '{style[column]}'" in label["note"]
            if label[attribute]:
                taxonomy.attribute(attribute).canonical(label[attribute])  # the taxonomy's own


def test_labels_file_holds_only_values_the_shipped_taxonomy_accepts(tmp_path):
    """The data set has categories the taxonomy refuses (Free Gifts, Basketballs...): they are
    left empty, so importing the sample's labels refuses no row."""
    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    rows = [
        ("1", "Men", "Apparel", "Topwear", "Tshirts", "Navy Blue", "Summer", "2012", "Casual",
         "Acme Men Navy Tshirt"),
        ("2", "Men", "Free Items", "Free Gifts", "Free Gifts", "Black", "Fall", "2012", "Casual",
         "Acme Free Gift"),
        ("3", "Men", "Sporting Goods", "Sports Equipment", "Basketballs", "Orange", "Fall",
         "2012", "Sports", "Acme Basketball"),
    ]  # fmt: skip
    with (dataset / "styles.csv").open("w", newline="", encoding="utf-8") as fp:
        csv.writer(fp).writerows([STYLES_COLUMNS, *rows])
    for row in rows:
        Image.new("RGB", (60, 80), (10, 20, 30)).save(dataset / "images" / f"{row[0]}.jpg")
    summary = generate_sample_accounts(dataset, tmp_path / "out", carousel_share=0, video_share=0)
    with (summary.out_dir / LABELS).open(newline="", encoding="utf-8") as fp:
        labels = list(csv.DictReader(fp))
    assert len(labels) == 3 and summary.values_left_out == 2
    taxonomy = load_taxonomy()
    for label in labels:
        for attribute in ("colour", "category"):
            if label[attribute]:
                taxonomy.attribute(attribute).canonical(label[attribute])
    assert sorted(label["category"] for label in labels) == ["", "", "Tshirts"]
    assert any("articleType 'Free Gifts' not in taxonomy" in label["note"] for label in labels)


def test_media_ids_are_unique_and_fit_in_63_bits(sample, offline):
    posts = [post for _, post in _load_posts(sample.out_dir, offline.context)]
    post_ids = [post.mediaid for post in posts]
    picture_ids = [int(row["media_id"]) for row in _manifest(sample.out_dir)]
    assert len(set(post_ids)) == len(post_ids) == sample.posts
    assert len(set(picture_ids)) == len(picture_ids) == sample.images
    # A single picture is its post; a carousel's children have ids of their own.
    carousel_ids = {post.mediaid for post in posts if post.typename == "GraphSidecar"}
    assert len(carousel_ids) == sample.carousels and not carousel_ids & set(picture_ids)
    assert all(10**18 <= i < 2**63 for i in {*post_ids, *picture_ids})
    for post in posts:
        assert instaloader.Post.mediaid_to_shortcode(post.mediaid) == post.shortcode


def test_timestamps_are_distinct_per_account_within_the_year_before_the_window_end(sample, offline):
    taken: dict[str, list[datetime]] = defaultdict(list)
    for _, post in _load_posts(sample.out_dir, offline.context):
        taken[post.owner_username].append(post.date_utc.replace(tzinfo=UTC))  # naive, in UTC
    for account, dates in taken.items():
        assert len(set(dates)) == len(dates), account
        assert all(0 < (WINDOW_END - date).total_seconds() <= WINDOW_SECONDS for date in dates)


# -- content --------------------------------------------------------------------------------------
def test_captions_and_accounts_come_from_the_styles(sample, styles, offline):
    rows = _by_shortcode(sample.out_dir)
    for path, post in _load_posts(sample.out_dir, offline.context):
        products = [styles[int(r["product_id"])] for r in rows[post.shortcode]]
        first = products[0]
        assert post.caption.startswith(first["productDisplayName"] + "\n\n#")
        assert (
            path.with_name(f"{_stem(path)}.txt").read_text(encoding="utf-8") == post.caption + "\n"
        )
        for product in products:
            brand = product["productDisplayName"].split()[0]
            assert brand_username(brand) == post.owner_username, "a carousel shows one brand"
            assert re.sub(r"[^a-z0-9]", "", product["articleType"].lower()) in post.caption_hashtags
            if product["baseColour"] != "NA":
                colour = re.sub(r"[^a-z0-9]", "", product["baseColour"].lower())
                assert colour in post.caption_hashtags


def test_copied_pictures_are_the_data_sets_bytes(sample, dataset):
    for row in _manifest(sample.out_dir):
        picture = (sample.out_dir / row["file"]).read_bytes()
        assert picture == (dataset / "images" / f"{row['product_id']}.jpg").read_bytes()


def test_same_seed_gives_identical_bytes_and_another_seed_another_sample(dataset, tmp_path):
    def files(out_dir: Path) -> dict[str, bytes]:
        paths = (p for p in out_dir.rglob("*") if p.is_file())
        return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in paths}

    first = generate_sample_accounts(dataset, tmp_path / "a", size=40, seed=11)
    second = generate_sample_accounts(dataset, tmp_path / "b", size=40, seed=11)
    other = generate_sample_accounts(dataset, tmp_path / "c", size=40, seed=12)
    assert first.posts == second.posts
    one, two = files(tmp_path / "a"), files(tmp_path / "b")
    assert sum(name.endswith(".json.xz") for name in one) == first.posts + first.accounts
    assert one == two
    assert {r["product_id"] for r in _manifest(tmp_path / "a")} != {
        r["product_id"] for r in _manifest(tmp_path / "c")
    }
    assert other.images == 40


def test_image_size_reencodes_to_instagram_size(dataset, tmp_path, offline):
    summary = generate_sample_accounts(dataset, tmp_path / "big", size=40, image_size=(1080, 1350))
    for row in _manifest(summary.out_dir):
        with Image.open(summary.out_dir / row["file"]) as picture:
            assert (picture.format, picture.size, picture.mode) == ("JPEG", (1080, 1350), "RGB")
    for _, post in _load_posts(summary.out_dir, offline.context):
        assert get_json_structure(post)["node"]["dimensions"] == {"height": 1350, "width": 1080}


def test_shares_hold_on_a_bigger_slice(dataset, tmp_path):
    summary = generate_sample_accounts(dataset, tmp_path / "slice", size=400)
    assert summary.images == 400
    assert 0.12 <= summary.carousels / summary.posts <= 0.18
    assert 1 <= summary.videos <= 0.05 * summary.posts


def test_no_carousels_or_videos_when_their_shares_are_zero(dataset, tmp_path):
    summary = generate_sample_accounts(
        dataset, tmp_path / "plain", size=60, carousel_share=0.0, video_share=0.0
    )
    assert (summary.posts, summary.carousels, summary.videos) == (60, 0, 0)


# -- what a user can get wrong --------------------------------------------------------------------
@pytest.mark.parametrize(
    "present",
    [
        pytest.param((), id="empty-folder"),
        pytest.param(("styles.csv",), id="no-images"),
        pytest.param(("images",), id="no-styles"),
    ],
)
def test_missing_dataset_says_where_to_get_it(tmp_path, present):
    dataset = tmp_path / "fashion-products"
    dataset.mkdir()
    if "styles.csv" in present:
        (dataset / "styles.csv").write_text("id\n")
    if "images" in present:
        (dataset / "images").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        generate_sample_accounts(dataset, tmp_path / "out")
    message = str(error.value)
    for words in ("missing", str(dataset), "Fashion Product Images (Small)", "images/<id>.jpg"):
        assert words in message
    assert "styles.csv" in message and "CATALOGUE_DATASET_DIR" in message
    assert not (tmp_path / "out").exists()


def test_malformed_rows_are_skipped_and_counted(dataset, styles, tmp_path):
    small = tmp_path / "small"
    (small / "images").mkdir(parents=True)
    good = list(styles.values())[:5]
    for row in good:
        shutil.copyfile(
            dataset / "images" / f"{row['id']}.jpg", small / "images" / f"{row['id']}.jpg"
        )
    columns = list(good[0])
    with (small / "styles.csv").open("w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in good)
        writer.writerow(["12", "Men", "Apparel"])  # too few columns
        writer.writerow(["abc", *[good[0][c] for c in columns[1:]]])  # id is not a number
        writer.writerow([good[0][c] for c in columns])  # the same id again
        writer.writerow(["99999999", *[good[0][c] for c in columns[1:]]])  # no picture
        writer.writerow(["99999998", *[good[0][c] for c in columns[1:-1]], "!!! Shirt"])  # no brand

    summary = generate_sample_accounts(small, tmp_path / "out")
    assert (summary.skipped_rows, summary.missing_images, summary.images) == (3, 1, 5)
    assert {int(r["product_id"]) for r in _manifest(tmp_path / "out")} == {
        int(row["id"]) for row in good
    }


def test_refuses_to_write_into_a_folder_that_holds_files(dataset, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="choose a new output folder"):
        generate_sample_accounts(dataset, tmp_path, size=5)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"size": -1}, id="negative-size"),
        pytest.param({"image_size": (1080, 0)}, id="zero-height"),
        pytest.param({"carousel_share": 1.5}, id="share-above-one"),
        pytest.param({"carousel_share": 0.6, "video_share": 0.6}, id="shares-above-one"),
    ],
)
def test_rejects_impossible_arguments(dataset, tmp_path, arguments):
    with pytest.raises(ValueError):
        generate_sample_accounts(dataset, tmp_path / "out", **arguments)


def test_command_line_writes_a_sample_and_explains_a_missing_data_set(dataset, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["samples", str(tmp_path / "out"), "--dataset", str(dataset), "--size", "10"]) == 0
    assert "10 images" in capsys.readouterr().out
    assert main(["samples", str(tmp_path / "again"), "--dataset", str(tmp_path / "nowhere")]) == 1
    assert "CATALOGUE_DATASET_DIR" in capsys.readouterr().err

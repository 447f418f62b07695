"""The real clothing photos as sample accounts: one business account per person, each photo a post
at its own size, the garment as the taxonomy's category, the labeller's non-answers left empty."""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from pathlib import Path

import instaloader
import pytest
from instaloader.structures import load_structure_from_file
from PIL import Image

from pipeline.labels.taxonomy import UnknownValue, load_taxonomy, parse_taxonomy
from pipeline.samples import (
    CLOTHING_COLUMNS,
    CLOTHING_MANIFEST_COLUMNS,
    LABEL_COLUMNS,
    LABELS,
    MANIFEST,
    NON_GARMENTS,
    SampleSummary,
    generate_clothing_accounts,
)
from tests.cli import catalogue

# 60 photos of 8 people: this seed's slice holds Not sure, Other and Skip, and new values and
# aliases (Body, Longsleeve, Polo, Undershirt, Outwear...).
SLICE = {"people": 8, "size": 60, "seed": 1961}

# garment of images.csv -> category value of the shipped taxonomy (docs/moderation.md)
MAPPING = {
    "T-Shirt": "Tshirts",
    "Longsleeve": "Longsleeves",
    "Pants": "Trousers",
    "Shoes": "Shoes",
    "Shirt": "Shirts",
    "Dress": "Dresses",
    "Outwear": "Jackets",
    "Shorts": "Shorts",
    "Hat": "Hat",
    "Skirt": "Skirts",
    "Polo": "Tshirts",
    "Undershirt": "Innerwear Vests",
    "Blazer": "Blazers",
    "Hoodie": "Sweatshirts",
    "Body": "Bodysuits",
    "Top": "Tops",
    "Blouse": "Tops",
}


@pytest.fixture(scope="module")
def sample(clothing_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    return generate_clothing_accounts(
        clothing_photos, tmp_path_factory.mktemp("clothing") / "out", **SLICE
    )


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fp:
        reader = csv.DictReader(fp)
        assert tuple(reader.fieldnames or ()) == columns
        return list(reader)


@pytest.mark.parametrize("garment", sorted(MAPPING))
def test_each_garment_is_a_category_of_the_shipped_taxonomy(garment):
    category = load_taxonomy().attribute("category")
    assert category.canonical(garment) == MAPPING[garment]


@pytest.mark.parametrize("answer", NON_GARMENTS)
def test_the_labellers_own_answers_are_no_category(answer):
    with pytest.raises(UnknownValue):
        load_taxonomy().attribute("category").canonical(answer)


def test_each_person_is_one_business_account_and_each_photo_a_post(sample):
    manifest = _rows(sample.out_dir / MANIFEST, CLOTHING_MANIFEST_COLUMNS)
    senders: dict[str, set[str]] = defaultdict(set)
    for row in manifest:
        senders[row["account"]].add(row["sender_id"])
    assert sample.accounts == len(senders) == SLICE["people"]
    assert all(len(ids) == 1 for ids in senders.values()), "an account holds one person's photos"
    assert len({next(iter(ids)) for ids in senders.values()}) == sample.accounts
    assert sample.images == sample.posts == len(manifest) == SLICE["size"]
    assert sample.carousels == sample.videos == 0

    context = instaloader.Instaloader(quiet=True).context
    by_shortcode = {row["shortcode"]: row for row in manifest}
    for folder in sorted(p for p in sample.out_dir.iterdir() if p.is_dir()):
        profile_id = (folder / "id").read_text().strip()
        profile = load_structure_from_file(
            context, str(folder / f"{folder.name}_{profile_id}.json.xz")
        )
        assert isinstance(profile, instaloader.Profile) and profile.is_business_account
        assert profile.username == folder.name
        for path in folder.glob("*_UTC.json.xz"):
            post = load_structure_from_file(context, str(path))
            row = by_shortcode[post.shortcode]
            assert (post.owner_username, post.typename) == (folder.name, "GraphImage")
            assert post.mediaid == int(row["media_id"])


def test_pictures_keep_their_own_bytes_size_and_aspect(sample, clothing_photos):
    for row in _rows(sample.out_dir / MANIFEST, CLOTHING_MANIFEST_COLUMNS):
        written, source = (
            sample.out_dir / row["file"],
            clothing_photos / "images" / f"{row['image']}.jpg",
        )
        assert written.read_bytes() == source.read_bytes()
        with Image.open(written) as image:
            assert image.size != (60, 80)


def test_labels_give_each_garment_its_category_and_the_non_answers_none(sample):
    manifest = {
        (row["shortcode"], row["position"]): row
        for row in _rows(sample.out_dir / MANIFEST, CLOTHING_MANIFEST_COLUMNS)
    }
    labels = _rows(sample.out_dir / LABELS, LABEL_COLUMNS)
    assert len(labels) == len(manifest)
    category = load_taxonomy().attribute("category")
    answers = set()
    for label in labels:
        row = manifest[(label["shortcode"], label["position"])]
        assert label["colour"] == "" and label["moderator"] == "dataset"
        assert row["image"] in label["note"] and f"sender {row['sender_id']}" in label["note"]
        if row["label"] in NON_GARMENTS:
            answers.add(row["label"])
            assert label["category"] == ""
            assert f"'{row['label']}' is the labeller's answer, not a garment" in label["note"]
        else:
            assert category.canonical(label["category"]) == MAPPING[row["label"]]
    assert answers == set(NON_GARMENTS), "the slice should hold every non-answer"
    assert sample.non_garments == sum(row["label"] in NON_GARMENTS for row in manifest.values())
    assert sample.values_left_out == 0


def test_same_arguments_give_the_same_files(clothing_photos, tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    arguments = {"people": 3, "size": 12, "seed": 4}
    first = generate_clothing_accounts(clothing_photos, tmp_path / "a", **arguments)
    second = generate_clothing_accounts(clothing_photos, tmp_path / "b", **arguments)
    assert first.images == second.images > 0
    assert digest(first.out_dir) == digest(second.out_dir)


# -- an images.csv of our own ---------------------------------------------------------------------
def _photos(folder: Path, rows: list[tuple[str, ...]], sizes: dict[str, tuple[int, int]]) -> Path:
    (folder / "images").mkdir(parents=True)
    with (folder / "images.csv").open("w", newline="", encoding="utf-8") as fp:
        csv.writer(fp).writerows([CLOTHING_COLUMNS, *rows])
    for image, size in sizes.items():
        Image.new("RGB", size, (120, 30, 30)).save(folder / "images" / f"{image}.jpg")
    return folder


def test_own_sizes_unknown_garments_and_bad_rows(tmp_path):
    rows = [
        ("wide", "1", "Longsleeve", "False"),
        ("tall", "1", "Other", "True"),
        ("square", "2", "Cape", "False"),  # a garment the taxonomy does not know
        ("gone", "2", "Shirt", "False"),  # no picture
        ("wide", "3", "Shirt", "False"),  # the same image twice
        ("bad", "3", "Shirt", "maybe"),  # kids is neither True nor False
        ("short", "3"),
    ]
    sizes = {"wide": (384, 216), "tall": (187, 384), "square": (384, 384), "bad": (10, 10)}
    folder = _photos(tmp_path / "photos", rows, sizes)
    # a taxonomy where "Other" is a value: still the labeller's answer, never a class
    document = {
        "name": "own",
        "attributes": [
            {"name": "colour", "values": ["Red"]},
            {"name": "category", "values": ["Longsleeves", "Other"],
             "aliases": {"Longsleeve": "Longsleeves"}},
        ],
    }  # fmt: skip
    summary = generate_clothing_accounts(
        folder, tmp_path / "out", taxonomy=parse_taxonomy(document)
    )
    assert (summary.accounts, summary.images) == (2, 3)
    assert (summary.skipped_rows, summary.missing_images) == (3, 1)
    assert (summary.values_left_out, summary.non_garments) == (1, 1)
    manifest = {row["image"]: row for row in _rows(tmp_path / "out" / MANIFEST,
                                                   CLOTHING_MANIFEST_COLUMNS)}  # fmt: skip
    labels = {(row["shortcode"]): row for row in _rows(tmp_path / "out" / LABELS, LABEL_COLUMNS)}
    for image, size in sizes.items():
        if image in manifest:
            with Image.open(tmp_path / "out" / manifest[image]["file"]) as picture:
                assert picture.size == size
    assert labels[manifest["wide"]["shortcode"]]["category"] == "Longsleeve"
    assert labels[manifest["tall"]["shortcode"]]["category"] == ""
    assert "kids' clothes" in labels[manifest["tall"]["shortcode"]]["note"]
    square = labels[manifest["square"]["shortcode"]]
    assert square["category"] == "" and "'Cape' not in taxonomy" in square["note"]


def test_a_missing_folder_or_foreign_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="CATALOGUE_CLOTHING_PHOTOS_DIR"):
        generate_clothing_accounts(tmp_path / "nowhere", tmp_path / "out")
    folder = tmp_path / "styles"
    (folder / "images").mkdir(parents=True)
    (folder / "images.csv").write_text("id,gender\n1,Men\n")
    with pytest.raises(ValueError, match="image,sender_id,label,kids"):
        generate_clothing_accounts(folder, tmp_path / "out")


def test_command_lines_write_the_clothing_photos(clothing_photos, tmp_path, capsys):
    from pipeline.cli import main

    assert main(["samples", str(tmp_path / "module"), "--source", "clothing-photos", "--dataset",
                 str(clothing_photos), "--people", "2", "--size", "5"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "2 sample business accounts" in said and ": 5 posts" in said
    assert main(["samples", str(tmp_path / "big"), "--source", "clothing-photos", "--image-size",
                 "1080x1350"]) == 1  # fmt: skip
    assert "own size" in capsys.readouterr().err

    env = {**os.environ, "CATALOGUE_CLOTHING_PHOTOS_DIR": str(clothing_photos)}
    done = catalogue(env, "samples", str(tmp_path / "cli"), "--source", "clothing-photos",
                     "--people", "3", "--size", "9")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 sample business accounts" in done.stdout and "9 images" in done.stdout
    refused = catalogue(env, "samples", str(tmp_path / "products"), "--people", "3")
    assert refused.returncode != 0 and "--people" in refused.stderr

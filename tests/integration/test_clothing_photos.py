"""Real clothing photos through the product: a slice of 8 people's photos as an instaloader
archive, imported into the real Postgres and S3 server, their garments as category labels, and a
snapshot that keeps each person's photos on one side of the split."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, text

from pipeline.collect.archive import ImportSummary, import_archive
from pipeline.labels.history import Who
from pipeline.labels.label_csv import ImportReport, import_labels
from pipeline.labels.taxonomy import load_taxonomy, sync_taxonomy
from pipeline.samples import NON_GARMENTS, generate_clothing_accounts
from pipeline.storage import ObjectStore
from pipeline.train.snapshot import SnapshotError, SnapshotOptions, snapshot_dataset, split_of
from tests.catalogue_rows import reset_catalogue
from tests.cli import catalogue
from tests.unit.test_samples_clothing import MAPPING, SLICE


@dataclass(frozen=True)
class Imported:
    engine: Engine
    archive: Path
    archive_summary: ImportSummary
    labels: ImportReport
    manifest: list[dict[str, str]]

    def sender(self, shortcode: str) -> str:
        return next(row["sender_id"] for row in self.manifest if row["shortcode"] == shortcode)


@pytest.fixture(scope="module")
def imported(migrated, settings, clothing_photos, tmp_path_factory) -> Imported:
    reset_catalogue(migrated)
    with migrated.begin() as connection:
        sync_taxonomy(connection=connection, taxonomy=load_taxonomy())
    archive = tmp_path_factory.mktemp("clothing-archive")
    generate_clothing_accounts(clothing_photos, archive, **SLICE)
    summary = import_archive(
        archive, engine=migrated, store=ObjectStore.for_images(settings), workers=2
    )
    report = import_labels(archive / "labels.csv", engine=migrated, who=Who(name="dataset"))
    with (archive / "manifest.csv").open(newline="", encoding="utf-8") as fp:
        manifest = list(csv.DictReader(fp))
    return Imported(migrated, archive, summary, report, manifest)


def _rows(engine: Engine, sql: str) -> list:
    with engine.connect() as connection:
        return list(connection.execute(text(sql)).all())


def test_the_archive_and_its_labels_import_whole(imported):
    summary, report = imported.archive_summary, imported.labels
    assert len(summary.accounts) == SLICE["people"]
    assert (summary.posts_new, summary.images_new) == (SLICE["size"], SLICE["size"])
    assert summary.quarantined == summary.posts_refused == 0
    assert report.refused == [] and report.applied
    garments = [row for row in imported.manifest if row["label"] not in NON_GARMENTS]
    assert report.written == len(garments) < len(imported.manifest)


def test_every_account_is_one_person(imported):
    senders: dict[str, set[str]] = defaultdict(set)
    for username, shortcode in _rows(
        imported.engine,
        "SELECT a.username, p.shortcode FROM raw.posts p JOIN raw.accounts a ON a.id = p.account_id",
    ):
        senders[username].add(imported.sender(shortcode))
    assert len(senders) == SLICE["people"]
    assert all(len(ids) == 1 for ids in senders.values())
    assert len({ids.pop() for ids in senders.values()}) == SLICE["people"]


def test_labels_land_on_the_taxonomy_values_and_non_answers_give_none(imported):
    current = {
        (shortcode, position, attribute): value
        for shortcode, position, attribute, value in _rows(
            imported.engine,
            "SELECT p.shortcode, i.position, l.attribute, l.value "
            "FROM catalogue.current_labels l JOIN raw.images i ON i.id = l.image_id "
            "JOIN raw.posts p ON p.id = i.post_id",
        )
    }
    assert {attribute for _, _, attribute in current} == {"category"}  # no colours in the set
    answers = set()
    for row in imported.manifest:
        key = (row["shortcode"], int(row["position"]), "category")
        if row["label"] in NON_GARMENTS:
            answers.add(row["label"])
            assert key not in current, f"{row['label']} must give no label"
        else:
            assert current[key] == MAPPING[row["label"]], row
    assert answers == set(NON_GARMENTS)
    assert len(set(current.values())) >= 8


def test_pictures_keep_their_size_and_aspect(imported, clothing_photos):
    stored = {
        (shortcode, position): (width, height)
        for shortcode, position, width, height in _rows(
            imported.engine,
            "SELECT p.shortcode, i.position, i.width, i.height "
            "FROM raw.images i JOIN raw.posts p ON p.id = i.post_id",
        )
    }
    for row in imported.manifest:
        with Image.open(clothing_photos / "images" / f"{row['image']}.jpg") as source:
            assert stored[(row["shortcode"], int(row["position"]))] == source.size


def _sides(snapshot, imported: Imported) -> dict[str, set[str]]:
    shortcodes = dict(_rows(imported.engine, "SELECT i.id, p.shortcode FROM raw.images i "
                                             "JOIN raw.posts p ON p.id = i.post_id"))  # fmt: skip
    sides: dict[str, set[str]] = defaultdict(set)
    for item in snapshot.manifest["images"]:
        sides[imported.sender(shortcodes[item["image_id"]])].add(item["split"])
    return sides


def test_a_snapshot_grouped_by_account_keeps_each_person_on_one_side(imported, settings):
    store = ObjectStore.for_models(settings)
    shares = {"validation_share": 0.25, "test_share": 0.25}
    options = SnapshotOptions(attributes=("category",), min_examples=1, **shares)
    by_post = snapshot_dataset(engine=imported.engine, store=store, options=options)
    by_account = snapshot_dataset(
        engine=imported.engine,
        store=store,
        options=SnapshotOptions(
            attributes=("category",), min_examples=1, group_by="account", **shares
        ),
    )
    people = _sides(by_account, imported)
    assert all(len(splits) == 1 for splits in people.values()), people
    assert {s for splits in people.values() for s in splits} == {"train", "validation", "test"}
    assert by_account.manifest["options"]["group_by"] == "account"
    assert by_account.checksum != by_post.checksum

    # grouping by post (the default, its manifest as before) spreads a person over the splits
    assert "group_by" not in by_post.manifest["options"]
    assert any(len(splits) > 1 for splits in _sides(by_post, imported).values())
    media_ids = dict(_rows(imported.engine, "SELECT i.id, p.media_id FROM raw.images i "
                                            "JOIN raw.posts p ON p.id = i.post_id"))  # fmt: skip
    for item in by_post.manifest["images"]:
        assert item["split"] == split_of(media_ids[item["image_id"]], **shares)

    with pytest.raises(SnapshotError, match="group_by 'person'"):
        SnapshotOptions(group_by="person")


def test_the_snapshot_command_groups_by_account(imported, services, settings):
    made = catalogue(services.env(), "snapshot", "--attribute", "category", "--min-examples", "1",
                     "--group-by", "account")  # fmt: skip
    assert made.returncode == 0, made.stderr
    expected = snapshot_dataset(
        engine=imported.engine,
        store=ObjectStore.for_models(settings),
        options=SnapshotOptions(attributes=("category",), min_examples=1, group_by="account"),
    )
    assert f"({expected.checksum[:12]}" in made.stdout

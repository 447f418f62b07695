"""Duplicate listings through the real Postgres, S3 server and Airflow: copies of product photos
(re-encoded, resized, cropped, mirrored, overlaid with text, reposted by another shop) imported as
shops' posts, embedded by a pretrained champion in the predict pass, then grouped; other products
of the same type and colour stay apart; reruns, incremental and concurrent refreshes, a new
champion and a rollback, the command line and the predict DAG."""

from __future__ import annotations

import csv
import random
import threading
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.collect.archive import import_archive
from pipeline.predict.batch import PredictOptions, predict_catalogue
from pipeline.predict.errors import NoChampion
from pipeline.samples.archive import Account, Product, plan_posts, write_accounts
from pipeline.samples.copies import COPIES
from pipeline.similar.duplicates import DuplicateOptions, DuplicateRun, refresh_duplicates
from pipeline.storage import ObjectStore
from pipeline.train import registry
from tests.catalogue_rows import reset_catalogue
from tests.cli import catalogue
from tests.model_artefacts import pretrained_category, register_model

# The thresholds are the champion's: the defaults were measured on the trained catalogue champion
# (bench/duplicates.py). This test network (ImageNet features, an untrained head) embeds
# differently, so the tests set thresholds of their own, in code and in the environment the
# command line and Airflow read; a copy byte for byte is grouped at the defaults too.
THRESHOLDS = {"max_hamming": 6, "max_distance": 0.3, "close_max_hamming": 16,
              "close_distance": 0.1, "min_colour_overlap": 0.8, "neighbours": 3}  # fmt: skip
ENV = {f"CATALOGUE_DUPLICATE_{k.upper()}": str(v) for k, v in THRESHOLDS.items()}
OPTIONS = DuplicateOptions(**THRESHOLDS)
FOUND = ("reencoded", "resized", "mirrored", "reposted")  # by the first way
# and at looser thresholds, a crop and a text band too
LOOSER = DuplicateOptions(max_hamming=14, max_distance=0.4, neighbours=10, min_colour_overlap=0.5)
ARTICLE_TYPES = ("Tshirts", "Casual Shoes", "Handbags", "Watches", "Tops")
CLASSES = list(ARTICLE_TYPES)
SUPPLIER = "supplier.photos"  # posts every original; each kind of copy comes from its own shop


@dataclass(frozen=True)
class Cases:
    pictures: dict[int, tuple[int, str]]  # image id -> (product id, kind: original, a copy, other)
    version: str  # the champion that embedded them

    def of(self, product: int, kind: str) -> int:
        return next(i for i, p in self.pictures.items() if p == (product, kind))

    def originals(self) -> list[int]:
        return sorted(p for p, kind in self.pictures.values() if kind == "original")


def _choose(dataset: Path) -> list[tuple[dict, dict]]:
    """An original of each article type and another product of its type, colour and gender."""
    with (dataset / "styles.csv").open(newline="", encoding="utf-8") as fp:
        rows = [r for r in csv.DictReader(fp) if (dataset / "images" / f"{r['id']}.jpg").exists()]
    rng = random.Random(24)
    chosen = []
    for article in ARTICLE_TYPES:
        kind = sorted((r for r in rows if r["articleType"] == article), key=lambda r: int(r["id"]))
        original = rng.choice(kind)
        alike = [r for r in kind if r["id"] != original["id"]
                 and (r["baseColour"], r["gender"]) == (original["baseColour"], original["gender"])]  # fmt: skip
        chosen.append((original, rng.choice(alike)))
    return chosen


def _product(row: dict, product_id: int, username: str, image_file: str) -> Product:
    return Product(product_id=product_id, master_category=row["masterCategory"],
                   article_type=row["articleType"], base_colour=row["baseColour"],
                   display_name=row["productDisplayName"], brand=username, username=username,
                   image_file=image_file)  # fmt: skip


def _write_shops(dataset: Path, out: Path, images: Path) -> dict[tuple[str, int], tuple[int, str]]:
    """The supplier's originals, a shop per kind of copy, another brand's look-alikes, as an
    instaloader archive; (shortcode, position) -> (product id, kind)."""
    images.mkdir(parents=True)
    by_account: dict[str, list[Product]] = {}
    kinds: dict[int, tuple[int, str]] = {}  # the archive's product id -> (product, kind)

    def add(username: str, row: dict, kind: str, data: bytes) -> None:
        number = len(kinds) + 1
        (images / f"{number}.jpg").write_bytes(data)
        by_account.setdefault(username, []).append(_product(row, number, username, f"{number}.jpg"))
        kinds[number] = (int(row["id"]), kind)

    for original, alike in _choose(dataset):
        data = (dataset / "images" / f"{original['id']}.jpg").read_bytes()
        add(SUPPLIER, original, "original", data)
        for kind, copy in COPIES.items():
            add(f"shop.{kind}", original, kind, copy(data))
        add("other.brand", alike, "other", (dataset / "images" / f"{alike['id']}.jpg").read_bytes())
    accounts = {
        name: Account(username=name, profile_id=41_000_000_000 + i, full_name=name,
                      business_category="Clothing (Brand)", followers=1000, followees=10)
        for i, name in enumerate(sorted(by_account))
    }  # fmt: skip
    plans = plan_posts(by_account, seed=24, shares=(0.0, 0.0))  # one picture per post
    manifest = write_accounts(out, accounts, plans, seed=24, images_dir=images, image_size=None)
    return {(shortcode, position): kinds[number]
            for _, shortcode, position, _, number, _ in manifest}  # fmt: skip


@pytest.fixture(scope="module")
def stores(settings):
    return ObjectStore.for_images(settings), ObjectStore.for_models(settings)


def _predict(engine, stores, cache: Path):
    return predict_catalogue(
        engine=engine, images=stores[0], models=stores[1], cache_dir=cache,
        options=PredictOptions(batch_size=16, workers=4),
    )  # fmt: skip


@pytest.fixture(scope="module")
def cases(migrated, dataset, stores, tmp_path_factory) -> Cases:
    """The shops imported, a pretrained category champion registered, one predict pass."""
    from pipeline.train.pretrained import MissingWeights

    reset_catalogue(migrated)
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE catalogue.model_versions, catalogue.dataset_snapshots "
                                "CASCADE"))  # fmt: skip
    work = tmp_path_factory.mktemp("duplicates")
    try:
        model = pretrained_category(CLASSES)
    except MissingWeights as exc:
        pytest.skip(f"the ImageNet MobileNetV2 weights are needed for meaningful embeddings: {exc}")
    by_picture = _write_shops(dataset, work / "archive", work / "images")
    import_archive(work / "archive", engine=migrated, store=stores[0], workers=4)
    version = register_model(migrated, stores[1], model, work / "m1", champion=True)
    run = _predict(migrated, stores, work / "artefacts")
    assert run.embedded == run.images == len(by_picture)
    with migrated.connect() as connection:
        rows = connection.execute(text("SELECT id, shortcode, position FROM raw.live_images")).all()
    return Cases({r.id: by_picture[(r.shortcode, r.position)] for r in rows}, version)


def _forget_groups(engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM catalogue.image_duplicates"))
        connection.execute(text("DELETE FROM catalogue.duplicate_checks"))
        connection.execute(text("UPDATE marketplace.products SET duplicate_group = NULL"))


def _groups(engine) -> dict[int, int]:
    with engine.connect() as connection:
        return dict(
            connection.execute(
                text("SELECT image_id, group_id FROM catalogue.image_duplicates")
            ).all()
        )


@pytest.fixture(scope="module")
def grouped(migrated, cases) -> tuple[DuplicateRun, dict[int, int]]:
    """One refresh from nothing grouped, and the groups it made."""
    _forget_groups(migrated)
    run = refresh_duplicates(migrated, options=OPTIONS)
    return run, _groups(migrated)


@pytest.fixture(scope="module")
def loosely_grouped(migrated, cases, grouped) -> dict[int, int]:
    """The groups at the looser thresholds (then the default ones again for the other tests)."""
    _forget_groups(migrated)
    refresh_duplicates(migrated, options=LOOSER)
    groups = _groups(migrated)
    _forget_groups(migrated)
    refresh_duplicates(migrated, options=OPTIONS)
    return groups


def _grouped_with_original(cases: Cases, groups: dict[int, int], kind: str) -> None:
    for product in cases.originals():
        original, copy = cases.of(product, "original"), cases.of(product, kind)
        assert original in groups, f"product {product}'s original is in no group"
        assert groups.get(copy) == groups[original], f"product {product}'s {kind} copy"


@pytest.mark.parametrize("kind", [pytest.param(kind, id=kind) for kind in FOUND])
def test_a_copy_is_grouped_with_its_original(cases, grouped, kind):
    _grouped_with_original(cases, grouped[1], kind)


@pytest.mark.parametrize("kind", [pytest.param(kind, id=kind) for kind in COPIES])
def test_at_looser_thresholds_crops_and_overlays_join_too(cases, loosely_grouped, kind):
    _grouped_with_original(cases, loosely_grouped, kind)
    assert not {i for i, p in cases.pictures.items() if p[1] == "other"} & set(loosely_grouped)


def test_a_repost_is_grouped_at_the_default_thresholds(migrated, cases, grouped):
    _forget_groups(migrated)
    refresh_duplicates(migrated)  # CATALOGUE_DUPLICATE_* as shipped
    _grouped_with_original(cases, _groups(migrated), "reposted")
    _forget_groups(migrated)
    refresh_duplicates(migrated, options=OPTIONS)
    assert _groups(migrated) == grouped[1]


def test_other_products_of_the_same_type_and_colour_stay_apart(cases, grouped):
    run, groups = grouped
    for image_id, (product, kind) in cases.pictures.items():
        if kind == "other":
            assert image_id not in groups, f"{product} (another product) was grouped"
    # one group per product, named after its smallest image id: the original, imported first
    by_group: dict[int, set[int]] = {}
    for image_id, group in groups.items():
        by_group.setdefault(group, set()).add(cases.pictures[image_id][0])
    assert sorted(len(products) for products in by_group.values()) == [1] * len(by_group)
    assert len(by_group) == len(cases.originals())
    assert set(by_group) == {min(i for i in groups if cases.pictures[i][0] == product)
                             for product in cases.originals()}  # fmt: skip
    assert run.checked == run.embedded == len(cases.pictures)


def test_the_marketplace_and_the_command_line_show_the_groups(migrated, cases, grouped, services):
    _, groups = grouped
    with migrated.connect() as connection:
        shown = dict(connection.execute(text(
            "SELECT image_id, duplicate_group FROM marketplace.products "
            "WHERE duplicate_group IS NOT NULL"
        )).all())  # fmt: skip
        listings = connection.execute(
            text("SELECT listings, accounts FROM marketplace.duplicate_listings")
        ).all()
    assert shown == groups
    sizes = sorted(Counter(groups.values()).values())
    assert sorted(listings) == [(size, size) for size in sizes]  # each from its own shop

    listed = catalogue(services.env(**ENV), "duplicates")
    assert listed.returncode == 0, listed.stderr
    assert f"{len(cases.originals())} groups of duplicate listings:" in listed.stdout
    assert f"{sizes[-1]} listings by {sizes[-1]} accounts" in listed.stdout
    assert "@shop.mirrored" in listed.stdout and "@other.brand" not in listed.stdout

    limited = catalogue(
        services.env(**ENV), "duplicates", "--account", "shop.mirrored", "--limit", "2"
    )
    assert limited.returncode == 0, limited.stderr
    assert "the 2 largest:" in limited.stdout
    assert limited.stdout.count("group ") == 2

    alone = catalogue(services.env(**ENV), "duplicates", "--account", "@other.brand")
    assert (alone.returncode, alone.stdout.strip()) == (
        0,
        "no duplicate listings with @other.brand",
    )

    unknown = catalogue(services.env(**ENV), "duplicates", "--account", "nobody.here")
    assert unknown.returncode == 1
    assert "no listing of @nobody.here in the marketplace" in unknown.stderr
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1


def test_a_rerun_adds_nothing(migrated, cases, grouped, services):
    _, groups = grouped
    again = refresh_duplicates(migrated, options=OPTIONS)
    assert (again.checked, again.pairs, again.grouped, again.started_over) == (0, 0, 0, False)
    assert _groups(migrated) == groups
    result = catalogue(services.env(**ENV), "duplicates", "--refresh")
    assert result.returncode == 0, result.stderr
    assert "nothing new to check" in result.stdout
    assert _groups(migrated) == groups

    regrouped = catalogue(services.env(**ENV), "duplicates", "--regroup")  # as after new thresholds
    assert regrouped.returncode == 0, regrouped.stderr
    assert f"checked {len(cases.pictures)} new pictures" in regrouped.stdout
    assert "started over" in regrouped.stdout
    assert _groups(migrated) == groups


def test_pictures_checked_a_few_at_a_time_join_and_merge_the_same_groups(migrated, cases, grouped):
    _, groups = grouped
    _forget_groups(migrated)
    # ten pictures (in id order) first, a few per batch, then the rest: groups started by some
    # copies are joined by later pictures and merged, and end as one refresh makes them
    first = refresh_duplicates(migrated, options=replace(OPTIONS, batch_size=3, limit=10))
    assert first.checked == 10
    second = refresh_duplicates(migrated, options=replace(OPTIONS, batch_size=4))
    assert second.checked == len(cases.pictures) - 10
    assert _groups(migrated) == groups


def test_two_refreshes_at_once_do_not_fork_groups(migrated, cases, grouped):
    _, groups = grouped
    _forget_groups(migrated)
    runs: list[DuplicateRun] = []
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            runs.append(refresh_duplicates(migrated, options=replace(OPTIONS, batch_size=2)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    assert sum(r.checked for r in runs) == len(cases.pictures)  # each picture checked once
    assert _groups(migrated) == groups


def test_a_new_champion_regroups_and_a_rollback_restores(
    migrated, cases, grouped, stores, tmp_path
):
    _, groups = grouped
    newer = register_model(migrated, stores[1], pretrained_category(CLASSES), tmp_path / "m2",
                           champion=True)  # fmt: skip
    unchanged = refresh_duplicates(
        migrated, options=OPTIONS
    )  # nothing embedded by the new champion yet
    assert (unchanged.version, unchanged.nothing_embedded) == (newer, True)
    assert _groups(migrated) == groups

    _predict(migrated, stores, tmp_path / "artefacts")
    regrouped = refresh_duplicates(migrated, options=OPTIONS)
    assert (regrouped.version, regrouped.started_over) == (newer, True)
    assert regrouped.checked == len(cases.pictures)
    assert _groups(migrated) == groups  # the same network: the same groups, by the new version
    with migrated.connect() as connection:
        made_by = connection.execute(text(
            "SELECT DISTINCT v.version FROM catalogue.image_duplicates d "
            "JOIN catalogue.model_versions v ON v.id = d.model_version_id"
        )).scalars().all()  # fmt: skip
    assert made_by == [newer]

    retired, restored = registry.rollback(engine=migrated, attribute="category", who="lead")
    assert (retired, restored) == (newer, cases.version)
    back = refresh_duplicates(
        migrated, options=OPTIONS
    )  # from the kept embeddings: no network runs
    assert (back.version, back.started_over, back.checked) == (
        cases.version,
        True,
        len(cases.pictures),
    )
    assert _groups(migrated) == groups


def test_the_predict_dag_groups_the_new_pictures(migrated, cases, grouped, stores, airflow):
    from tests.airflow_harness import run_dags

    _, groups = grouped
    _forget_groups(migrated)
    copies = [i for i, (_, kind) in cases.pictures.items() if kind != "original"]
    with migrated.begin() as connection:  # the copies arrive after the originals were grouped
        for table in ("image_embeddings", "model_predictions"):
            connection.execute(
                text(f"DELETE FROM catalogue.{table} WHERE image_id = ANY(:ids)"), {"ids": copies}
            )
    assert (
        refresh_duplicates(migrated, options=OPTIONS).pairs == 0
    )  # the originals alone: nothing alike

    result = run_dags({**airflow, **ENV}, "predict_catalogue", {})
    assert result["state"] == "success", result["output"][-5000:]
    assert result["tasks"]["score[0]"] == "success"
    assert result["tasks"]["group_duplicates"] == "success"
    assert _groups(migrated) == groups

    again = run_dags(
        {**airflow, **ENV}, "predict_catalogue", {}
    )  # nothing new: grouping runs, adds nothing
    assert again["state"] == "success"
    assert again["tasks"]["score"] == "skipped"
    assert again["tasks"]["group_duplicates"] == "success"
    assert _groups(migrated) == groups


def test_without_a_category_champion_the_refresh_says_what_to_do(migrated, cases, services):
    with migrated.begin() as connection:  # the champion retired, no other to take over
        connection.execute(text("UPDATE catalogue.model_versions SET status = 'retired' "
                                "WHERE attribute = 'category'"))  # fmt: skip
    with pytest.raises(NoChampion, match="no champion model for category yet"):
        refresh_duplicates(migrated, options=OPTIONS)
    result = catalogue(services.env(**ENV), "duplicates", "--refresh")
    assert result.returncode == 1
    assert "no champion model for category yet" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

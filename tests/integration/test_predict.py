"""Prediction through the real Postgres and S3 server: new images scored once, promotion rescoring,
rollback without rescoring, moderator precedence both ways, crashes and a lost database, bad
pictures, and takedowns leaving the marketplace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from pipeline.artefacts import decode
from pipeline.collect.archive import import_archive
from pipeline.collect.purge import purge
from pipeline.labels.history import Who
from pipeline.labels.jobs import Selection, run_job
from pipeline.labels.label_csv import import_labels
from pipeline.predict.batch import PredictOptions, predict_catalogue
from pipeline.predict.errors import NoChampion, PredictInterrupted
from pipeline.samples import generate_sample_accounts
from pipeline.storage import ObjectStore
from pipeline.train import registry
from tests.catalogue_rows import reset_catalogue
from tests.cli import catalogue
from tests.model_artefacts import colour_by_channel, constant, register_model


@pytest.fixture(scope="module")
def stores(settings):
    return ObjectStore.for_images(settings), ObjectStore.for_models(settings)


def _reset(engine) -> None:
    reset_catalogue(engine)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE catalogue.model_versions, catalogue.dataset_snapshots "
                                "CASCADE"))  # fmt: skip


@pytest.fixture
def shop(migrated, settings, dataset, stores, tmp_path_factory):
    """40 sample photos imported as an instaloader archive; no models, no labels."""
    _reset(migrated)
    archive = tmp_path_factory.mktemp("predict-archive")
    generate_sample_accounts(dataset, archive, size=40, seed=3)
    import_archive(archive, engine=migrated, store=stores[0], workers=4)
    return archive


def _run(engine, stores, tmp_path, **options):
    return predict_catalogue(
        engine=engine, images=stores[0], models=stores[1], cache_dir=tmp_path / "artefacts",
        options=PredictOptions(batch_size=16, workers=4, **options),
    )  # fmt: skip


def _products(engine) -> dict[int, tuple]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT image_id, colour, colour_source, category, category_source, "
                "model_version, needs_review FROM marketplace.products"
            )
        ).all()
    return {r.image_id: tuple(r[1:]) for r in rows}


def _images(engine) -> dict[int, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT id, object_key FROM raw.images")).all())


def _strongest_channel(store: ObjectStore, key: str) -> str:
    pixels = decode(store.get(key), (80, 60)).reshape(-1, 3).mean(axis=0)
    return ("Red", "Green", "Blue")[int(np.argmax(pixels))]


def test_new_images_are_scored_once_and_reach_the_marketplace(
    migrated, shop, stores, dataset, tmp_path
):
    colour = register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1",
                            champion=True)  # fmt: skip
    category = register_model(
        migrated, stores[1], constant("category", {"Tshirts": 0.9, "Shirts": 0.1}),
        tmp_path / "g1", champion=True,
    )  # fmt: skip
    images = _images(migrated)

    run = _run(migrated, stores, tmp_path)
    assert run.planned == run.images == len(images)
    assert run.predictions == 2 * len(images)  # both attributes in one pass
    products = _products(migrated)
    assert set(products) == set(images)
    for image_id, key in list(images.items())[:10]:  # the model really looked at the pixels
        assert products[image_id][:2] == (_strongest_channel(stores[0], key), "model")
    assert {p[2:4] for p in products.values()} == {("Tshirts", "model")}
    assert {p[4] for p in products.values()} == {colour}  # the colour champion's version

    again = _run(migrated, stores, tmp_path)
    assert (again.planned, again.images) == (0, 0)  # nothing scored twice
    assert _products(migrated) == products

    # a collection brings new images: only they are scored
    more = tmp_path / "more"
    generate_sample_accounts(dataset, more, size=12, seed=4)
    import_archive(more, engine=migrated, store=stores[0], workers=4)
    new = set(_images(migrated)) - set(images)
    assert new
    third = _run(migrated, stores, tmp_path)
    assert third.images == len(new)
    with migrated.connect() as connection:
        counts = connection.execute(
            text(
                "SELECT v.version, count(*), count(DISTINCT mp.image_id) FROM "
                "catalogue.model_predictions mp JOIN catalogue.model_versions v "
                "ON v.id = mp.model_version_id GROUP BY v.version ORDER BY 1"
            )
        ).all()
    total = len(images) + len(new)
    assert sorted(counts) == sorted([(category, total, total), (colour, total, total)])


def test_promotion_rescores_and_rollback_restores_without_rescoring(
    migrated, shop, stores, tmp_path
):
    v1 = register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    _run(migrated, stores, tmp_path, attributes=("colour",))
    first = _products(migrated)

    # a new champion calls every channel by another name
    v2 = register_model(migrated, stores[1], colour_by_channel(("Green", "Blue", "Red")),
                        tmp_path / "c2", champion=True)  # fmt: skip
    assert _products(migrated) == first  # shown values stay until the new champion scores
    rescored = _run(migrated, stores, tmp_path)
    assert rescored.images == len(first)
    second = _products(migrated)
    renamed = {"Red": "Green", "Green": "Blue", "Blue": "Red"}
    assert {i: (renamed[p[0]], v2) for i, p in first.items()} == {
        i: (p[0], p[4]) for i, p in second.items()
    }

    retired, restored = registry.rollback(engine=migrated, attribute="colour", who="lead")
    assert (retired, restored) == (v2, v1)
    assert _products(migrated) == first  # at once, from the kept predictions
    assert _run(migrated, stores, tmp_path).planned == 0  # nothing to rescore


def test_moderators_win_both_ways_and_clearing_gives_the_value_back(
    migrated, shop, stores, tmp_path
):
    register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    with migrated.connect() as connection:
        rows = connection.execute(
            text(
                # one picture of each of the first two posts: the clear below selects a whole
                # post, so two slides of one carousel would clear the other's label too
                "SELECT DISTINCT ON (p.id) i.id, p.shortcode, i.position FROM raw.images i "
                "JOIN raw.posts p ON p.id = i.post_id ORDER BY p.id, i.id LIMIT 2"
            )
        ).all()
    (before_id, before_code, before_pos), (after_id, after_code, after_pos) = rows
    moderator = Who(name="mia")
    labels = tmp_path / "before.csv"
    labels.write_text(f"shortcode,position,colour\n{before_code},{before_pos},Maroon\n")
    import_labels(labels, engine=migrated, who=moderator)

    _run(migrated, stores, tmp_path)
    products = _products(migrated)
    assert products[before_id][:2] == ("Maroon", "moderator")  # labelled before: not overwritten
    assert products[after_id][1] == "model"
    model_value = products[after_id][0]

    labels = tmp_path / "after.csv"
    labels.write_text(f"shortcode,position,colour\n{after_code},{after_pos},Olive\n")
    import_labels(labels, engine=migrated, who=moderator)
    assert _products(migrated)[after_id][:2] == ("Olive", "moderator")  # replaced at once

    _run(migrated, stores, tmp_path, everything=True)  # a rescore does not touch it
    assert _products(migrated)[after_id][:2] == ("Olive", "moderator")

    cleared = run_job(engine=migrated, kind="clear", attribute="colour", who=moderator,
                      selection=Selection(shortcodes=[after_code]))  # fmt: skip
    assert cleared.images == 1
    assert _products(migrated)[after_id][:2] == (model_value, "model")


def test_an_unsure_model_flags_needs_review(migrated, shop, stores, tmp_path):
    register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    register_model(
        migrated, stores[1], constant("category", {"Tshirts": 0.4, "Shirts": 0.35, "Tops": 0.25}),
        tmp_path / "g1", champion=True,
    )  # fmt: skip
    run = _run(migrated, stores, tmp_path)
    assert run.needs_review >= run.images  # every category value is unsure
    assert all(p[5] for p in _products(migrated).values())
    with migrated.connect() as connection:
        top = connection.execute(
            text("SELECT top, confidence, margin FROM catalogue.predictions "
                 "WHERE attribute = 'category' LIMIT 1")
        ).one()  # fmt: skip
    assert [t["value"] for t in top.top] == ["Tshirts", "Shirts", "Tops"]
    assert top.confidence == pytest.approx(0.4, abs=1e-3)
    assert top.margin == pytest.approx(0.05, abs=1e-3)


def _category_reviewed(engine) -> set[bool]:
    with engine.connect() as connection:
        return set(connection.execute(text(
            "SELECT p.needs_review FROM catalogue.predictions p WHERE p.attribute = 'category'"
        )).scalars())  # fmt: skip


def _calibrated(threshold):
    return {"target_precision": 0.97, "threshold": threshold,
            "validation": {"images": 500, "coverage": 0.5, "precision": 0.97}}  # fmt: skip


@pytest.mark.parametrize(
    ("automation", "reviewed"),
    [
        (None, True),  # an older model: the fixed thresholds (0.45 < 0.5)
        (_calibrated(0.44), False),  # its own threshold: 0.45 is sure enough for this model
        (_calibrated(0.6), True),
        (_calibrated(None), True),  # no confidence reached the precision: everything reviewed
    ],
)
def test_a_calibrated_model_is_reviewed_below_its_own_threshold(
    migrated, shop, stores, tmp_path, automation, reviewed
):
    unsure = constant("category", {"Tshirts": 0.45, "Shirts": 0.30, "Tops": 0.25})
    register_model(migrated, stores[1], unsure, tmp_path / "g1", champion=True,
                   automation=automation)  # fmt: skip
    run = _run(migrated, stores, tmp_path)
    assert run.predictions == run.images > 0
    assert _category_reviewed(migrated) == {reviewed}
    assert run.needs_review == (run.images if reviewed else 0)


def test_undecodable_and_missing_pictures_are_reported_and_skipped(
    migrated, shop, stores, tmp_path
):
    register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    images = _images(migrated)
    rotten, gone = sorted(images)[:2]
    rot = b"\xff\xd8\xff\xe0 not a jpeg any more"  # bit rot after the collection's check
    stores[0].put(images[rotten], rot, content_type="image/jpeg")
    stores[0].delete(images[gone])

    run = _run(migrated, stores, tmp_path)
    assert (run.undecodable, run.missing, run.images) == (1, 1, len(images) - 2)
    with migrated.connect() as connection:
        reasons = dict(connection.execute(
            text("SELECT image_id, kind || ': ' || reason FROM catalogue.unscorable_images")
        ).all())  # fmt: skip
    assert reasons[rotten].startswith("undecodable: ")
    assert reasons[gone] == f"missing: object {images[gone]} is not in the images bucket"
    assert rotten not in _products(migrated) and gone not in _products(migrated)

    again = _run(migrated, stores, tmp_path)  # the missing object is tried again, not the rotten
    assert (again.planned, again.missing, again.undecodable) == (1, 1, 0)


def test_no_champion_is_a_clear_message(migrated, shop, stores, services, tmp_path):
    with pytest.raises(NoChampion, match="no champion model for any attribute yet"):
        _run(migrated, stores, tmp_path)
    result = catalogue(services.env(), "predict")
    assert result.returncode == 1
    assert "no champion model" in result.stderr and "Traceback" not in result.stderr


def test_a_killed_run_is_finished_by_the_rerun_without_duplicates(
    migrated, shop, stores, services, tmp_path
):
    version = register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1",
                             champion=True)  # fmt: skip
    images = _images(migrated)
    env = services.env(CATALOGUE_PREDICT_WORKERS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "predict", "--batch-size", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    saved = 0
    while time.monotonic() < deadline and process.poll() is None:
        with migrated.connect() as connection:
            saved = connection.execute(
                text("SELECT count(*) FROM catalogue.model_predictions")
            ).scalar_one()
        if saved:
            os.kill(process.pid, signal.SIGKILL)  # mid-run, without a chance to clean up
            break
        time.sleep(0.05)
    process.wait(30)
    assert 0 < saved < len(images), "the run was not caught in the middle"

    rerun = catalogue(env, "predict")
    assert rerun.returncode == 0, rerun.stderr
    with migrated.connect() as connection:
        kept, distinct = connection.execute(
            text("SELECT count(*), count(DISTINCT image_id) FROM catalogue.model_predictions")
        ).one()
    assert kept == distinct == len(images)
    assert set(_products(migrated)) == set(images)
    assert {p[4] for p in _products(migrated).values()} == {version}


def test_a_lost_database_fails_the_run_clearly_and_the_retry_completes(
    migrated, shop, stores, services, tmp_path
):
    register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    images = _images(migrated)
    name = services.database_url.database
    admin = create_engine(services.server_url, isolation_level="AUTOCOMMIT")

    def database_goes_down(run) -> None:  # as if Postgres restarted after the first batch
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )

    try:
        with pytest.raises(PredictInterrupted, match=r"database connection was lost after 16 "):
            predict_catalogue(
                engine=migrated, images=stores[0], models=stores[1],
                cache_dir=tmp_path / "artefacts",
                options=PredictOptions(batch_size=16, workers=2), progress=database_goes_down,
            )  # fmt: skip
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()

    retry = _run(migrated, stores, tmp_path)
    assert retry.images == len(images) - 16
    with migrated.connect() as connection:
        assert connection.execute(
            text("SELECT count(*) FROM catalogue.model_predictions")
        ).scalar_one() == len(images)


def test_unavailable_and_purged_posts_leave_the_marketplace(migrated, shop, stores, tmp_path):
    register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    _run(migrated, stores, tmp_path)
    with migrated.connect() as connection:
        posts = connection.execute(
            text(
                "SELECT p.id, p.shortcode, array_agg(i.id) AS images FROM raw.posts p "
                "JOIN raw.images i ON i.post_id = p.id GROUP BY p.id ORDER BY p.id LIMIT 2"
            )
        ).all()
    deleted, taken_down = posts
    with migrated.begin() as connection:  # the freshness pass no longer sees it on Instagram
        connection.execute(text("UPDATE raw.posts SET unavailable_since = now() WHERE id = :p"),
                           {"p": deleted.id})  # fmt: skip
    products = _products(migrated)
    assert not set(deleted.images) & set(products)
    with migrated.begin() as connection:  # ... and it came back
        connection.execute(text("UPDATE raw.posts SET unavailable_since = NULL WHERE id = :p"),
                           {"p": deleted.id})  # fmt: skip
    assert set(deleted.images) <= set(_products(migrated))

    purge(engine=migrated, store=stores[0], target=taken_down.shortcode, reason="takedown #1")
    assert not set(taken_down.images) & set(_products(migrated))


def test_predict_dag_scores_in_shards_under_airflow(migrated, shop, stores, airflow, tmp_path):
    from tests.airflow_harness import run_dags

    register_model(migrated, stores[1], colour_by_channel(), tmp_path / "c1", champion=True)
    images = _images(migrated)
    env = {**airflow, "CATALOGUE_PREDICT_MIN_SHARD_IMAGES": "10"}  # 40 images: 4 shards

    result = run_dags(env, "predict_catalogue", {})
    assert result["state"] == "success", result["output"][-5000:]
    tasks = result["tasks"]
    assert {k: v for k, v in tasks.items() if k.startswith("score")} == {
        f"score[{i}]": "success" for i in range(4)
    }
    assert tasks["report"] == "success"
    assert set(_products(migrated)) == set(images)

    again = run_dags(env, "predict_catalogue", {})  # nothing left: no shard runs
    assert again["state"] == "success"
    assert again["tasks"]["plan"] == "success" and again["tasks"]["score"] == "skipped"


def test_predict_dag_without_a_champion_skips_saying_why(migrated, shop, airflow):
    from tests.airflow_harness import run_dags

    result = run_dags(airflow, "predict_catalogue", {})
    assert result["state"] == "success"
    assert result["tasks"]["plan"] == "skipped"
    assert "no champion model for any attribute yet" in result["output"]

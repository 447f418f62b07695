"""Retraining on a small slice of the shared photos, through the real Postgres and S3 server:
snapshots, training on the TensorFlow backend, the artefact round trip, the registry."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy import text

from pipeline.artefacts import load_artefact, predict_probabilities
from pipeline.collect.archive import import_archive
from pipeline.labels.history import Who
from pipeline.labels.label_csv import import_labels
from pipeline.samples import generate_sample_accounts
from pipeline.storage import ObjectStore
from pipeline.train import registry
from pipeline.train.evaluate import confidence_threshold
from pipeline.train.fit import TrainOptions, train
from pipeline.train.inputs import PictureCache, decode_all
from pipeline.train.retrain import write_cards
from pipeline.train.snapshot import SnapshotError, SnapshotOptions, snapshot_dataset
from tests.catalogue_rows import reset_catalogue
from tests.cli import catalogue


@pytest.fixture(scope="module")
def labelled(migrated, settings, dataset, tmp_path_factory):
    """400 sample photos imported as an archive, with the data set's labels."""
    reset_catalogue(migrated)
    archive = tmp_path_factory.mktemp("train-archive")
    generate_sample_accounts(dataset, archive, size=400, seed=5)
    import_archive(archive, engine=migrated, store=ObjectStore.for_images(settings), workers=4)
    import_labels(archive / "labels.csv", engine=migrated, who=Who(name="dataset"))
    return migrated


@pytest.fixture(scope="module")
def models_store(settings):
    return ObjectStore.for_models(settings)


@pytest.fixture(scope="module")
def cache(settings, tmp_path_factory):
    return PictureCache(ObjectStore.for_images(settings), tmp_path_factory.mktemp("pictures"))


OPTIONS = SnapshotOptions(attributes=("colour", "category"), min_examples=8)


def test_snapshot_is_grouped_by_post_stable_and_reports_what_it_leaves_out(labelled, models_store):
    first = snapshot_dataset(engine=labelled, store=models_store, options=OPTIONS)
    again = snapshot_dataset(engine=labelled, store=models_store, options=OPTIONS)
    assert (again.id, again.checksum, again.created) == (first.id, first.checksum, False)
    assert models_store.exists(first.manifest_key)

    with labelled.connect() as connection:
        posts = dict(connection.execute(text("SELECT i.id, i.post_id FROM raw.images i")).all())
    split_of_post: dict[int, set[str]] = {}
    for item in first.manifest["images"]:
        split_of_post.setdefault(posts[item["image_id"]], set()).add(item["split"])
    assert all(len(splits) == 1 for splits in split_of_post.values())  # carousels stay together
    assert {"train", "validation", "test"} <= {s for v in split_of_post.values() for s in v}

    colour = first.attributes["colour"]
    assert colour["level"] == "family" and "Navy Blue" not in colour["classes"]
    assert all(n < 8 for n in colour["left_out"].values())  # reported, not silently dropped
    counts = first.manifest["counts"]["colour"]["train"]
    assert all(counts[c] >= 8 for c in colour["classes"])

    # a stricter minimum is another snapshot; every kept picture keeps its split
    stricter = snapshot_dataset(
        engine=labelled, store=models_store,
        options=SnapshotOptions(attributes=("colour",), min_examples=20),
    )  # fmt: skip
    assert stricter.checksum != first.checksum
    before = {i["image_id"]: i["split"] for i in first.manifest["images"]}
    assert all(before[i["image_id"]] == i["split"] for i in stricter.manifest["images"])


def test_a_snapshot_without_enough_labels_says_so(labelled, models_store):
    with pytest.raises(SnapshotError, match=r"class.*label more images or lower the minimum"):
        snapshot_dataset(engine=labelled, store=models_store,
                         options=SnapshotOptions(attributes=("colour",), min_examples=10_000))  # fmt: skip


def test_train_save_reload_register_promote_rollback(labelled, models_store, cache, tmp_path):
    snapshot = snapshot_dataset(engine=labelled, store=models_store, options=OPTIONS)
    options = TrainOptions(architecture="compact_80x60", epochs=1, batch_size=32, steps_per_epoch=3)
    trained = train(manifest=snapshot.manifest, cache=cache, attributes=["colour", "category"],
                    options=options, out=tmp_path / "run1")  # fmt: skip
    assert trained.backend == "tensorflow"
    for attribute in ("colour", "category"):
        measured = trained.metrics[attribute]
        assert measured["test_images"] == len(
            [i for i in snapshot.items("test") if attribute in i["labels"]]
        )
        assert 0 <= measured["accuracy"] <= 1 and measured["random_accuracy"] > 0

    # the saved artefact gives the same answers as the model that was trained
    model, metadata = load_artefact(tmp_path / "run1")
    test = snapshot.items("test")[:16]
    decoded = decode_all(test, cache=cache, image_size=tuple(metadata["image_size"]))
    pictures = np.stack([decoded[i["key"]] for i in test])
    reloaded = predict_probabilities(model, pictures, ["colour", "category"])
    original, _ = load_artefact(tmp_path / "run1")
    again = predict_probabilities(original, pictures, ["colour", "category"])
    for attribute in ("colour", "category"):
        np.testing.assert_allclose(reloaded[attribute], again[attribute], rtol=1e-5, atol=1e-6)

    # each head learnt its review threshold from the validation split, for the target precision
    validation = snapshot.items("validation")
    decoded = decode_all(validation, cache=cache, image_size=tuple(metadata["image_size"]))
    answers = predict_probabilities(model, np.stack([decoded[i["key"]] for i in validation]),
                                    ["colour", "category"])  # fmt: skip
    for attribute in ("colour", "category"):
        classes = metadata["classes"][attribute]
        rows = [k for k, i in enumerate(validation) if i["labels"].get(attribute) in classes]
        truth = np.array([classes.index(validation[k]["labels"][attribute]) for k in rows])
        p = answers[attribute][rows]
        automation = trained.metrics[attribute]["automation"]
        assert automation["target_precision"] == 0.97
        assert automation["validation"]["images"] == len(rows) > 0
        expected = confidence_threshold(p.max(axis=1), p.argmax(axis=1) == truth,
                                        target_precision=0.97)  # fmt: skip
        assert automation["threshold"] == (
            None if expected is None else pytest.approx(expected, abs=1e-5)
        )

    first = registry.register(engine=labelled, store=models_store, trained=trained,
                              snapshot_id=snapshot.id, created_by="tester")  # fmt: skip
    assert [v.split("-")[0] for v in first] == ["colour", "category"]
    colour_v1 = first[0]
    decision = registry.promote_if_better(
        engine=labelled, store=models_store, version=colour_v1, cache_dir=tmp_path / "artefacts",
        picture_cache=cache, decided_by="tester",
    )  # fmt: skip
    assert decision.promoted and decision.reason == "first model of this attribute"
    assert registry.champion(labelled, "colour").version == colour_v1

    trained2 = train(manifest=snapshot.manifest, cache=cache, attributes=["colour"],
                     options=options, out=tmp_path / "run2")  # fmt: skip
    (colour_v2,) = registry.register(engine=labelled, store=models_store, trained=trained2,
                                     snapshot_id=snapshot.id)  # fmt: skip
    decision = registry.promote_if_better(
        engine=labelled, store=models_store, version=colour_v2, cache_dir=tmp_path / "artefacts",
        picture_cache=cache,
    )  # fmt: skip
    row = registry.version_row(labelled, colour_v2)
    assert row.status == ("champion" if decision.promoted else "candidate")
    assert row.status_reason == decision.reason and row.gate["champion"] == colour_v1

    if not decision.promoted:
        registry.promote(engine=labelled, version=colour_v2, who="lead")
    assert registry.champion(labelled, "colour").version == colour_v2
    retired, restored = registry.rollback(engine=labelled, attribute="colour", who="lead")
    assert (retired, restored) == (colour_v2, colour_v1)
    assert registry.champion(labelled, "colour").version == colour_v1
    assert registry.version_row(labelled, colour_v2).status == "retired"
    with pytest.raises(registry.RegistryError, match="no earlier colour champion"):
        registry.rollback(engine=labelled, attribute="colour")


def test_retrain_dag_snapshots_trains_one_network_and_announces_a_champion(labelled, airflow):
    from tests.airflow_harness import run_dags

    with labelled.connect() as connection:
        before = connection.execute(text("SELECT count(*) FROM catalogue.model_versions")).scalar()
    env = {**airflow, "CATALOGUE_TRAIN_MIN_EXAMPLES": "8"}
    conf = {"network": "compact_80x60", "epochs": 1, "steps_per_epoch": 2}
    result = run_dags(env, "retrain_models", conf)

    assert result["state"] == "success", result["output"][-5000:]
    assert result["tasks"]["snapshot"] == "success" and result["tasks"]["promote"] == "success"
    with labelled.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT attribute, status, created_by, params->>'epochs' AS epochs, run "
                "FROM catalogue.model_versions ORDER BY id OFFSET :n"
            ),
            {"n": before},
        ).all()
    assert sorted(r.attribute for r in rows) == ["category", "colour"]
    assert len({r.run for r in rows}) == 1  # one network with a head each: one artefact
    assert {(r.created_by, r.epochs) for r in rows} == {("airflow", "1")}
    assert registry.champion(labelled, "category") is not None
    champions = [e for e in result["asset_events"] if e["uri"].startswith("catalogue://models")]
    promoted = [r for r in rows if r.status == "champion"]
    assert len(champions) == (1 if promoted else 0)


_PREDICT = """
import sys, numpy as np
from pipeline.artefacts import load_artefact, predict_probabilities
from pipeline.train.export import load_export
manifest, pictures, header = load_export(sys.argv[1])
model, metadata = load_artefact(sys.argv[2])
keys = [i["key"] for i in manifest["images"] if i["split"] == "test"][:64]
batch = np.stack([pictures.array(k, tuple(metadata["image_size"])) for k in keys])
out = predict_probabilities(model, batch, metadata["attributes"])
np.save(sys.argv[3], np.stack([out[a].argmax(axis=1) for a in metadata["attributes"]]))
print("BACKEND", metadata["backend"])
"""


def test_an_export_trains_on_jax_alone_and_answers_the_same_on_tensorflow(
    labelled, services, tmp_path
):
    import subprocess
    import sys

    pytest.importorskip("jax", reason="the JAX backend (dev extra) is not installed")
    env = services.env(CATALOGUE_TRAIN_MIN_EXAMPLES="8")
    shard = tmp_path / "shard.npz"
    made = catalogue(env, "snapshot", "export", "--out", str(shard), "--network", "compact_80x60")
    assert made.returncode == 0, made.stderr
    assert shard.stat().st_size < 60 * 2**20 and "pictures at 60x80" in made.stdout

    # the GPU machine: no database, no object store (both point at closed ports)
    offline = {**env, "KERAS_BACKEND": "jax",
               "CATALOGUE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
               "CATALOGUE_S3_ENDPOINT": "http://127.0.0.1:9"}  # fmt: skip
    artefact = tmp_path / "artefact"
    trained = catalogue(offline, "train", "--from-export", str(shard), "--network",
                        "compact_80x60", "--epochs", "1", "--steps", "3", "--out", str(artefact),
                        timeout=600)  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "trained on jax" in trained.stdout

    answers = {}
    for backend in ("jax", "tensorflow"):
        out = tmp_path / f"{backend}.npy"
        run = subprocess.run(
            [sys.executable, "-c", _PREDICT, str(shard), str(artefact), str(out)],
            env={**env, "KERAS_BACKEND": backend}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        answers[backend] = np.load(out)
    np.testing.assert_array_equal(answers["jax"], answers["tensorflow"])  # same top-1

    registered = catalogue(env, "models", "register", str(artefact))
    assert registered.returncode == 0, registered.stderr
    with labelled.connect() as connection:
        row = connection.execute(
            text("SELECT backend, status FROM catalogue.model_versions ORDER BY id DESC LIMIT 1")
        ).one()
    assert tuple(row) == ("jax", "candidate")


def _shared_weights(name: str) -> None:
    from pipeline.train.models import ARCHITECTURES
    from pipeline.train.pretrained import SHARED_WEIGHTS, WEIGHTS

    filename = WEIGHTS[ARCHITECTURES[name].pretrained].filename
    if not (SHARED_WEIGHTS / filename).is_file():
        pytest.skip(f"{filename} is not in ../shared/weights")


def test_a_pretrained_backbone_trains_head_first_then_whole_and_its_card_names_it(
    labelled, models_store, cache, tmp_path
):
    import json

    from pipeline.train.pretrained import WEIGHTS

    _shared_weights("mobilenet_v2_035")
    snapshot = snapshot_dataset(engine=labelled, store=models_store, options=OPTIONS)
    options = TrainOptions(architecture="mobilenet_v2_035", epochs=3, batch_size=16,
                           steps_per_epoch=2)  # fmt: skip
    trained = train(manifest=snapshot.manifest, cache=cache, attributes=["colour", "category"],
                    options=options, out=tmp_path / "run")  # fmt: skip

    metadata = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert metadata["pretrained"]["sha256"] == WEIGHTS["mobilenet_v2_0.35"].sha256
    assert metadata["image_size"] == [128, 96]
    assert [(p["epochs"], p["trains"]) for p in metadata["recipe"]] == [
        (2, "the head (backbone frozen)"),
        (1, "the backbone from block_6_expand on and the head, batch norm frozen"),
    ]  # fmt: skip
    assert len(trained.history["loss"]) == 3
    # the artefact carries the weights: predict needs no pretrained file
    model, _ = load_artefact(tmp_path / "run")
    test = snapshot.items("test")[:4]
    decoded = decode_all(test, cache=cache, image_size=(128, 96))
    answers = predict_probabilities(model, np.stack([decoded[i["key"]] for i in test]),
                                    ["colour", "category"])  # fmt: skip
    assert answers["colour"].shape[0] == 4

    write_cards(tmp_path / "run", snapshot.manifest)
    card = (tmp_path / "run" / "card_category.md").read_text()
    assert (
        "- input: 96x128 (width x height)" in card and WEIGHTS["mobilenet_v2_0.35"].sha256 in card
    )
    assert "## Automation" in card and "validation pictures" in card


def test_a_pretrained_network_without_its_weights_says_which_file_and_where(
    labelled, services, tmp_path
):
    env = services.env(CATALOGUE_TRAIN_MIN_EXAMPLES="8", CATALOGUE_WEIGHTS_DIR=str(tmp_path))
    result = catalogue(env, "train", "--network", "mobilenet_v2_050", "--epochs", "1",
                       "--steps", "1", timeout=600)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("catalogue:")]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5" in line
    assert str(tmp_path) in line and "Traceback" not in result.stderr


def test_train_shows_its_progress_and_ctrl_c_stops_it_with_nothing_registered(labelled, services):
    """What a user at a terminal does: watch the epochs go by with the time left, press Ctrl-C."""
    import signal
    import subprocess
    import sys

    with labelled.connect() as connection:
        versions_before = connection.execute(
            text("SELECT count(*) FROM catalogue.model_versions")
        ).scalar_one()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "train", "--network", "compact_80x60",
         "--epochs", "500", "--min-examples", "8", "--batch-size", "16"],
        env=services.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first_epoch = process.stdout.readline()  # not a terminal: one line per epoch
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)  # stopped, not left to run out its 500 epochs
    finally:
        process.kill()
    assert re.match(
        r"phase 1/1 network  epoch 1/500 \[#+\] +0%  \d+:\d\d elapsed, about \d+:\d\d(:\d\d)? "
        r"left  .*category_accuracy", first_epoch,
    ), first_epoch + err[-2000:]  # fmt: skip
    assert process.returncode == 130, err[-2000:]
    assert re.search(r"training interrupted after \d+s: nothing was registered", err), err
    assert "Traceback" not in err
    with labelled.connect() as connection:
        assert (
            connection.execute(text("SELECT count(*) FROM catalogue.model_versions")).scalar_one()
            == versions_before
        )

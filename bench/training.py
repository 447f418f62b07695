"""Accuracy and training throughput on the shared photos, loaded through the product.

    .venv/bin/python bench/training.py                 # every protocol and network, resumable
    .venv/bin/python bench/training.py --only category_8 --networks catalogue_net
    KERAS_BACKEND=jax .venv/bin/python bench/training.py --from-export shard.npz ...   # GPU

The data path is the product's: the sample accounts (all 15,000 photos) imported as an instaloader
archive, the data set's labels imported as a label CSV, a dataset snapshot per protocol, then
`pipeline.train.fit.train` on the snapshot's train split and its measures on the test split.

Protocols (the seed studies'):
- `category_8`: the 8 article types of the compact-CNN study (seed result 0.913);
- `category_all50`: every article type with 50+ training examples;
- `colour_exact`: the exact `baseColour`; `colour_family`: the taxonomy's colour families.
Networks: the default `catalogue_net` against the seed baselines trained by the same code on the
same snapshot (`compact_80x60`, and the 150x150 `category_cnn10` / `colour_cnn11`).

Each finished (protocol, network) is written to `bench/results/training.json` at once, so an
interrupted run (or a later session) continues where it stopped; `--force` redoes them.
Throughput: training images/s, and the input pipeline alone (decode + augment + batch) in the
same run; its share of a training step is train rate / input rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from sqlalchemy import create_engine, text  # noqa: E402

from bench.scratch import result_header  # noqa: E402

EIGHT_TYPES = ["Sports Shoes", "Kurtas", "Tops", "Handbags", "Watches", "Shirts", "Tshirts",
               "Casual Shoes"]  # fmt: skip
PROTOCOLS = {
    "category_8": {"attribute": "category", "level": "article", "only": EIGHT_TYPES, "min": 20,
                   "seed": 0.913, "target": 0.95},
    "category_all50": {"attribute": "category", "level": "article", "min": 50, "target": 0.85},
    "colour_exact": {"attribute": "colour", "level": "colour", "min": 20},
    "colour_family": {"attribute": "colour", "level": "family", "min": 20, "target": 0.75},
}  # fmt: skip
NETWORKS = {
    "category": ["catalogue_net", "compact_80x60", "category_cnn10"],
    "colour": ["catalogue_net", "compact_80x60", "colour_cnn11"],
}
EPOCHS = {"catalogue_net": 12, "compact_80x60": 12, "category_cnn10": 8, "colour_cnn11": 8}
DATABASE = "catalogue_bench_training"


def prepare(settings, work: Path):
    """The bench database with all 15,000 photos and their labels (kept between runs)."""
    from pipeline.collect.archive import import_archive
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade
    from pipeline.labels.history import Who
    from pipeline.labels.label_csv import import_labels
    from pipeline.samples import generate_sample_accounts
    from pipeline.storage import ObjectStore

    admin = create_engine(settings.database_url.set(database="postgres"),
                          isolation_level="AUTOCOMMIT")  # fmt: skip
    with admin.connect() as connection:
        if not connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                  {"d": DATABASE}).scalar():  # fmt: skip
            connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine = get_engine(settings.database_url.set(database=DATABASE))
    upgrade(engine, role_names=settings.role_names)
    archive = work / "archive"
    if not (archive / "labels.csv").exists():
        generate_sample_accounts(settings.dataset_dir, archive, seed=7)
    with engine.connect() as connection:
        images = connection.execute(text("SELECT count(*) FROM raw.images")).scalar()
        labels = connection.execute(text("SELECT count(*) FROM catalogue.labels")).scalar()
    if images < 15_000:
        started = time.perf_counter()
        import_archive(archive, engine=engine, store=ObjectStore.for_images(settings))
        print(f"imported the archive in {time.perf_counter() - started:.0f}s", flush=True)
    if not labels:
        report = import_labels(archive / "labels.csv", engine=engine, who=Who(name="dataset"))
        print(f"labels: {report.written} written, {len(report.refused)} rows refused", flush=True)
    return engine


def input_rate(items, classes, cache, image_size, batch_size=64, batches=40) -> float:
    """Pictures per second of the input pipeline alone (decode, augment, batch), as in training."""
    from pipeline.train.inputs import LabelledPictures

    data = LabelledPictures(items, cache=cache, classes=classes, image_size=image_size,
                            batch_size=batch_size, augment=True, shuffle=True)  # fmt: skip
    count = min(batches, len(data))
    started = time.perf_counter()
    for index in range(count):
        data[index]
    return count * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(PROTOCOLS))
    parser.add_argument("--networks", action="append")
    parser.add_argument("--epochs", type=int, help="override every network's epochs")
    parser.add_argument("--force", action="store_true", help="redo finished entries")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "training.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-training"))
    args = parser.parse_args()

    from pipeline.config import load_settings
    from pipeline.storage import ObjectStore
    from pipeline.train.fit import TrainOptions, train
    from pipeline.train.inputs import PictureCache
    from pipeline.train.models import architecture
    from pipeline.train.snapshot import SnapshotOptions, snapshot_dataset

    settings = load_settings()
    args.work.mkdir(parents=True, exist_ok=True)
    engine = prepare(settings, args.work)
    cache = PictureCache(ObjectStore.for_images(settings), args.work / "pictures")
    results = json.loads(args.out.read_text()) if args.out.exists() else {"entries": {}}
    for name in args.only or list(PROTOCOLS):
        protocol = PROTOCOLS[name]
        attribute = protocol["attribute"]
        snapshot = snapshot_dataset(
            engine=engine, store=ObjectStore.for_models(settings),
            options=SnapshotOptions(
                attributes=(attribute,), min_examples=protocol["min"],
                levels={attribute: protocol["level"]},
                only_classes={attribute: protocol["only"]} if "only" in protocol else {},
            ),
        )  # fmt: skip
        counts = snapshot.manifest["counts"][attribute]
        for network in args.networks or NETWORKS[attribute]:
            key = f"{name}/{network}"
            if key in results["entries"] and not args.force:
                print(f"{key}: done before, skipped", flush=True)
                continue
            epochs = args.epochs or EPOCHS[network]
            size = architecture(network).image_size
            classes = {attribute: snapshot.attributes[attribute]["classes"]}
            train_items = [i for i in snapshot.items("train") if attribute in i["labels"]]
            cache.warm([i["key"] for i in snapshot.manifest["images"]])
            feed = input_rate(train_items, classes, cache, size)
            print(f"{key}: {len(classes[attribute])} classes, {len(train_items)} training "
                  f"pictures, {epochs} epochs; input pipeline {feed:.0f} pictures/s", flush=True)  # fmt: skip
            folder = args.work / "artefacts" / key.replace("/", "-")
            trained = train(
                manifest=snapshot.manifest, cache=cache, attributes=[attribute],
                options=TrainOptions(architecture=network, epochs=epochs), out=folder,
                progress=lambda e, logs, key=key: print(
                    f"  {key} epoch {e}: " + ", ".join(f"{k} {v:.3f}" for k, v in logs.items()
                                                       if "accuracy" in k), flush=True),
            )  # fmt: skip
            measured = trained.metrics[attribute]
            results["entries"][key] = {
                "protocol": name,
                "network": network,
                "attribute": attribute,
                "level": protocol["level"],
                "classes": len(classes[attribute]),
                "snapshot": snapshot.checksum,
                "pictures": {split: sum(c.values()) for split, c in counts.items()},
                "epochs": epochs,
                "image_size": list(size),
                "backend": trained.backend,
                "accuracy": measured["accuracy"],
                "macro_f1": measured["macro_f1"],
                "top2_accuracy": measured["top2_accuracy"],
                "majority_accuracy": measured["majority_accuracy"],
                "random_accuracy": measured["random_accuracy"],
                "seed_result": protocol.get("seed"),
                "target": protocol.get("target") if network == "catalogue_net" else None,
                "train_seconds": round(trained.seconds, 1),
                "train_images_per_s": round(trained.images_per_s, 1),
                "input_images_per_s": round(feed, 1),
                "input_share_of_step": round(trained.images_per_s / feed, 3),
            }
            results.update(result_header("training"))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{key}: accuracy {measured['accuracy']:.3f}, macro-F1 "
                  f"{measured['macro_f1']:.3f} ({trained.seconds:.0f}s, "
                  f"{trained.images_per_s:.0f} img/s)", flush=True)  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

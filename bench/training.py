"""Accuracy and training throughput on the shared photos, loaded through the product.

    .venv/bin/python bench/training.py                 # every protocol and network, resumable
    .venv/bin/python bench/training.py --only category_8 --networks catalogue_net
    .venv/bin/python bench/training.py --export .gpu/                # one export per protocol
    .venv/bin/python bench/training.py --from-export .gpu/category_8.npz --networks catalogue_net \
        --warm-from category_all50      # start from catalogue_net trained on the 41 types first
    KERAS_BACKEND=jax python3 bench/training.py --from-export .gpu/category_8.npz \
        --out $OUT/training-gpu.json                                   # on the GPU machine

The data path is the product's: the sample accounts (all 26,550 product photos, or the 3,755 real
clothing photos) imported as an instaloader archive, the data set's labels imported as a label
CSV, a dataset snapshot per protocol, then `pipeline.train.fit.train` on the snapshot's train
split and its measures (accuracy, and coverage at the target precision) on the test split.

Protocols:
- `category_8`: the 8 article types of the compact-CNN study (seed result 0.913);
- `category_all50`: every article type with 50+ training examples;
- `colour_exact`: the exact `baseColour`; `colour_family`: the taxonomy's colour families;
- `shared`: what `catalogue train` does by default: every label, one network with a category
  (article types with 20+ examples) and a colour-family head;
- `clothing_10`: real photos, the 10 most frequent garments of clothing-photos, split by person.
Networks: the default against the old default `catalogue_net` and the seed baselines trained by
the same code on the same snapshot (`compact_80x60`, and the 150x150 `category_cnn10` /
`colour_cnn11`).

Each finished (protocol, network) is written to `bench/results/training.json` at once, so an
interrupted run (or a later session) continues where it stopped; `--force` redoes them.
Throughput: training images/s (steady state: the median epoch, so compilation and the first
epoch's warm-up are left out), the input pipeline alone (decode + augment + batch, one thread) in
the same run, and the bound it is measured against: the same network and optimizer fitted on
pictures already in memory, with no input pipeline at all. The input pipeline's share of step
time is 1 - training rate / that bound.

On the GPU machine (no database, no object store, no `../shared`) the protocols travel as the
product's training exports (`--export`, the same files `catalogue snapshot export` writes, at the
native 80x60; a 150x150 baseline resizes them as it would the JPEGs) and `--from-export` trains
from one, naming the protocol by the file's name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from bench.header import result_header  # noqa: E402

EIGHT_TYPES = ["Sports Shoes", "Kurtas", "Tops", "Handbags", "Watches", "Shirts", "Tshirts",
               "Casual Shoes"]  # fmt: skip
# the 10 most frequent garments of clothing-photos, as the taxonomy names them (T-Shirt and Polo
# are Tshirts, Pants are Trousers, Outwear is Jackets)
CLOTHING_TEN = ["Tshirts", "Trousers", "Longsleeves", "Shoes", "Jackets", "Shorts", "Shirts",
                "Dresses", "Hat", "Skirts"]  # fmt: skip
PROTOCOLS = {
    "category_8": {"attribute": "category", "level": "article", "only": EIGHT_TYPES, "min": 20,
                   "seed": 0.913, "target": 0.95},
    "category_all50": {"attribute": "category", "level": "article", "min": 50, "target": 0.85},
    "colour_exact": {"attribute": "colour", "level": "colour", "min": 20},
    "colour_family": {"attribute": "colour", "level": "family", "min": 20, "target": 0.75},
    # one backbone, a head per attribute, on every labelled picture: what `catalogue train` does
    "shared": {"levels": {"category": "article", "colour": "family"}, "min": 20},
    # real photos (clothing-photos): the 10 most frequent garments, split by person
    "clothing_10": {"source": "clothing", "attribute": "category", "level": "article",
                    "only": CLOTHING_TEN, "min": 20, "group_by": "account", "target": 0.90},
}  # fmt: skip
NETWORKS = {  # the old default and the seed baselines, run after the product's default network
    "category": ["catalogue_net", "compact_80x60", "category_cnn10"],
    "colour": ["catalogue_net", "compact_80x60", "colour_cnn11"],
    "shared": ["catalogue_net"],
    "clothing_10": ["catalogue_net", "compact_80x60"],
}
EPOCHS = {  # the seed baselines' own; the product's default network trains what a user's run does
    "catalogue_net": 12,
    "compact_80x60": 12,
    "category_cnn10": 8,
    "colour_cnn11": 8,
    "mobilenet_v2_035": 6,
    "mobilenet_v2_100": 6,
}
DATABASE = "catalogue_bench_training"
DATABASES = {"products": DATABASE, "clothing": "catalogue_bench_clothing"}
SPLITS = "splits.json"  # beside each artefact: picture key -> split, for --warm-from's check


def levels(protocol) -> dict[str, str]:
    """attribute -> taxonomy level of a protocol's heads."""
    return protocol.get("levels") or {protocol["attribute"]: protocol["level"]}


def entry_key(protocol_name: str, network: str, image_size=None, warm_from=None) -> str:
    """A results entry's name: PROTOCOL/NET, then @WIDTHxHEIGHT for a size of its own and +PROTOCOL for a
    warm start."""
    key = f"{protocol_name}/{network}"
    if image_size:
        key += f"@{image_size[1]}x{image_size[0]}"  # (height, width) written as the CLI does
    if warm_from:
        key += f"+{warm_from}"
    return key


def artefact_folder(work: Path, key: str) -> Path:
    """Where the run named `key` leaves its artefact (and its `SPLITS`)."""
    return work / "artefacts" / key.replace("/", "-")


def prepare(settings, work: Path, source: str = "products"):
    """The bench database with all the photos of `source` (the product photos, or the real
    clothing photos) and their labels, kept between runs."""
    from sqlalchemy import create_engine, text

    from pipeline.collect.archive import import_archive
    from pipeline.db import get_engine
    from pipeline.db.migrate import upgrade
    from pipeline.labels.history import Who
    from pipeline.labels.label_csv import import_labels
    from pipeline.samples import generate_clothing_accounts, generate_sample_accounts
    from pipeline.storage import ObjectStore

    admin = create_engine(settings.database_url.set(database="postgres"),
                          isolation_level="AUTOCOMMIT")  # fmt: skip
    database = DATABASES[source]
    with admin.connect() as connection:
        if not connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                  {"d": database}).scalar():  # fmt: skip
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    engine = get_engine(settings.database_url.set(database=database))
    upgrade(engine, role_names=settings.role_names)
    archive = work / ("archive" if source == "products" else f"archive-{source}")
    if not (archive / "labels.csv").exists():
        if source == "products":
            generate_sample_accounts(settings.dataset_dir, archive, seed=7)
        else:
            generate_clothing_accounts(settings.clothing_photos_dir, archive, seed=7)
    with engine.connect() as connection:
        images = connection.execute(text("SELECT count(*) FROM raw.images")).scalar()
        labels = connection.execute(text("SELECT count(*) FROM catalogue.labels")).scalar()
    if images < (15_000 if source == "products" else 3_000):
        started = time.perf_counter()
        import_archive(archive, engine=engine, store=ObjectStore.for_images(settings))
        print(f"imported the archive in {time.perf_counter() - started:.0f}s", flush=True)
    if not labels:
        report = import_labels(archive / "labels.csv", engine=engine, who=Who(name="dataset"))
        print(f"labels: {report.written} written, {len(report.refused)} rows refused", flush=True)
    return engine


def input_rate(items, classes, cache, image_size, batch_size=64, batches=40) -> float:
    """Pictures per second of the input pipeline alone (decode, augment, batch), one thread."""
    from pipeline.train.inputs import LabelledPictures

    data = LabelledPictures(items, cache=cache, classes=classes, image_size=image_size,
                            batch_size=batch_size, augment=True, shuffle=True, workers=1)  # fmt: skip
    count = min(batches, len(data))
    started = time.perf_counter()
    for index in range(count):
        data[index]
    return count * batch_size / (time.perf_counter() - started)


def compute_bound(network, classes, image_size, batch_size=64, steps=40, epochs=4) -> float:
    """Training pictures per second with no input pipeline: the same network and optimizer
    fitted on one block of pictures already in memory (median of the epochs after the first)."""
    import keras
    import numpy as np

    from pipeline.train.fit import compile_for_training
    from pipeline.train.models import architecture, build_model

    rng = np.random.default_rng(0)
    count = steps * batch_size
    # uint8, as the product's input pipeline feeds them (the network casts where it runs)
    pictures = rng.integers(0, 256, (count, *image_size, 3), dtype=np.uint8)
    targets = {a: keras.utils.to_categorical(rng.integers(0, len(names), count), len(names))
               for a, names in classes.items()}  # fmt: skip
    model = build_model(network, {a: len(names) for a, names in classes.items()},
                        image_size=image_size)  # fmt: skip
    compile_for_training(model, architecture(network), list(classes), total_steps=steps * epochs)
    timer = EpochTimer()
    model.fit(pictures, targets, batch_size=batch_size, epochs=epochs,
              shuffle=False, verbose=0, callbacks=[timer.callback()])  # fmt: skip
    return count / timer.steady_seconds()


class EpochTimer:
    """Seconds each epoch spends training, validation left out; the steady state is the median
    of the epochs after the first (compilation and warm-up)."""

    def __init__(self) -> None:
        self.spans: list[float] = []
        self.started = 0.0

    def callback(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.started = time.perf_counter()

            def on_test_begin(self, logs=None):  # validation inside fit: the training part ends
                if timer.started:
                    timer.spans.append(time.perf_counter() - timer.started)
                    timer.started = 0.0

            def on_epoch_end(self, epoch, logs=None):
                self.on_test_begin()

        return Callback()

    def steady_seconds(self) -> float:
        import statistics

        return statistics.median(self.spans[1:] or self.spans)


def device_name() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
    return f"{backend} on {os.cpu_count()} CPUs"


def bench_network(
    *,
    protocol_name,
    network,
    manifest,
    cache,
    epochs,
    results,
    out,
    work,
    image_size=None,
    workers=4,
    warm_from=None,
):
    """Train one network on one protocol's snapshot; record accuracy and throughput at once.
    `warm_from` names a protocol whose artefact of the same network (in `work`) the training
    starts from; it is refused when that artefact trained or validated on this test split."""
    from pipeline.train.fit import TrainOptions, train
    from pipeline.train.models import DEFAULT_ARCHITECTURE, architecture
    from pipeline.train.progress import progress_line

    protocol = PROTOCOLS[protocol_name]
    attributes = list(levels(protocol))
    size = tuple(image_size or architecture(network).image_size)
    key = entry_key(protocol_name, network, image_size, warm_from)
    initial_weights = backbone(work, warm_from, network, manifest) if warm_from else None
    classes = {a: manifest["attributes"][a]["classes"] for a in attributes}
    train_items = [i for i in manifest["images"]
                   if i["split"] == "train" and any(a in i["labels"] for a in attributes)]  # fmt: skip
    cache.warm([i["key"] for i in manifest["images"]])
    feed = input_rate(train_items, classes, cache, size)
    print(f"{key}: {' + '.join(f'{len(c)} {a}' for a, c in classes.items())} classes, "
          f"{len(train_items)} training pictures, "
          f"{epochs} epochs; input pipeline {feed:.0f} pictures/s", flush=True)  # fmt: skip

    def progress(p):
        if p.logs is not None:
            print(f"  {key} {progress_line(p)}", flush=True)

    folder = artefact_folder(work, key)
    started = result_header("training")  # the code that trains, even if HEAD moves meanwhile
    timer = EpochTimer()
    trained = train(
        manifest=manifest, cache=cache, attributes=attributes,
        options=TrainOptions(architecture=network, epochs=epochs, image_size=size, workers=workers,
                             initial_weights=initial_weights),
        out=folder, progress=progress, callbacks=[timer.callback()],
    )  # fmt: skip
    (folder / SPLITS).write_text(json.dumps({i["key"]: i["split"] for i in manifest["images"]}))
    steady = len(train_items) / timer.steady_seconds()
    # the bound trains every layer with its batch norm: no bound for a pretrained network's recipe
    # (frozen batch norm, part of the backbone), and minutes of CPU saved
    bound = None if architecture(network).pretrained else compute_bound(network, classes, size)
    scores = {
        a: {
            "level": levels(protocol)[a],
            "classes": len(classes[a]),
            "pictures": {split: sum(c.values()) for split, c in manifest["counts"][a].items()},
            **{m: trained.metrics[a][m] for m in ("accuracy", "macro_f1", "top2_accuracy",
                                                  "majority_accuracy", "random_accuracy")},
            # the share of test pictures answered without a moderator at the target precision
            "automation": {k: v for k, v in trained.metrics[a]["automation"].items()},
        }
        for a in attributes
    }  # fmt: skip
    results["entries"][key] = {
        "protocol": protocol_name,
        "network": network,
        # one attribute: its figures inline, as before; several: one set per attribute
        **(
            {"attribute": attributes[0], **scores[attributes[0]]}
            if len(attributes) == 1
            else {"attributes": scores}
        ),
        "snapshot": manifest["checksum"],
        "epochs": epochs,
        "image_size": list(size),
        "backend": trained.backend,
        "device": device_name(),
        "seed_result": protocol.get("seed"),
        "target": protocol.get("target") if network == DEFAULT_ARCHITECTURE else None,
        "train_seconds": round(trained.seconds, 1),
        "train_images_per_s": round(trained.images_per_s, 1),
        "steady_images_per_s": round(steady, 1),
        "no_input_bound_images_per_s": round(bound, 1) if bound else None,
        "input_images_per_s": round(feed, 1),
        "input_share_of_step": round(max(0.0, 1 - steady / bound), 3) if bound else None,
        "input_workers": workers,
        "initial_weights": f"{warm_from}/{network}" if warm_from else None,
        "commit": started["commit"],
        "started": started["when"],
    }
    results.update(result_header("training"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    figures = "; ".join(f"{a} accuracy {s['accuracy']:.3f}, macro-F1 {s['macro_f1']:.3f}, "
                        f"coverage {s['automation']['coverage']:.3f} at precision "
                        f"{s['automation']['precision'] or 0:.3f}"
                        for a, s in scores.items())  # fmt: skip
    print(f"{key}: {figures} ({trained.seconds:.0f}s; steady {steady:.0f} img/s"
          + (f", bound {bound:.0f} img/s)" if bound else ")"), flush=True)  # fmt: skip


def backbone(work: Path, protocol_name: str, network: str, manifest) -> Path:
    """The artefact `network` left when trained on `protocol_name`, checked to have seen none of
    `manifest`'s test pictures (a post's split comes from its id, so it holds across snapshots;
    this says so for these two)."""
    folder = artefact_folder(work, entry_key(protocol_name, network))
    if not (folder / SPLITS).is_file():
        raise SystemExit(f"no {network} trained on {protocol_name} in {work}: train it on "
                         f"{protocol_name} first, with the same --work")  # fmt: skip
    seen = {k for k, split in json.loads((folder / SPLITS).read_text()).items() if split != "test"}
    test = {i["key"] for i in manifest["images"] if i["split"] == "test"}
    if seen & test:
        raise SystemExit(f"{protocol_name}/{network} trained or validated on {len(seen & test)} "
                         "of this protocol's test pictures: not a fair start")  # fmt: skip
    return folder / "model.keras"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(PROTOCOLS))
    parser.add_argument("--networks", action="append")
    parser.add_argument("--epochs", type=int, help="override every network's epochs")
    parser.add_argument("--force", action="store_true", help="redo finished entries")
    parser.add_argument("--image-size", metavar="WIDTHxHEIGHT",
                        help="train at this size instead of each network's own, as "
                        "`catalogue train --image-size` (entry: NET@WIDTHxHEIGHT)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "training.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-training"))
    parser.add_argument("--workers", type=int, default=4, help="input threads (default 4)")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="write each protocol's training export to DIR/<protocol>.npz, stop")  # fmt: skip
    parser.add_argument("--warm-from", metavar="PROTOCOL", choices=list(PROTOCOLS),
                        help="start from the same network's artefact trained on PROTOCOL (in "
                        "--work; entry: NET+PROTOCOL)")  # fmt: skip
    parser.add_argument("--from-export", type=Path, action="append", metavar="FILE",
                        help="train from exports named <protocol>.npz (no database, no S3)")  # fmt: skip
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {"entries": {}}
    from pipeline.cli.args import image_size

    size = image_size(args.image_size)

    def todo(protocol_name):
        protocol = PROTOCOLS[protocol_name]
        from pipeline.train.fit import TrainOptions

        default = TrainOptions()
        for network in args.networks or [
            default.architecture,
            *(NETWORKS.get(protocol_name) or NETWORKS[protocol["attribute"]]),
        ]:
            done = entry_key(protocol_name, network, size, args.warm_from) in results["entries"]
            if done and not args.force:
                print(f"{protocol_name}/{network}: done before, skipped", flush=True)
                continue
            yield network, args.epochs or EPOCHS.get(network) or default.epochs

    if args.from_export:
        from pipeline.train.export import load_export

        for path in args.from_export:
            name = path.stem
            manifest, pictures, _header = load_export(path)
            for network, epochs in todo(name):
                bench_network(protocol_name=name, network=network, manifest=manifest,
                              cache=pictures, epochs=epochs, results=results, out=args.out,
                              work=args.work, image_size=size, workers=args.workers,
                              warm_from=args.warm_from)  # fmt: skip
        print(f"wrote {args.out}")
        return

    from pipeline.config import load_settings
    from pipeline.storage import ObjectStore
    from pipeline.train.export import export_snapshot
    from pipeline.train.inputs import PictureCache
    from pipeline.train.models import DEFAULT_ARCHITECTURE, architecture
    from pipeline.train.snapshot import SnapshotOptions, snapshot_dataset

    settings = load_settings()
    args.work.mkdir(parents=True, exist_ok=True)
    cache = PictureCache(ObjectStore.for_images(settings), args.work / "pictures")
    engines = {}
    for name in args.only or list(PROTOCOLS):
        protocol = PROTOCOLS[name]
        source = protocol.get("source", "products")
        if source not in engines:
            engines[source] = prepare(settings, args.work, source)
        snapshot = snapshot_dataset(
            engine=engines[source], store=ObjectStore.for_models(settings),
            options=SnapshotOptions(
                attributes=tuple(levels(protocol)), min_examples=protocol["min"],
                levels=levels(protocol),
                only_classes={protocol["attribute"]: protocol["only"]} if "only" in protocol else {},
                group_by=protocol.get("group_by", "post"),
            ),
        )  # fmt: skip
        if args.export:
            written = export_snapshot(
                snapshot.manifest, cache=cache, out=args.export / f"{name}.npz",
                image_size=architecture(DEFAULT_ARCHITECTURE).image_size, snapshot_id=snapshot.id,
            )  # fmt: skip
            print(f"{name}: {written['pictures']} pictures, {written['bytes'] / 2**20:.1f} MiB "
                  f"in {written['path']}", flush=True)  # fmt: skip
            continue
        for network, epochs in todo(name):
            bench_network(protocol_name=name, network=network, manifest=snapshot.manifest,
                          cache=cache, epochs=epochs, results=results, out=args.out,
                          work=args.work, image_size=size, workers=args.workers,
                          warm_from=args.warm_from)  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Training: dataset snapshots (and their exports for a GPU elsewhere), and retraining."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipeline.cli.args import (
    IMAGE_SIZE_HELP,
    AddCommand,
    UsageError,
    image_size,
    pairs,
    sub_commands,
    written_size,
)
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import Settings, load_settings

if TYPE_CHECKING:
    from pipeline.train.fit import TrainOptions
    from pipeline.train.progress import ProgressPrinter
    from pipeline.train.snapshot import Snapshot, SnapshotOptions


def snapshot_options(args: argparse.Namespace, settings: Settings) -> SnapshotOptions:
    from pipeline.train.snapshot import SnapshotOptions

    return SnapshotOptions.from_settings(
        settings,
        attributes=tuple(args.attribute) if args.attribute else None,
        min_examples=args.min_examples,
        levels=pairs(args.level, "--level"),
        only_classes={a: v.split(",") for a, v in pairs(args.only, "--only").items()},
        group_by=args.group_by,
    )


def train_options(args: argparse.Namespace, settings: Settings) -> TrainOptions:
    from pipeline.train.fit import TrainOptions

    return TrainOptions.from_settings(
        settings,
        architecture=args.network,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps,
        image_size=image_size(args.image_size),
        initial_weights=args.initial_weights,
    )


def _snapshot(args: argparse.Namespace, settings: Settings) -> Snapshot:
    """The snapshot --id names, or a new one of the current labels."""
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore
    from pipeline.train.snapshot import load_snapshot, snapshot_dataset

    engine = get_engine(settings.database_url)
    store = ObjectStore.for_models(settings)
    if args.id:
        return load_snapshot(engine=engine, store=store, snapshot_id=args.id)
    return snapshot_dataset(
        engine=engine,
        store=store,
        options=snapshot_options(args, settings),
        created_by=settings.moderator,
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    settings = load_settings()
    snapshot = _snapshot(args, settings)
    say(
        f"snapshot {snapshot.id} ({snapshot.checksum[:12]}{', new' if snapshot.created else ''}): "
        f"{len(snapshot.manifest['images'])} pictures, manifest s3://{settings.bucket_models}/"
        f"{snapshot.manifest_key}"
    )
    for attribute, spec in snapshot.attributes.items():
        counts = snapshot.manifest["counts"][attribute]
        sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items())
        say(f"  {attribute} at {spec['level']}: {len(spec['classes'])} classes ({sizes})")
        if spec["left_out"]:
            say(
                f"    left out (< {spec['min_examples']} training examples): "
                + ", ".join(f"{c} {n}" for c, n in spec["left_out"].items())
            )
    return EXIT_OK


def cmd_snapshot_export(args: argparse.Namespace) -> int:
    from pipeline.train.export import export_snapshot
    from pipeline.train.fit import TrainOptions
    from pipeline.train.models import architecture
    from pipeline.train.retrain import picture_cache

    size = image_size(args.image_size)  # a wrong size is said before any work
    settings = load_settings()
    network = TrainOptions.from_settings(settings, architecture=args.network).architecture
    size = size or architecture(network).image_size
    snapshot = _snapshot(args, settings)
    written = export_snapshot(
        snapshot.manifest,
        cache=picture_cache(settings),
        image_size=size,
        out=args.out,
        snapshot_id=snapshot.id,
    )
    say(
        f"exported snapshot {snapshot.id}: {written['pictures']} pictures at "
        f"{written_size(size)} (width x height) to {written['path']} "
        f"({written['bytes'] / 2**20:.1f} MiB); train it anywhere with `catalogue train "
        "--from-export FILE --out FOLDER`, then `catalogue models register FOLDER` here"
    )
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train.progress import ProgressPrinter

    progress = ProgressPrinter(sys.stdout)
    try:
        if args.from_export:
            return _train_from_export(args, progress)
        return _train(args, progress)
    finally:
        progress.close()


def _train(args: argparse.Namespace, progress: ProgressPrinter) -> int:
    from pipeline.db import get_engine
    from pipeline.train.retrain import retrain_as_configured, verdicts

    settings = load_settings()
    outcome = retrain_as_configured(
        settings=settings,
        engine=get_engine(settings.database_url),
        snapshot_options=snapshot_options(args, settings),
        train_options=train_options(args, settings),
        separate_models=args.separate,
        who=settings.moderator,
        progress=progress,
    )
    say(f"snapshot {outcome.snapshot.id}; trained in {outcome.seconds:.0f}s")
    for line in verdicts(outcome):
        say(f"  {line}")
    return EXIT_OK


def _train_from_export(args: argparse.Namespace, progress: ProgressPrinter) -> int:
    """Train on a training export alone: no database, no object store (the GPU machine)."""
    from dataclasses import replace
    from pathlib import Path

    from pipeline.train.export import load_export
    from pipeline.train.fit import train
    from pipeline.train.retrain import write_cards

    settings = Settings.from_env()
    manifest, pictures, header = load_export(Path(args.from_export))
    attributes = args.attribute or list(manifest["attributes"])
    unknown = [a for a in attributes if a not in manifest["attributes"]]
    if unknown:
        raise UsageError(f"the export has no {', '.join(unknown)} labels")
    out = Path(args.out or f"artefact-{'-'.join(attributes)}")
    options = train_options(args, settings)
    if options.image_size is None:
        options = replace(options, image_size=tuple(header["image_size"]))
    trained = train(
        manifest=manifest,
        cache=pictures,
        attributes=attributes,
        options=options,
        out=out,
        progress=progress,
    )
    write_cards(out, manifest)
    for attribute, measured in trained.metrics.items():
        say(
            f"{attribute}: accuracy {measured['accuracy']:.3f}, macro-F1 {measured['macro_f1']:.3f} "
            f"on {measured['test_images']} test pictures"
        )
    say(
        f"trained on {trained.backend} in {trained.seconds:.0f}s ({trained.images_per_s:.0f} "
        f"images/s); artefact in {out}: `catalogue models register {out}` where the database is"
    )
    return EXIT_OK


def _training_arguments(sub: argparse.ArgumentParser, *, default: object = None) -> None:
    """What a snapshot takes; `default`: argparse.SUPPRESS where a parent parser has them."""
    sub.add_argument(
        "--attribute",
        action="append",
        default=default,
        help="colour, category... (repeatable; default both)",
    )
    sub.add_argument(
        "--min-examples",
        type=int,
        default=default,
        help="training examples a class needs (CATALOGUE_TRAIN_MIN_EXAMPLES)",
    )
    sub.add_argument(
        "--level",
        action="append",
        default=default,
        metavar="ATTRIBUTE=LEVEL",
        help="train at this taxonomy level, e.g. colour=colour (exact) or category=type",
    )
    sub.add_argument(
        "--only",
        action="append",
        default=default,
        metavar="ATTRIBUTE=V1,V2",
        help="keep only these classes, e.g. the 8 article types of the seed study",
    )
    sub.add_argument(
        "--group-by",
        choices=("post", "account"),
        default="post" if default is None else default,
        help="keep each post's (default) or each account's pictures in one split",
    )


def _snapshot_arguments(sub: argparse.ArgumentParser, *, default: object = None) -> None:
    sub.add_argument(
        "--id", type=int, default=default, help="an existing snapshot (default: make one now)"
    )
    _training_arguments(sub, default=default)


def add_commands(add: AddCommand) -> None:
    snapshot = add(
        "snapshot",
        cmd_snapshot,
        "Turn the current labels into a dataset snapshot: classes at the taxonomy's training level "
        "with enough examples (the rest reported), train/validation/test split by a hash of each "
        "post's id (a post never changes split); the manifest goes to the models bucket.",
        tensorflow=True,
    )
    _snapshot_arguments(snapshot)
    export = sub_commands(snapshot, metavar="[export]", required=False)(
        "export",
        cmd_snapshot_export,
        "Write the snapshot (--id, or a new one) as one training file for a machine with no "
        "database and no S3: `catalogue train --from-export FILE` there.",
        tensorflow=True,
    )
    export.add_argument("--out", required=True, help="the .npz file to write")
    export.add_argument(
        "--network", help="resize for this network (default: CATALOGUE_TRAIN_NETWORK)"
    )
    export.add_argument("--image-size", help=f"{IMAGE_SIZE_HELP}, instead of the network's")
    # the snapshot's options after `export` too; given before it, they still count
    _snapshot_arguments(export, default=argparse.SUPPRESS)

    train = add(
        "train",
        cmd_train,
        "Retrain: snapshot the labels, train a network per attribute, measure it on the test split, "
        "register it, and promote it when it beats the champion (CATALOGUE_PROMOTION_*).",
        tensorflow=True,
    )
    _training_arguments(train)
    train.add_argument(
        "--network",
        help="the network (default: CATALOGUE_TRAIN_NETWORK, "
        f"{Settings.model_fields['train_network'].default} unless configured): mobilenet_v2_035/_050/_100, efficientnet_lite0, catalogue_net, "
        "compact_80x60, colour_cnn11, category_cnn10",
    )
    train.add_argument("--epochs", type=int, help="epochs (CATALOGUE_TRAIN_EPOCHS)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--steps", type=int, help="cap the steps per epoch (quick trials)")
    train.add_argument(
        "--separate",
        action="store_true",
        help="one network per attribute instead of one with a head each (the default)",
    )
    train.add_argument(
        "--from-export",
        metavar="FILE",
        help="train on a training export alone (no database, no S3)",
    )
    train.add_argument("--out", help="with --from-export: the artefact folder to write")
    train.add_argument("--image-size", help=f"{IMAGE_SIZE_HELP}, instead of the network's")
    train.add_argument(
        "--initial-weights",
        help="start from this local .weights.h5/.keras file (CATALOGUE_TRAIN_INITIAL_WEIGHTS)",
    )

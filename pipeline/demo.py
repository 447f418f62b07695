"""The product end to end on embedded defaults, for a newcomer: `catalogue demo`.

Start the local stack, write sample business accounts from the fashion product photos, import
them as an instaloader archive, let "moderators" label part of the posts (the rest keeps its true
labels aside), retrain, predict every picture, and report, with the accuracy on the pictures whose
labels were kept aside. Every step says what it does through `say`; training reports its epochs
to `training_progress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

# product photos the demo turns into shops: enough for the default network to learn most article
# types (each needs CATALOGUE_TRAIN_MIN_EXAMPLES training pictures)
DEMO_SIZE = 10_000
STEPS = 7

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    size: int = DEMO_SIZE  # product photos
    labelled_share: float = 0.7  # of the posts, labelled by the moderators
    network: str | None = None  # default: CATALOGUE_TRAIN_NETWORK
    epochs: int | None = None  # default: CATALOGUE_TRAIN_EPOCHS
    airflow: bool = True


def run_demo(settings: Settings, options: DemoOptions, *, say: Say, training_progress=None) -> bool:
    """The demo's seven steps; False when the product photos are missing (`say` tells where to
    put them)."""
    from infra.local_stack import LocalStack
    from pipeline.db import get_engine

    started = time.perf_counter()
    say(f"== 1/{STEPS} starting the local stack (Postgres, S3, Airflow)")
    statuses = LocalStack(settings, progress=say).up(airflow=options.airflow)
    width = max(len(s.url) for s in statuses)
    for s in statuses:
        say(f"{s.name:<9} {s.state:<12} {s.url:<{width}}  {s.detail}")
    settings = settings.with_local_services()

    say(f"== 2/{STEPS} sample business accounts from {settings.dataset_dir}")
    archive = sample_archive(settings, options.size, say=say)
    if archive is None:
        return False

    say(f"== 3/{STEPS} importing them as an instaloader archive")
    engine = get_engine(settings.database_url)
    import_sample(settings, engine, archive, say=say)

    say(
        f"== 4/{STEPS} moderators label {options.labelled_share:.0%} of the posts (the data "
        "set's colours and categories); the rest stays unlabelled, its true labels kept aside"
    )
    held_out = label_share(settings, engine, archive, options.labelled_share, say=say)

    say(
        f"== 5/{STEPS} retraining: a dataset snapshot, one network with a colour and a category "
        "head, measured on the test split, registered, promoted if better"
    )
    retrain_demo(settings, engine, options, say=say, progress=training_progress)

    say(f"== 6/{STEPS} predicting colour and category for every picture with the champions")
    predict_demo(settings, engine, say=say)

    say(f"== 7/{STEPS} report")
    report(engine, held_out, say=say)
    say(f"demo finished in {time.perf_counter() - started:.0f}s")
    say("")
    say("next:")
    airflow = next(s for s in statuses if s.name == "airflow")
    if airflow.healthy:
        say(
            f"  Airflow UI   {airflow.url}  ({airflow.detail}): DAGs collect_posts, relabel, "
            "retrain_models, predict_catalogue"
        )
    say(
        '  SQL          .venv/bin/catalogue sql "SELECT category, colour, count(*) FROM '
        'marketplace.products GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10"'
    )
    say("  review       .venv/bin/catalogue review --limit 20")
    web = next((s for s in statuses if s.name == "web"), None)
    if web is not None and web.healthy:
        say(
            f"  workbench    {web.url}  (first: .venv/bin/catalogue users add NAME --role "
            "moderator): the review queue as a grid, each picture's history, relabel jobs, undo"
        )
    example = _example_product(engine)
    if example:
        say(f"  similar      .venv/bin/catalogue similar {example} --limit 5")
    say("  models       .venv/bin/catalogue models list")
    say("  report       .venv/bin/catalogue report")
    say("  stop         .venv/bin/catalogue down")
    return True


def _example_product(engine: Engine) -> str | None:
    """A product's shortcode to try the similar-items search on (the first embedded one)."""
    from sqlalchemy import text

    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT p.shortcode || '/' || p.position FROM marketplace.products p "
                "JOIN catalogue.image_embeddings e ON e.image_id = p.image_id "
                "ORDER BY p.image_id LIMIT 1"
            )
        ).scalar_one_or_none()


def sample_archive(settings: Settings, size: int, *, say: Say) -> Path | None:
    """The sample accounts of `size` photos, written once and reused; None without the photos."""
    from pipeline.labels.taxonomy import load_taxonomy
    from pipeline.samples import generate_sample_accounts

    if not (settings.dataset_dir / "styles.csv").exists():
        say(
            f"the fashion product photos are not at {settings.dataset_dir}: download Kaggle's "
            "'Fashion Product Images (Small)' (images/<id>.jpg + styles.csv) and set "
            "CATALOGUE_DATASET_DIR to its folder, then run `make demo` again"
        )
        return None
    archive = settings.state_dir / "samples" / f"size-{size}"
    if (archive / "manifest.csv").exists():
        say(f"reusing {archive}")
        return archive
    summary = generate_sample_accounts(
        settings.dataset_dir, archive, size=size, taxonomy=load_taxonomy(settings.taxonomy_file)
    )
    say(f"wrote {summary.accounts} accounts, {summary.posts} posts, {summary.images} images")
    return archive


def import_sample(settings: Settings, engine: Engine, archive: Path, *, say: Say) -> None:
    from pipeline.collect.archive import import_archive
    from pipeline.storage import ObjectStore

    imported = import_archive(
        archive,
        engine=engine,
        store=ObjectStore.for_images(settings),
        progress=lambda s: say(f"  {s.posts_seen} posts, {s.images_new} new images"),
    )
    say(
        f"{imported.posts_seen} posts ({imported.posts_new} new), {imported.images_new} new "
        f"images, {imported.quarantined} quarantined, in {imported.seconds:.1f}s"
    )


def label_share(
    settings: Settings, engine: Engine, archive: Path, share: float, *, say: Say
) -> Path:
    """Import `share` of the sample's labels as the moderators'; returns the rest's CSV."""
    from pipeline.labels.history import Who
    from pipeline.labels.label_csv import import_labels

    moderated, held_out = split_labels(archive, share)
    # Labels are not announced to Airflow here: the demo retrains itself, next.
    report = import_labels(moderated, engine=engine, who=Who(name=settings.moderator or "demo"))
    say(
        f"{report.written} labels written, {report.unchanged} unchanged, {len(report.refused)} "
        "rows refused (`catalogue labels import` lists each)"
    )
    return held_out


def split_labels(archive: Path, share: float) -> tuple[Path, Path]:
    """The sample's label CSV split by a hash of each post's shortcode: `share` of the posts for
    the moderators, the rest kept aside (the same split every time)."""
    import csv
    import zlib

    source = archive / "labels.csv"
    moderated, held_out = archive / "labels-moderated.csv", archive / "labels-held-out.csv"
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    cut = int(share * 1000)
    for path, keep in ((moderated, True), (held_out, False)):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(
                r for r in rows if (zlib.crc32(r["shortcode"].encode()) % 1000 < cut) == keep
            )
    return moderated, held_out


def retrain_demo(
    settings: Settings, engine: Engine, options: DemoOptions, *, say: Say, progress=None
) -> None:
    """Retrain unless the champions were trained on the current labels' snapshot already."""
    from pipeline.storage import ObjectStore
    from pipeline.train import registry
    from pipeline.train.fit import TrainOptions
    from pipeline.train.retrain import retrain_as_configured, verdicts
    from pipeline.train.snapshot import SnapshotOptions, snapshot_dataset

    # a small demo cannot give every class CATALOGUE_TRAIN_MIN_EXAMPLES examples
    training_pictures = options.size * options.labelled_share * 0.8
    snapshot_options = SnapshotOptions.from_settings(
        settings,
        min_examples=max(3, min(settings.train_min_examples, int(training_pictures / 60))),
    )
    snapshot = snapshot_dataset(
        engine=engine,
        store=ObjectStore.for_models(settings),
        options=snapshot_options,
        created_by="demo",
    )
    champions = [registry.champion(engine, a) for a in snapshot_options.attributes]
    if all(c is not None and c.snapshot_id == snapshot.id for c in champions):
        say(
            f"the champions were trained on this snapshot ({snapshot.id}) already: "
            f"{', '.join(c.version for c in champions)}"
        )
        return
    for attribute, spec in snapshot.attributes.items():
        say(
            f"  {attribute}: {len(spec['classes'])} classes at the '{spec['level']}' level; "
            f"{len(spec['left_out'])} left out with fewer than {snapshot_options.min_examples} "
            "examples"
        )
    outcome = retrain_as_configured(
        settings=settings,
        engine=engine,
        snapshot_options=snapshot_options,
        train_options=TrainOptions.from_settings(
            settings,
            architecture=options.network,
            epochs=options.epochs,
        ),
        who="demo",
        progress=progress,
    )
    say(f"trained in {outcome.seconds:.0f}s")
    for line in verdicts(outcome):
        say(f"  {line}")


def predict_demo(settings: Settings, engine: Engine, *, say: Say) -> None:
    from pipeline.predict.run import predict_as_configured

    run = predict_as_configured(
        settings=settings,
        engine=engine,
        progress=lambda r: say(f"  {r.images:,}/{r.planned:,} pictures scored"),
    )
    if run.planned == 0:
        say(f"every picture was scored by {', '.join(run.champions)} already")
    else:
        say(
            f"scored {run.images:,} pictures with {', '.join(run.champions)} in "
            f"{run.seconds:.1f}s; {run.needs_review:,} of {run.predictions:,} predictions are "
            "unsure"
        )


def report(engine: Engine, held_out: Path, *, say: Say) -> None:
    from pipeline.report import catalogue_report, held_out_accuracy, report_lines

    for line in report_lines(catalogue_report(engine=engine)):
        say(line)
    for result in held_out_accuracy(engine=engine, labels_csv=held_out):
        say(
            f"predictions on the {result.pictures:,} unlabelled pictures whose true "
            f"{result.attribute} was kept aside: accuracy {result.accuracy:.3f} "
            f"({result.accuracy_on_known:.3f} on the {result.known:,} whose class the model "
            "learnt)"
        )

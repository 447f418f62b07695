"""`catalogue`: the command line for people who do not use the Airflow UI.

Every error a user can cause ends in one line naming the setting or input to fix, and a non-zero
exit code; never a bare traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from pipeline.config import ConfigError, Settings, load_settings
from pipeline.errors import CatalogueError
from pipeline.terminal import PrintableFormatter, printable

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# product photos the demo turns into shops: enough for the default network to learn most article
# types (each needs CATALOGUE_TRAIN_MIN_EXAMPLES training pictures)
DEMO_SIZE = 10_000


class UsageError(CatalogueError, ValueError):
    """A command was given something it cannot use; the message says what to write."""


log = logging.getLogger("catalogue")


def _say(message: str) -> None:
    """One line for the user; names, captions and reasons from outside cannot drive the terminal."""
    print(printable(message), flush=True)


def _complain(message: object) -> None:
    print(f"catalogue: {printable(message)}", file=sys.stderr, flush=True)


# -- local stack ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    statuses = LocalStack(Settings.from_env(), progress=_say).up(airflow=not args.no_airflow)
    _print_status(statuses)
    return EXIT_OK if all(s.healthy for s in statuses if s.state != "stopped") else EXIT_FAILED


def cmd_down(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    stopped = LocalStack(Settings.from_env(), progress=_say).down()
    _say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    statuses = LocalStack(Settings.from_env()).status()
    _print_status(statuses)
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILED


def _print_status(statuses) -> None:
    width = max(len(s.url) for s in statuses)
    for s in statuses:
        _say(f"{s.name:<9} {s.state:<12} {s.url:<{width}}  {s.detail}")


# -- database -------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine, migrate
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.action == "upgrade":
        # Both services must accept us before anything changes: nothing is half-written.
        for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
            store.ensure_bucket(create=settings.s3_create_buckets)
        migrate.upgrade(engine, role_names=settings.role_names, revision=args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise ConfigError(
                "REVISION",
                "downgrade needs a target revision",
                "Give one, e.g. `catalogue db downgrade base` (drops every catalogue table).",
            )
        migrate.downgrade(engine, role_names=settings.role_names, revision=args.revision)
    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    _say(f"database {settings.safe_database_url}: revision {current or 'none'} (head {head})")
    return EXIT_OK


def cmd_buckets(args: argparse.Namespace) -> int:
    """Create the image and model buckets unless they exist (docker compose's s3-init job)."""
    from pipeline.storage import ObjectStore

    settings = load_settings()
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        created = store.ensure_bucket(create=True)
        _say(f"{store.endpoint}/{store.bucket}: {'created' if created else 'exists'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Prove every configured service answers with the configured credentials."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import current_revision, head_revision
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    current, head = current_revision(engine), head_revision()
    _say(f"database  ok  {settings.safe_database_url} (revision {current or 'none'})")
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        store.check()
        _say(f"s3        ok  {store.endpoint}/{store.bucket}")
    if current != head:
        _say(
            f"the database is at revision {current or 'none'}, not {head}: run `catalogue db upgrade`"
        )
        return EXIT_FAILED
    return EXIT_OK


# -- accounts and collection -------------------------------------------------------------------
def cmd_accounts(args: argparse.Namespace) -> int:
    from pipeline import accounts
    from pipeline.db import get_engine

    engine = get_engine(load_settings().database_url)
    if args.action == "list":
        rows = accounts.list_accounts(engine=engine)
        if not rows:
            _say("no accounts yet: `catalogue accounts add USERNAME`")
        for row in rows:
            last = row.last_success_at.strftime("%Y-%m-%d %H:%M") if row.last_success_at else "-"
            state = "enabled" if row.enabled else "disabled"
            business = {True: "business", False: "personal", None: "unknown"}[row.is_business]
            _say(
                f"{row.username:<30} {state:<8} {row.status:<8} {business:<8} "
                f"posts {row.posts:>6}  images {row.images:>6}  last success {last}"
                + (f"  last failure: {row.last_failure_reason}" if row.last_failure_reason else "")
            )
        return EXIT_OK
    if not args.usernames:
        raise accounts.AccountError(f"`catalogue accounts {args.action}` needs a USERNAME")
    for username in args.usernames:
        if args.action == "add":
            name, created = accounts.add_account(
                engine=engine, username=username, allow_personal=args.allow_personal
            )
            _say(f"{name}: {'added' if created else 'already registered'}")
        elif args.action in ("enable", "disable"):
            accounts.set_enabled(engine=engine, username=username, enabled=args.action == "enable")
            _say(f"{accounts.normalise_username(username)}: {args.action}d")
        else:
            accounts.remove_account(engine=engine, username=username)
            _say(f"{accounts.normalise_username(username)}: removed")
    return EXIT_OK


def cmd_import_archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.collect.archive import import_archive
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    store = ObjectStore.for_images(settings)
    store.check()

    def progress(summary) -> None:
        _say(f"  {summary.posts_seen} posts, {summary.images_new} new images")

    summary = import_archive(
        Path(args.folder),
        engine=engine,
        store=store,
        workers=args.workers,
        enable_accounts=args.enable,
        allow_personal=args.allow_personal,
        progress=progress,
    )
    _say(
        f"imported {len(summary.accounts)} accounts: {summary.posts_seen} posts "
        f"({summary.posts_new} new, {summary.posts_updated} updated, "
        f"{summary.posts_unchanged} unchanged, {summary.posts_refused} refused; "
        f"{summary.posts_cleaned} with text cleaned), {summary.images_new} new images, "
        f"{summary.objects_written} objects written, {summary.quarantined} quarantined, "
        f"in {summary.seconds:.1f}s"
    )
    for name, reason in summary.skipped_accounts.items():
        _say(f"  skipped {name}: {reason}")
    if summary.quarantined:
        _say(
            "  refused inputs and their reasons: SELECT * FROM raw.quarantine ORDER BY last_seen_at DESC;"
        )
    return EXIT_OK


def cmd_collect(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from pipeline.collect.instagram import (
        CollectOptions,
        collect_account,
        enabled_accounts,
        make_loader,
    )
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    store = ObjectStore.for_images(settings)
    store.check()
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since).replace(tzinfo=UTC)
        except ValueError:
            raise ConfigError(
                "--since", f"'{args.since}' is not a date", "Use YYYY-MM-DD."
            ) from None
    options = CollectOptions(max_posts=args.max_posts, since=since, refresh_days=args.refresh_days)
    loader = make_loader(
        engine=engine,
        session_file=settings.instagram_session_file,
        username=settings.instagram_username,
        sleep=settings.instagram_pauses,
    )
    accounts = enabled_accounts(engine, args.accounts)
    if not accounts:
        _say("no enabled accounts: `catalogue accounts add USERNAME`")
    failed = 0
    for name in accounts:  # one at a time: never two accounts at once against Instagram
        run = collect_account(engine=engine, store=store, loader=loader, username=name,
                              options=options)  # fmt: skip
        line = (
            f"{name}: {run.status}, {run.posts_new} new posts, {run.posts_refreshed} refreshed, "
            f"{run.images_new} new images, {run.quarantined} quarantined"
        )
        if run.backfill_pending:
            line += ", backfill continues next run"
        if run.reason:
            line += f" ({run.reason})"
        _say(line)
        failed += int(run.status in ("blocked", "failing"))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_samples(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.samples import generate_clothing_accounts, generate_sample_accounts

    settings = Settings.from_env()
    clothing = args.source == "clothing-photos"
    if clothing and args.image_size:
        raise UsageError("--image-size: the clothing photos keep their own size and aspect")
    if args.people is not None and not clothing:
        raise UsageError("--people: only with --source clothing-photos (one account per person)")
    size = None
    if args.image_size:
        width, _, height = args.image_size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ConfigError(
                "--image-size", f"'{args.image_size}' is not WIDTHxHEIGHT", "Use e.g. 1080x1350."
            )
        size = (int(width), int(height))
    from pipeline.labels.taxonomy import load_taxonomy

    try:
        if clothing:
            summary = generate_clothing_accounts(
                Path(args.dataset or settings.clothing_photos_dir),
                Path(args.out),
                people=args.people,
                size=args.size,
                seed=args.seed,
                taxonomy=load_taxonomy(settings.taxonomy_file),
            )
        else:
            summary = generate_sample_accounts(
                Path(args.dataset or settings.dataset_dir),
                Path(args.out),
                size=args.size,
                seed=args.seed,
                image_size=size,
                taxonomy=load_taxonomy(settings.taxonomy_file),
            )
    except ValueError as exc:  # bad size or share, unexpected styles.csv/images.csv header
        _complain(exc)
        return EXIT_CONFIG
    _say(
        f"wrote {summary.accounts} sample business accounts to {summary.out_dir}: "
        f"{summary.posts} posts ({summary.carousels} carousels, {summary.videos} videos), "
        f"{summary.images} images"
        + (f"; {summary.values_left_out} colours and categories the taxonomy does not know "
           "left out of labels.csv" if summary.values_left_out else "")
        + (f"; {summary.non_garments} photos labelled Not sure, Other or Skip have no category"
           if summary.non_garments else "")
    )  # fmt: skip
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    from pipeline.collect.purge import purge
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore

    settings = load_settings()
    outcome = purge(
        engine=get_engine(settings.database_url),
        store=ObjectStore.for_images(settings),
        target=args.target,
        reason=args.reason,
        requested_by=settings.moderator,
    )
    _say(
        f"purged {outcome.target_kind} {outcome.target}: {outcome.posts} posts, "
        f"{outcome.images} images, {outcome.objects_deleted} objects deleted "
        "(audit record in raw.purges)"
    )
    return EXIT_OK


# -- moderation -----------------------------------------------------------------------------------
def cmd_taxonomy(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine
    from pipeline.labels.taxonomy import load_taxonomy, sync_taxonomy, taxonomy_from_database

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.action == "sync":
        taxonomy = load_taxonomy(args.file or settings.taxonomy_file)
        with engine.begin() as connection:
            outcome = sync_taxonomy(connection=connection, taxonomy=taxonomy)
        _say(
            f"taxonomy '{taxonomy.name}' from {taxonomy.source}: version {outcome.version_id}"
            f"{' (new)' if outcome.created else ' (already loaded)'}, {outcome.values_added} "
            f"values added or changed, {outcome.values_retired} retired"
        )
        return EXIT_OK
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
    names = [args.attribute] if args.attribute else list(taxonomy.attributes)
    for name in names:
        attribute = taxonomy.attribute(name)
        _say(
            f"{name}: levels {' > '.join(attribute.levels)}, trained at {attribute.train_at} "
            f"({len(attribute.training_classes())} classes), {len(attribute.values)} values"
        )
        for value in attribute.values.values():
            _say("  " + "  " * (value.depth - 1) + value.name)
        if attribute.aliases:
            _say("  aliases: " + ", ".join(f"{a} -> {v}" for a, v in attribute.aliases.items()))
    return EXIT_OK


def _who(settings: Settings):
    from pipeline.labels.history import Who

    return Who(name=settings.moderator, origin="cli")


def _announce(settings: Settings, job_id: int | None, written: int) -> None:
    if not job_id or not written:
        return
    from pipeline.labels.announce import announce_labels_changed

    _say("  " + announce_labels_changed(settings=settings, job_id=job_id, labels_written=written))


def _date(value: str | None):
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"'{value}' is not a date: write YYYY-MM-DD") from None


def cmd_labels(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine
    from pipeline.labels import jobs

    settings = load_settings()
    engine = get_engine(settings.database_url)
    who = _who(settings)
    if args.action == "import":
        from pipeline.labels.label_csv import LabelFileError, format_report, import_labels

        if not args.subject:
            raise LabelFileError("`catalogue labels import FILE`: which CSV file")
        report = import_labels(
            args.subject, engine=engine, who=who, strict=args.strict, dry_run=args.dry_run
        )
        for line in format_report(report):
            _say(line)
        _announce(settings, report.job_id, report.written)
        return EXIT_FAILED if report.refused and args.strict else EXIT_OK
    if args.action == "export":
        from pipeline.labels.label_csv import export_labels

        options = dict(
            engine=engine, account=args.account, attribute=args.attribute, value=args.value,
            since=_date(args.since), until=_date(args.until),
        )  # fmt: skip
        if args.out in (None, "-"):
            count = export_labels(sys.stdout, **options)
        else:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                count = export_labels(out, **options)
            _say(f"wrote {count} images' labels to {args.out}")
        return EXIT_OK
    if args.action == "jobs":
        for job in jobs.list_jobs(engine=engine, limit=args.limit):
            state = f"undone by {job.undone_by}" if job.undone_by else ""
            _say(
                f"{job.id:>6} {job.kind:<9} {job.labels_written:>7} labels  "
                f"{job.created_at:%Y-%m-%d %H:%M}  {job.created_by} ({job.origin})  {state}"
            )
        return EXIT_OK
    if args.action == "history":
        return _history(engine, args)
    if args.action == "undo":
        if not (args.subject or "").isdigit():
            raise jobs.JobError(
                "`catalogue labels undo JOB`: which job, by number (see `catalogue labels jobs`)"
            )
        outcome = jobs.undo_job(
            engine=engine, job_id=int(args.subject), who=who, dry_run=args.dry_run
        )
    else:
        if not args.attribute:
            raise jobs.JobError(f"`catalogue labels {args.action}` needs --attribute (colour, ...)")
        outcome = jobs.run_job(
            engine=engine,
            kind=args.action,
            attribute=args.attribute,
            who=who,
            to=args.to,
            from_values=args.from_values,
            selection=jobs.Selection(
                account=args.account,
                value=args.value or [],
                predicted=args.predicted or [],
                shortcodes=args.shortcode or [],
                since=_date(args.since),
                until=_date(args.until),
            ),
            dry_run=args.dry_run,
            note=args.note,
        )
    verb = "would change" if outcome.dry_run else "changed"
    _say(
        f"{outcome.kind}: {verb} {outcome.images} labels"
        + (f", {outcome.skipped} skipped (changed since the job)" if outcome.skipped else "")
        + (f" (job {outcome.job_id}; undo: catalogue labels undo {outcome.job_id})"
           if outcome.job_id else "")
    )  # fmt: skip
    for row in outcome.sample:
        _say(f"  {row['shortcode']}/{row['position']}: {row['before']} -> {row['after']}")
    if not outcome.dry_run:
        _announce(settings, outcome.job_id, outcome.images)
    return EXIT_OK


def _history(engine, args: argparse.Namespace) -> int:
    from sqlalchemy import text

    if not args.subject:
        raise FileNotFoundError("`catalogue labels history SHORTCODE [--position N]`: which post")
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                """
                SELECT l.id, i.position, l.attribute, l.value, l.source, l.moderator,
                       l.created_by, l.created_at, l.replaces_label_id, l.job_id, l.note
                FROM catalogue.labels l JOIN raw.images i ON i.id = l.image_id
                JOIN raw.posts p ON p.id = i.post_id
                WHERE p.shortcode = :s AND (CAST(:pos AS integer) IS NULL OR i.position = :pos)
                ORDER BY i.position, l.attribute, l.id
                """
            ),
            {"s": args.subject, "pos": args.position},
        ).all()
    if not rows:
        _say(f"no labels for {args.subject}")
    for r in rows:
        _say(
            f"{r.id:>8} {args.subject}/{r.position} {r.attribute:<10} {r.value or '(cleared)':<20}"
            f" {r.source:<9} {r.moderator} (by {r.created_by}) {r.created_at:%Y-%m-%d %H:%M} "
            f"job {r.job_id}"
            + (f" replaces {r.replaces_label_id}" if r.replaces_label_id else "")
            + (f"  note: {r.note}" if r.note else "")
        )
    return EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine
    from pipeline.labels.review import review_queue, write_review_csv
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    items = review_queue(engine=engine, limit=args.limit, attribute=args.attribute)
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            write_review_csv(out, items, engine=engine, store=ObjectStore.for_images(settings))
        _say(f"wrote {len(items)} images to review to {args.out}; fill in and "
             f"`catalogue labels import {args.out}`")  # fmt: skip
        return EXIT_OK
    for item in items:
        suggestions = "; ".join(
            f"{a}: " + ", ".join(f"{s['value']} {float(s['confidence']):.2f}" for s in top[:3])
            for a, top in item.suggestions.items()
        )
        _say(f"{item.shortcode}/{item.position} {item.account:<24} {item.reason:<32} {suggestions}")
    return EXIT_OK


# -- training -----------------------------------------------------------------------------------
def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"{what} '{value}': write ATTRIBUTE=VALUE, e.g. colour=family")
        pairs[name] = rest
    return pairs


def _snapshot_options(args: argparse.Namespace, settings: Settings):
    from pipeline.train.snapshot import SnapshotOptions

    return SnapshotOptions(
        attributes=tuple(args.attribute or ("colour", "category")),
        min_examples=args.min_examples or settings.train_min_examples,
        levels=_pairs(args.level, "--level"),
        only_classes={a: v.split(",") for a, v in _pairs(args.only, "--only").items()},
        group_by=args.group_by,
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore
    from pipeline.train.snapshot import snapshot_dataset

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.id:
        from pipeline.train.snapshot import load_snapshot

        snapshot = load_snapshot(
            engine=engine, store=ObjectStore.for_models(settings), snapshot_id=args.id
        )
    else:
        snapshot = snapshot_dataset(
            engine=engine, store=ObjectStore.for_models(settings),
            options=_snapshot_options(args, settings), created_by=settings.moderator,
        )  # fmt: skip
    if args.action == "export":
        from pipeline.train.export import export_snapshot
        from pipeline.train.models import architecture
        from pipeline.train.retrain import picture_cache

        if not args.out:
            raise UsageError("`catalogue snapshot export` needs --out FILE.npz")
        size = (
            _size(args.image_size)
            or architecture(args.network or settings.train_network).image_size
        )
        written = export_snapshot(
            snapshot.manifest, cache=picture_cache(settings), image_size=size, out=args.out,
            snapshot_id=snapshot.id,
        )  # fmt: skip
        _say(
            f"exported snapshot {snapshot.id}: {written['pictures']} pictures at "
            f"{size[0]}x{size[1]} to {written['path']} ({written['bytes'] / 2**20:.1f} MiB); "
            "train it anywhere with `catalogue train --from-export FILE --out FOLDER`, then "
            "`catalogue models register FOLDER` here"
        )
        return EXIT_OK
    _say(
        f"snapshot {snapshot.id} ({snapshot.checksum[:12]}{', new' if snapshot.created else ''}): "
        f"{len(snapshot.manifest['images'])} pictures, manifest s3://{settings.bucket_models}/"
        f"{snapshot.manifest_key}"
    )
    for attribute, spec in snapshot.attributes.items():
        counts = snapshot.manifest["counts"][attribute]
        sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items())
        _say(f"  {attribute} at {spec['level']}: {len(spec['classes'])} classes ({sizes})")
        if spec["left_out"]:
            _say(
                f"    left out (< {spec['min_examples']} training examples): "
                + ", ".join(f"{c} {n}" for c, n in spec["left_out"].items())
            )
    return EXIT_OK


def _train_options(args: argparse.Namespace, settings: Settings):
    from pipeline.train.fit import TrainOptions

    return TrainOptions.from_settings(
        settings,
        architecture=args.network,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps,
        image_size=_size(args.image_size),
        initial_weights=args.initial_weights,
    )


def _size(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    height, sep, width = value.partition("x")
    if not (sep and height.isdigit() and width.isdigit()):
        raise UsageError(f"image size '{value}': write HEIGHTxWIDTH, e.g. 80x60")
    return int(height), int(width)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train.progress import ProgressPrinter

    progress = ProgressPrinter(sys.stdout)
    try:
        if args.from_export:
            return _train_from_export(args, progress)
        return _train(args, progress)
    finally:
        progress.close()


def _train(args: argparse.Namespace, progress) -> int:
    from pipeline.db import get_engine
    from pipeline.train.registry import GateOptions
    from pipeline.train.retrain import retrain

    settings = load_settings()
    outcome = retrain(
        settings=settings,
        engine=get_engine(settings.database_url),
        snapshot_options=_snapshot_options(args, settings),
        train_options=_train_options(args, settings),
        separate_models=args.separate,
        gate=GateOptions.from_settings(settings),
        who=settings.moderator,
        progress=progress,
    )
    _say(f"snapshot {outcome.snapshot.id}; trained in {outcome.seconds:.0f}s")
    for decision in outcome.decisions:
        verdict = "champion" if decision.promoted else "stays candidate"
        _say(f"  {decision.version}: {verdict}: {decision.reason}")
    return EXIT_OK


def _train_from_export(args: argparse.Namespace, progress) -> int:
    """Train on a training export alone: no database, no object store (the GPU machine)."""
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
    options = _train_options(args, settings)
    if options.image_size is None:
        from dataclasses import replace

        options = replace(options, image_size=tuple(header["image_size"]))
    trained = train(manifest=manifest, cache=pictures, attributes=attributes, options=options,
                    out=out, progress=progress)  # fmt: skip
    write_cards(out, manifest)
    for attribute, measured in trained.metrics.items():
        _say(
            f"{attribute}: accuracy {measured['accuracy']:.3f}, macro-F1 {measured['macro_f1']:.3f} "
            f"on {measured['test_images']} test pictures"
        )
    _say(
        f"trained on {trained.backend} in {trained.seconds:.0f}s ({trained.images_per_s:.0f} "
        f"images/s); artefact in {out}: `catalogue models register {out}` where the database is"
    )
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore
    from pipeline.train import registry

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.action == "list":
        rows = registry.list_versions(engine=engine, attribute=args.target)
        if not rows:
            _say("no models yet: `catalogue train`")
        for r in rows:
            accuracy = f"{float(r.accuracy):.3f}" if r.accuracy else "-"
            _say(
                f"{r.version:<18} {r.status:<9} {r.architecture:<15} {r.backend:<10} "
                f"acc {accuracy}  snapshot {r.snapshot_id}  {r.created_at:%Y-%m-%d %H:%M}  "
                f"{r.status_reason or ''}"
            )
        return EXIT_OK
    if not args.target:
        raise UsageError(f"`catalogue models {args.action}` needs a "
                         f"{'VERSION' if args.action == 'promote' else 'ATTRIBUTE'}")  # fmt: skip
    if args.action == "register":
        versions = registry.register_folder(
            engine=engine, store=ObjectStore.for_models(settings), folder=Path(args.target),
            created_by=settings.moderator,
        )  # fmt: skip
        _say(f"registered {', '.join(versions)} as candidates; "
             f"`catalogue models promote VERSION` or let the next retrain's gate decide")  # fmt: skip
        return EXIT_OK
    if args.action == "promote":
        registry.promote(engine=engine, version=args.target, who=settings.moderator)
        _say(f"{args.target} is now champion")
        champion = args.target
    else:
        retired, champion = registry.rollback(
            engine=engine, attribute=args.target, who=settings.moderator
        )
        _say(
            f"rolled back {retired}; {champion} is champion again (the marketplace shows its "
            "earlier predictions at once)"
        )
    from pipeline.announce import announce_asset_event

    _say("  " + announce_asset_event(
        settings=settings, uri=CHAMPION_ASSET_URI, extra={"versions": [champion]},
        done=f"{champion} is champion",
        fallback="run `catalogue predict` to score the images it has not scored yet",
    ))  # fmt: skip
    return EXIT_OK


CHAMPION_ASSET_URI = "catalogue://models/champion"  # dags/assets.py NEW_CHAMPION


def cmd_predict(args: argparse.Namespace) -> int:
    """Score the images the champions have not scored yet and write them to the marketplace."""
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore

    settings = load_settings()
    if args.shard:
        try:
            shard, shards = (int(n) for n in args.shard.split("/"))
            assert 0 <= shard < shards
        except (ValueError, AssertionError):
            raise UsageError(f"--shard {args.shard}: give I/N with 0 <= I < N, e.g. 0/4") from None
    else:
        shard, shards = 0, 1
    from pipeline.predict.batch import PredictOptions, predict_catalogue
    from pipeline.train.retrain import artefact_cache

    options = PredictOptions.from_settings(
        settings, attributes=tuple(args.attribute) if args.attribute else None,
        everything=args.all, shard=shard, shards=shards, limit=args.limit,
        batch_size=args.batch_size or None, workers=args.workers or None,
    )  # fmt: skip
    shown = {"at": 0.0}

    def progress(run) -> None:
        if (
            run.seconds - shown["at"] >= 5
            or run.images + run.undecodable + run.missing >= run.planned
        ):
            shown["at"] = run.seconds
            _say(f"  {run.images:,}/{run.planned:,} images scored ({run.images_per_s:.0f}/s)")

    run = predict_catalogue(
        engine=get_engine(settings.database_url), images=ObjectStore.for_images(settings),
        models=ObjectStore.for_models(settings), cache_dir=artefact_cache(settings),
        options=options, progress=progress,
    )  # fmt: skip
    if run.planned == 0:
        _say(f"nothing to score: {', '.join(run.champions)} scored every image already "
             "(--all rescores)")  # fmt: skip
        return EXIT_OK
    _say(
        f"scored {run.images:,} images with {', '.join(run.champions)} in {run.seconds:.1f}s "
        f"({run.streaming_images_per_s:.0f}/s once the models were loaded): "
        f"{run.predictions:,} predictions, {run.needs_review:,} need review"
    )
    if run.undecodable or run.missing:
        _say(f"  skipped {run.undecodable} undecodable and {run.missing} missing pictures "
             "(catalogue.unscorable_images has each reason), e.g.:")  # fmt: skip
        for problem in run.problems[:5]:
            _say(f"    {problem}")
    return EXIT_OK


# -- the demo ---------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """The product end to end on embedded defaults: stack, sample shops, archive import, labels
    for part of them, retraining, prediction, and a report."""

    from infra.local_stack import LocalStack
    from pipeline.collect.archive import import_archive
    from pipeline.db import get_engine
    from pipeline.samples import generate_sample_accounts
    from pipeline.storage import ObjectStore

    started = time.perf_counter()
    settings = Settings.from_env()
    if not 0 < args.labelled_share < 1:
        raise UsageError("--labelled-share is a fraction between 0 and 1, e.g. 0.7")
    _say("== 1/7 starting the local stack (Postgres, S3, Airflow)")
    statuses = LocalStack(settings, progress=_say).up(airflow=not args.no_airflow)
    _print_status(statuses)
    settings = settings.with_local_services()

    _say(f"== 2/7 sample business accounts from {settings.dataset_dir}")
    if not (settings.dataset_dir / "styles.csv").exists():
        _say(
            f"the fashion product photos are not at {settings.dataset_dir}: download Kaggle's "
            "'Fashion Product Images (Small)' (images/<id>.jpg + styles.csv) and set "
            "CATALOGUE_DATASET_DIR to its folder, then run `make demo` again"
        )
        return EXIT_FAILED
    archive = settings.state_dir / "samples" / f"size-{args.size}"
    if not (archive / "manifest.csv").exists():
        from pipeline.labels.taxonomy import load_taxonomy

        summary = generate_sample_accounts(
            settings.dataset_dir, archive, size=args.size,
            taxonomy=load_taxonomy(settings.taxonomy_file),
        )  # fmt: skip
        _say(f"wrote {summary.accounts} accounts, {summary.posts} posts, {summary.images} images")
    else:
        _say(f"reusing {archive}")

    _say("== 3/7 importing them as an instaloader archive")
    engine = get_engine(settings.database_url)
    imported = import_archive(
        archive,
        engine=engine,
        store=ObjectStore.for_images(settings),
        progress=lambda s: _say(f"  {s.posts_seen} posts, {s.images_new} new images"),
    )
    _say(
        f"{imported.posts_seen} posts ({imported.posts_new} new), {imported.images_new} new "
        f"images, {imported.quarantined} quarantined, in {imported.seconds:.1f}s"
    )

    _say(f"== 4/7 moderators label {args.labelled_share:.0%} of the posts (the data set's "
         "colours and categories); the rest stays unlabelled, its true labels kept aside")  # fmt: skip
    from pipeline.labels.history import Who
    from pipeline.labels.label_csv import import_labels

    moderated, held_out = _split_labels(archive, args.labelled_share)
    # Labels are not announced to Airflow here: the demo retrains itself, next.
    report = import_labels(moderated, engine=engine, who=Who(name=settings.moderator or "demo"))
    _say(
        f"{report.written} labels written, {report.unchanged} unchanged, {len(report.refused)} "
        "rows refused (`catalogue labels import` lists each)"
    )

    _say("== 5/7 retraining: a dataset snapshot, one network with a colour and a category head, "
         "measured on the test split, registered, promoted if better")  # fmt: skip
    _demo_retrain(args, settings, engine)

    _say("== 6/7 predicting colour and category for every picture with the champions")
    _demo_predict(settings, engine)

    _say("== 7/7 report")
    from pipeline.report import catalogue_report, held_out_accuracy, report_lines

    for line in report_lines(catalogue_report(engine=engine)):
        _say(line)
    for result in held_out_accuracy(engine=engine, labels_csv=held_out):
        _say(
            f"predictions on the {result.pictures:,} unlabelled pictures whose true {result.attribute} "
            f"was kept aside: accuracy {result.accuracy:.3f} ({result.accuracy_on_known:.3f} on "
            f"the {result.known:,} whose class the model learnt)"
        )
    _say(f"demo finished in {time.perf_counter() - started:.0f}s")
    _say("")
    _say("next:")
    airflow = next(s for s in statuses if s.name == "airflow")
    if airflow.healthy:
        _say(f"  Airflow UI   {airflow.url}  ({airflow.detail}): DAGs collect_posts, relabel, "
             "retrain_models, predict_catalogue")  # fmt: skip
    _say(
        '  SQL          .venv/bin/catalogue sql "SELECT category, colour, count(*) FROM '
        'marketplace.products GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10"'
    )
    _say("  review       .venv/bin/catalogue review --limit 20")
    _say("  models       .venv/bin/catalogue models list")
    _say("  report       .venv/bin/catalogue report")
    _say("  stop         .venv/bin/catalogue down")
    return EXIT_OK


def _split_labels(archive, share: float):
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


def _demo_retrain(args: argparse.Namespace, settings: Settings, engine) -> None:
    from pipeline.storage import ObjectStore
    from pipeline.train import registry
    from pipeline.train.fit import TrainOptions
    from pipeline.train.retrain import retrain
    from pipeline.train.snapshot import SnapshotOptions, snapshot_dataset

    # a small demo cannot give every class CATALOGUE_TRAIN_MIN_EXAMPLES examples
    training_pictures = args.size * args.labelled_share * 0.8
    options = SnapshotOptions(
        min_examples=max(3, min(settings.train_min_examples, int(training_pictures / 60)))
    )
    snapshot = snapshot_dataset(engine=engine, store=ObjectStore.for_models(settings),
                                options=options, created_by="demo")  # fmt: skip
    champions = [registry.champion(engine, a) for a in options.attributes]
    if all(c is not None and c.snapshot_id == snapshot.id for c in champions):
        _say(f"the champions were trained on this snapshot ({snapshot.id}) already: "
             f"{', '.join(c.version for c in champions)}")  # fmt: skip
        return
    for attribute, spec in snapshot.attributes.items():
        _say(f"  {attribute}: {len(spec['classes'])} classes at the '{spec['level']}' level; "
             f"{len(spec['left_out'])} left out with fewer than {options.min_examples} examples")  # fmt: skip
    from pipeline.train.progress import ProgressPrinter

    network = args.network or settings.train_network
    progress = ProgressPrinter(sys.stdout)
    try:
        outcome = retrain(
            settings=settings, engine=engine, snapshot_options=options,
            train_options=TrainOptions.from_settings(settings, architecture=network,
                                                     epochs=args.epochs),
            separate_models=False, gate=registry.GateOptions.from_settings(settings),
            who="demo", progress=progress,
        )  # fmt: skip
    finally:
        progress.close()
    _say(f"trained in {outcome.seconds:.0f}s")
    for decision in outcome.decisions:
        verdict = "champion" if decision.promoted else "stays candidate"
        _say(f"  {decision.version}: {verdict}: {decision.reason}")


def _demo_predict(settings: Settings, engine) -> None:
    from pipeline.predict.batch import PredictOptions, predict_catalogue
    from pipeline.storage import ObjectStore
    from pipeline.train.retrain import artefact_cache

    shown = {"at": 0.0}

    def progress(run) -> None:
        if run.seconds - shown["at"] >= 5:
            shown["at"] = run.seconds
            _say(f"  {run.images:,}/{run.planned:,} pictures scored")

    run = predict_catalogue(
        engine=engine, images=ObjectStore.for_images(settings),
        models=ObjectStore.for_models(settings), cache_dir=artefact_cache(settings),
        options=PredictOptions.from_settings(settings),
        progress=progress,
    )  # fmt: skip
    if run.planned == 0:
        _say(f"every picture was scored by {', '.join(run.champions)} already")
    else:
        _say(f"scored {run.images:,} pictures with {', '.join(run.champions)} in "
             f"{run.seconds:.1f}s; {run.needs_review:,} of {run.predictions:,} predictions are unsure")  # fmt: skip


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine
    from pipeline.report import catalogue_report, report_lines

    settings = load_settings()
    for line in report_lines(catalogue_report(engine=get_engine(settings.database_url))):
        _say(line)
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    """Run SQL against the catalogue and print the rows (analysts' quick look)."""
    from sqlalchemy import text

    from pipeline.db import get_engine

    settings = load_settings()
    with get_engine(settings.database_url).connect() as connection:
        result = connection.execute(text(args.query))
        if result.returns_rows:  # tab-separated; each cell escaped on its own
            print("\t".join(map(printable, result.keys())), flush=True)
            for row in result:
                print("\t".join("" if v is None else printable(v) for v in row), flush=True)
    return EXIT_OK


# -- wiring ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catalogue",
        description=(
            "Collect Instagram business accounts' posts into a fashion catalogue labelled by "
            "colour and category. Configuration comes from CATALOGUE_* environment variables "
            "(see .env.example); without CATALOGUE_DATABASE_URL / CATALOGUE_S3_ENDPOINT the "
            "local stack (`catalogue up`) provides Postgres and S3."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    up = add(
        "up",
        cmd_up,
        "Start the local stack: Postgres (embedded unless CATALOGUE_DATABASE_URL is set), "
        "SeaweedFS's S3 server (unless CATALOGUE_S3_ENDPOINT is set) and Airflow standalone; "
        "migrate the catalogue and create the buckets. Safe to run again.",
    )
    up.add_argument("--no-airflow", action="store_true", help="start only Postgres and S3")
    add("down", cmd_down, "Stop what `catalogue up` started; configured services are left alone.")
    add("status", cmd_status, "Show each local service, its URL and whether it is healthy.")

    db = add("db", cmd_db, "Apply or revert schema migrations (Alembic).")
    db.add_argument("action", choices=("upgrade", "downgrade", "current"))
    db.add_argument(
        "revision",
        nargs="?",
        help="target revision (upgrade: default head; downgrade: required, e.g. base or -1)",
    )
    buckets = add("buckets", cmd_buckets, "Create the S3 buckets unless they exist.")
    buckets.add_argument("action", choices=("create",))
    accounts = add("accounts", cmd_accounts, "Manage the Instagram accounts that are collected.")
    accounts.add_argument("action", choices=("add", "list", "enable", "disable", "remove"))
    accounts.add_argument(
        "usernames", nargs="*", metavar="USERNAME", help="username, @username or profile URL"
    )
    accounts.add_argument(
        "--allow-personal",
        action="store_true",
        help="with add: collect it even if it is not a business account",
    )
    collect = add(
        "collect",
        cmd_collect,
        "Collect the new posts of enabled accounts from Instagram, one account at a time, "
        "through instaloader; anonymous unless CATALOGUE_INSTAGRAM_SESSION_FILE is set.",
    )
    collect.add_argument("accounts", nargs="*", metavar="ACCOUNT", help="default: every enabled")
    collect.add_argument(
        "--max-posts",
        type=int,
        help="new posts per account this run; the rest is backfilled next runs",
    )
    collect.add_argument("--since", help="backfill no further back than this date (YYYY-MM-DD)")
    collect.add_argument(
        "--refresh-days",
        type=int,
        default=3,
        help="refresh likes/comments and notice deletions this far back (3)",
    )
    archive = add(
        "import-archive",
        cmd_import_archive,
        "Import folders written by instaloader (<profile>/<date>_UTC.json.xz + pictures) exactly "
        "as live collection stores posts. Safe to rerun: it completes an interrupted import and "
        "duplicates nothing.",
    )
    archive.add_argument("folder", help="a folder of profile folders, or one profile folder")
    archive.add_argument(
        "--workers",
        type=int,
        default=16,
        help="threads that upload pictures and write rows (default 16); pictures are checked "
        "on one thread per core",
    )
    archive.add_argument(
        "--enable",
        action="store_true",
        help="enable new accounts for live collection (default: disabled)",
    )
    archive.add_argument(
        "--allow-personal", action="store_true", help="import personal (non-business) accounts too"
    )
    purge = add(
        "purge",
        cmd_purge,
        "Takedown: delete an account's (or one post's) rows and pictures, leaving an audit "
        "record in raw.purges.",
    )
    purge.add_argument("target", metavar="ACCOUNT|SHORTCODE")
    purge.add_argument("--reason", help="why (e.g. the takedown request's reference)")
    samples = add(
        "samples",
        cmd_samples,
        "Write sample business accounts in instaloader's archive format from the fashion "
        "product photos (CATALOGUE_DATASET_DIR): one account per brand; or, with --source "
        "clothing-photos, from the real clothing photos (CATALOGUE_CLOTHING_PHOTOS_DIR): one "
        "account per person who took them, each photo at its own size, its garment as category.",
    )
    samples.add_argument("out", help="folder to write the archive to")
    samples.add_argument(
        "--source",
        choices=("fashion-products", "clothing-photos"),
        default="fashion-products",
        help="which photos (default: fashion-products)",
    )
    samples.add_argument("--size", type=int, help="number of photos (default: all)")
    samples.add_argument("--people", type=int, help="clothing-photos: number of persons (accounts)")
    samples.add_argument("--seed", type=int, default=7)
    samples.add_argument("--image-size", help="re-encode pictures to WIDTHxHEIGHT, e.g. 1080x1350")
    samples.add_argument(
        "--dataset",
        help="dataset folder (default: CATALOGUE_DATASET_DIR, or CATALOGUE_CLOTHING_PHOTOS_DIR)",
    )
    taxonomy = add(
        "taxonomy",
        cmd_taxonomy,
        "Show the taxonomy (attributes, values, groupings, aliases) or sync a YAML file into "
        "the database (default: CATALOGUE_TAXONOMY_FILE, else the shipped default).",
    )
    taxonomy.add_argument("action", choices=("show", "sync"))
    taxonomy.add_argument("file", nargs="?", help="sync: the YAML file")
    taxonomy.add_argument("--attribute", help="show: only this attribute")
    labels = add(
        "labels",
        cmd_labels,
        "Moderators' labels. import FILE: the label CSV (shortcode,position,colour,category,"
        "moderator,note); every row is validated first and refused rows are listed with their "
        "line; the rest is applied in one transaction. export: current labels as that CSV. "
        "rename/move/clear: recorded relabel jobs (try --dry-run first). undo JOB: restore what "
        "a job replaced. jobs: recent jobs. history SHORTCODE [POSITION]: every label ever given.",
    )
    labels.add_argument(
        "action", choices=("import", "export", "rename", "move", "clear", "undo", "jobs", "history")
    )
    labels.add_argument(
        "subject", nargs="?", help="import: the CSV file; undo: the job id; history: a shortcode"
    )
    labels.add_argument(
        "--strict", action="store_true", help="import: nothing unless every row is valid"
    )
    labels.add_argument(
        "--dry-run", action="store_true", help="count and show a sample, change nothing"
    )
    labels.add_argument("--out", help="export: file to write (default: standard output)")
    labels.add_argument("--attribute", help="the attribute (colour, category, ...)")
    labels.add_argument("--from", dest="from_values", action="append", metavar="VALUE",
                        help="rename: a value to rename (repeat to merge several)")  # fmt: skip
    labels.add_argument("--to", help="rename/move: the new value")
    labels.add_argument("--account", help="filter: the images of this account")
    labels.add_argument("--value", action="append", metavar="VALUE",
                        help="filter: images currently labelled so (repeatable)")  # fmt: skip
    labels.add_argument("--predicted", action="append", metavar="VALUE",
                        help="filter: images the model calls so (repeatable)")  # fmt: skip
    labels.add_argument("--shortcode", action="append", help="filter: these posts (repeatable)")
    labels.add_argument("--since", help="filter: posted (export: labelled) on or after YYYY-MM-DD")
    labels.add_argument("--until", help="filter: posted (export: labelled) on or before YYYY-MM-DD")
    labels.add_argument("--note", help="rename/move/clear: a note stored with every label")
    labels.add_argument("--position", type=int, help="history: only this image of the post")
    labels.add_argument("--limit", type=int, default=20, help="jobs: how many (20)")
    review = add(
        "review",
        cmd_review,
        "The images that most need a moderator, best first: (1) no label and the model unsure "
        "(smallest margin between its top two classes), (2) the model disagrees with the label "
        "(most confident first), (3) new accounts nobody has labelled, (4) other unlabelled "
        "images. --out writes the label CSV to fill in and import, with a time-limited link to "
        "each picture and the model's top suggestions.",
    )
    review.add_argument("--limit", type=int, default=100, help="how many images (100)")
    review.add_argument("--attribute", help="only this attribute (default: every attribute)")
    review.add_argument("--out", help="write the CSV here instead of listing")

    def training_arguments(sub, *, train: bool) -> None:
        sub.add_argument(
            "--attribute", action="append", help="colour, category... (repeatable; default both)"
        )
        sub.add_argument(
            "--min-examples",
            type=int,
            help="training examples a class needs (CATALOGUE_TRAIN_MIN_EXAMPLES)",
        )
        sub.add_argument(
            "--level",
            action="append",
            metavar="ATTRIBUTE=LEVEL",
            help="train at this taxonomy level, e.g. colour=colour (exact) or category=type",
        )
        sub.add_argument(
            "--only",
            action="append",
            metavar="ATTRIBUTE=V1,V2",
            help="keep only these classes, e.g. the 8 article types of the seed study",
        )
        sub.add_argument(
            "--group-by",
            choices=("post", "account"),
            default="post",
            help="keep each post's (default) or each account's pictures in one split",
        )
        if train:
            sub.add_argument(
                "--network",
                help="the network (default: CATALOGUE_TRAIN_NETWORK, mobilenet_v2_050 unless "
                "configured): mobilenet_v2_035/_050/_100, efficientnet_lite0, catalogue_net, "
                "compact_80x60, colour_cnn11, category_cnn10",
            )
            sub.add_argument("--epochs", type=int, help="epochs (CATALOGUE_TRAIN_EPOCHS)")
            sub.add_argument("--batch-size", type=int, default=64)
            sub.add_argument("--steps", type=int, help="cap the steps per epoch (quick trials)")
            sub.add_argument(
                "--separate",
                action="store_true",
                help="one network per attribute instead of one with a head each (the default)",
            )
            sub.add_argument(
                "--from-export",
                metavar="FILE",
                help="train on a training export alone (no database, no S3)",
            )
            sub.add_argument("--out", help="with --from-export: the artefact folder to write")
            sub.add_argument("--image-size", help="HEIGHTxWIDTH instead of the network's")
            sub.add_argument("--initial-weights", help="start from this local .weights.h5/.keras "
                             "file (CATALOGUE_TRAIN_INITIAL_WEIGHTS)")  # fmt: skip

    snapshot = add(
        "snapshot",
        cmd_snapshot,
        "Turn the current labels into a dataset snapshot: classes at the taxonomy's training level "
        "with enough examples (the rest reported), train/validation/test split by a hash of each "
        "post's id (a post never changes split); the manifest goes to the models bucket.",
    )
    snapshot.add_argument("action", nargs="?", choices=("export",),
                          help="export: write the snapshot as one training file (--out)")  # fmt: skip
    snapshot.add_argument("--id", type=int, help="an existing snapshot (default: make one now)")
    snapshot.add_argument("--out", help="export: the .npz file to write")
    snapshot.add_argument(
        "--network", help="export: resize for this network (default: CATALOGUE_TRAIN_NETWORK)"
    )
    snapshot.add_argument("--image-size", help="export: HEIGHTxWIDTH instead of the network's")
    training_arguments(snapshot, train=False)
    train = add(
        "train",
        cmd_train,
        "Retrain: snapshot the labels, train a network per attribute, measure it on the test split, "
        "register it, and promote it when it beats the champion (CATALOGUE_PROMOTION_*).",
    )
    training_arguments(train, train=True)
    models = add(
        "models",
        cmd_models,
        "The model registry: list [ATTRIBUTE]; promote VERSION (by hand); rollback ATTRIBUTE (the "
        "previous champion takes over); register FOLDER (an artefact trained from an export).",
    )
    models.add_argument("action", choices=("list", "promote", "rollback", "register"))
    models.add_argument("target", nargs="?", metavar="VERSION|ATTRIBUTE|FOLDER")
    predict = add(
        "predict",
        cmd_predict,
        "Score the images the champion models have not scored yet (new images, or every image "
        "after a promotion) and write colour and category to marketplace.products; a moderator's "
        "label is never overwritten. Safe to rerun: an interrupted run finishes the rest.",
    )
    predict.add_argument(
        "--attribute", action="append", help="only this attribute (repeatable; default: all)"
    )
    predict.add_argument("--all", action="store_true", help="rescore images already scored")
    predict.add_argument("--limit", type=int, help="score at most this many images")
    predict.add_argument("--shard", metavar="I/N", help="only the images whose id %% N == I")
    predict.add_argument("--batch-size", type=int, help="pictures per model call "
                         "(CATALOGUE_PREDICT_BATCH_SIZE)")  # fmt: skip
    predict.add_argument("--workers", type=int, help="fetch and decode threads "
                         "(CATALOGUE_PREDICT_WORKERS)")  # fmt: skip
    add("check", cmd_check, "Check that the database and the S3 buckets answer.")
    demo = add(
        "demo",
        cmd_demo,
        "Run the product end to end on embedded defaults: start the stack, generate sample "
        "business accounts from the fashion product photos, import them and their colour and "
        "category labels for part of them, retrain, promote, predict every picture, and report "
        "(with the accuracy on the pictures whose labels were kept aside).",
    )
    demo.add_argument("--no-airflow", action="store_true", help="skip Airflow")
    demo.add_argument("--size", type=int, default=DEMO_SIZE,
                      help=f"product photos to use (default {DEMO_SIZE:,})")  # fmt: skip
    demo.add_argument("--labelled-share", type=float, default=0.7,
                      help="share of the posts the moderators label (default 0.7)")  # fmt: skip
    demo.add_argument("--network", help="the network to train (default: CATALOGUE_TRAIN_NETWORK, "
                      "mobilenet_v2_050 unless configured)")  # fmt: skip
    demo.add_argument("--epochs", type=int,
                      help="training epochs (default: CATALOGUE_TRAIN_EPOCHS, 10)")  # fmt: skip
    add("report", cmd_report, "What the catalogue holds: counts, the labelled share, where each "
        "shown value comes from, pictures that need review, the champions' test metrics next to "
        "the seed baselines.")  # fmt: skip
    sql = add("sql", cmd_sql, "Run one SQL statement against the catalogue and print the rows.")
    sql.add_argument("query")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler]
    )
    if not args.verbose:  # retries are reported once, in the final error, not per attempt
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        if args.handler in (cmd_train, cmd_predict, cmd_demo, cmd_models, cmd_snapshot):
            from pipeline.train.quiet_start import start_quietly

            start_quietly()  # TensorFlow's C++ start-up notices read as errors to a newcomer
        return args.handler(args)
    except ConfigError as exc:
        _complain(f"configuration error: {exc}")
        return EXIT_CONFIG
    except CatalogueError as exc:  # a user's mistake or a service down, said in one line
        _complain(exc)
        return EXIT_FAILED
    except (FileNotFoundError, FileExistsError) as exc:
        _complain(exc)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # a TrainingInterrupted says what was kept
        from pipeline.train.errors import TrainingInterrupted

        _complain(str(exc) or "interrupted")
        if isinstance(exc, TrainingInterrupted):
            # Keras's batch threads and TensorFlow's generator threads are still running: tearing
            # the interpreter down under them can crash (a segfault instead of exit code 130),
            # and nothing is left to save
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:  # `catalogue accounts list | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a fault of ours: one escaped line; the traceback with --verbose
        log.debug("unexpected error", exc_info=True)
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        _complain(
            f"unexpected error ({type(exc).__name__}): {first_line}. "
            "Run it again with --verbose for the traceback, and report it"
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

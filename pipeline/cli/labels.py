"""Moderation: the taxonomy, the labels (import, export, relabel jobs, undo, history), review."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipeline.cli.args import AddCommand, a_date, sub_commands
from pipeline.cli.output import EXIT_FAILED, EXIT_OK, say
from pipeline.config import Settings, load_settings
from pipeline.db import get_engine

if TYPE_CHECKING:
    from pipeline.labels.history import Who
    from pipeline.labels.jobs import JobOutcome, Selection

LABELS_HELP = (
    "Moderators' labels. import FILE: the label CSV (shortcode,position,colour,category,"
    "moderator,note); every row is validated first and refused rows are listed with their "
    "line; the rest is applied in one transaction. export: current labels as that CSV. "
    "rename/move/clear: recorded relabel jobs (try --dry-run first; move --like SHORTCODE "
    "relabels a picture's near-duplicates). undo JOB: restore what "
    "a job replaced. jobs: recent jobs. history SHORTCODE [--position N]: every label ever given."
)


def _who(settings: Settings) -> Who:
    from pipeline.labels.history import Who

    return Who(name=settings.moderator, origin="cli")


def _announce(settings: Settings, job_id: int | None, written: int) -> None:
    if not job_id or not written:
        return
    from pipeline.labels.announce import announce_labels_changed

    say("  " + announce_labels_changed(settings=settings, job_id=job_id, labels_written=written))


# -- taxonomy ---------------------------------------------------------------------------------------
def cmd_taxonomy_show(args: argparse.Namespace) -> int:
    from pipeline.labels.taxonomy import taxonomy_from_database

    with get_engine(load_settings().database_url).connect() as connection:
        taxonomy = taxonomy_from_database(connection)
    names = [args.attribute] if args.attribute else list(taxonomy.attributes)
    for name in names:
        attribute = taxonomy.attribute(name)
        say(
            f"{name}: levels {' > '.join(attribute.levels)}, trained at {attribute.train_at} "
            f"({len(attribute.training_classes())} classes), {len(attribute.values)} values"
        )
        for value in attribute.values.values():
            say("  " + "  " * (value.depth - 1) + value.name)
        if attribute.aliases:
            say("  aliases: " + ", ".join(f"{a} -> {v}" for a, v in attribute.aliases.items()))
    return EXIT_OK


def cmd_taxonomy_sync(args: argparse.Namespace) -> int:
    from pipeline.labels.taxonomy import load_taxonomy, sync_taxonomy

    settings = load_settings()
    taxonomy = load_taxonomy(args.file or settings.taxonomy_file)
    with get_engine(settings.database_url).begin() as connection:
        outcome = sync_taxonomy(connection=connection, taxonomy=taxonomy)
    say(
        f"taxonomy '{taxonomy.name}' from {taxonomy.source}: version {outcome.version_id}"
        f"{' (new)' if outcome.created else ' (already loaded)'}, {outcome.values_added} "
        f"values added or changed, {outcome.values_retired} retired"
    )
    return EXIT_OK


# -- labels -----------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from pipeline.labels.label_csv import format_report, import_labels

    settings = load_settings()
    report = import_labels(
        args.file,
        engine=get_engine(settings.database_url),
        who=_who(settings),
        strict=args.strict,
        dry_run=args.dry_run,
    )
    for line in format_report(report):
        say(line)
    _announce(settings, report.job_id, report.written)
    return EXIT_FAILED if report.refused and args.strict else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.labels.label_csv import export_labels

    options = dict(
        engine=get_engine(load_settings().database_url),
        account=args.account,
        attribute=args.attribute,
        value=args.value,
        since=a_date(args.since, "--since"),
        until=a_date(args.until, "--until"),
    )
    if args.out in (None, "-"):
        export_labels(sys.stdout, **options)
        return EXIT_OK
    with open(args.out, "w", encoding="utf-8", newline="") as out:
        count = export_labels(out, **options)
    say(f"wrote {count} images' labels to {args.out}")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    from pipeline.labels import jobs

    for job in jobs.list_jobs(engine=get_engine(load_settings().database_url), limit=args.limit):
        state = f"undone by {job.undone_by}" if job.undone_by else ""
        say(
            f"{job.id:>6} {job.kind:<9} {job.labels_written:>7} labels  "
            f"{job.created_at:%Y-%m-%d %H:%M}  {job.created_by} ({job.origin})  {state}"
        )
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from pipeline.labels.history import label_history

    rows = label_history(
        engine=get_engine(load_settings().database_url),
        shortcode=args.shortcode,
        position=args.position,
    )
    if not rows:
        say(f"no labels for {args.shortcode}")
    for r in rows:
        say(
            f"{r.id:>8} {args.shortcode}/{r.position} {r.attribute:<10} "
            f"{r.value or '(cleared)':<20} {r.source:<9} {r.moderator} (by {r.created_by}) "
            f"{r.created_at:%Y-%m-%d %H:%M} job {r.job_id}"
            + (f" replaces {r.replaces_label_id}" if r.replaces_label_id else "")
            + (f"  note: {r.note}" if r.note else "")
        )
    return EXIT_OK


def cmd_undo(args: argparse.Namespace) -> int:
    from pipeline.labels import jobs

    settings = load_settings()
    outcome = jobs.undo_job(
        engine=get_engine(settings.database_url),
        job_id=args.job,
        who=_who(settings),
        dry_run=args.dry_run,
    )
    return _said(settings, outcome)


def cmd_rename(args: argparse.Namespace) -> int:
    return _run_job(args, to=args.to, from_values=args.from_values)


def cmd_move(args: argparse.Namespace) -> int:
    return _run_job(args, to=args.to, selection=_selection(args))


def cmd_clear(args: argparse.Namespace) -> int:
    return _run_job(args, selection=_selection(args))


def _selection(args: argparse.Namespace) -> Selection:
    from pipeline.labels.jobs import Selection

    return Selection(
        account=args.account,
        value=args.value or [],
        predicted=args.predicted or [],
        shortcodes=args.shortcode or [],
        since=a_date(args.since, "--since"),
        until=a_date(args.until, "--until"),
        like=args.like,
    )


def _run_job(
    args: argparse.Namespace,
    *,
    to: str | None = None,
    from_values: list[str] | None = None,
    selection: Selection | None = None,
) -> int:
    """rename, move and clear: one recorded job each."""
    from pipeline.labels import jobs

    settings = load_settings()
    outcome = jobs.run_job(
        engine=get_engine(settings.database_url),
        kind=args.action,
        attribute=args.attribute,
        who=_who(settings),
        to=to,
        from_values=from_values,
        selection=selection,
        dry_run=args.dry_run,
        note=args.note,
    )
    return _said(settings, outcome)


def _said(settings: Settings, outcome: JobOutcome) -> int:
    verb = "would change" if outcome.dry_run else "changed"
    skipped = f", {outcome.skipped} skipped (changed since the job)" if outcome.skipped else ""
    undo = (
        f" (job {outcome.job_id}; undo: catalogue labels undo {outcome.job_id})"
        if outcome.job_id
        else ""
    )
    say(f"{outcome.kind}: {verb} {outcome.images} labels{skipped}{undo}")
    for row in outcome.sample:
        say(f"  {row['shortcode']}/{row['position']}: {row['before']} -> {row['after']}")
    if not outcome.dry_run:
        _announce(settings, outcome.job_id, outcome.images)
    return EXIT_OK


# -- review -----------------------------------------------------------------------------------------
def cmd_review(args: argparse.Namespace) -> int:
    from pipeline.labels.review import review_queue, write_review_csv
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    items = review_queue(engine=engine, limit=args.limit, attribute=args.attribute)
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            write_review_csv(out, items, engine=engine, store=ObjectStore.for_images(settings))
        say(
            f"wrote {len(items)} images to review to {args.out}; fill in and "
            f"`catalogue labels import {args.out}`"
        )
        return EXIT_OK
    for item in items:
        suggestions = "; ".join(
            f"{a}: " + ", ".join(f"{s['value']} {float(s['confidence']):.2f}" for s in top[:3])
            for a, top in item.suggestions.items()
        )
        say(f"{item.shortcode}/{item.position} {item.account:<24} {item.reason:<32} {suggestions}")
    return EXIT_OK


# -- wiring -----------------------------------------------------------------------------------------
def _dry_run(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--dry-run", action="store_true", help="count and show a sample, change nothing"
    )


def _filters(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--account", help="filter: the images of this account")
    sub.add_argument(
        "--value",
        action="append",
        metavar="VALUE",
        help="filter: images currently labelled so (repeatable)",
    )
    sub.add_argument(
        "--predicted",
        action="append",
        metavar="VALUE",
        help="filter: images the model calls so (repeatable)",
    )
    sub.add_argument("--shortcode", action="append", help="filter: these posts (repeatable)")
    sub.add_argument("--since", help="filter: posted on or after YYYY-MM-DD")
    sub.add_argument("--until", help="filter: posted on or before YYYY-MM-DD")
    sub.add_argument(
        "--like",
        metavar="SHORTCODE[/POSITION]",
        help="filter: the near-duplicates of this picture (its duplicate group, itself included)",
    )


def _job_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--attribute", required=True, help="the attribute (colour, category, ...)")
    sub.add_argument("--note", help="a note stored with every label")
    _dry_run(sub)


def add_commands(add: AddCommand) -> None:
    taxonomy = sub_commands(
        add(
            "taxonomy",
            None,
            "Show the taxonomy (attributes, values, groupings, aliases) or sync a YAML file into "
            "the database (default: CATALOGUE_TAXONOMY_FILE, else the shipped default).",
        )
    )
    show = taxonomy("show", cmd_taxonomy_show, "The taxonomy the database holds.")
    show.add_argument("--attribute", help="only this attribute")
    sync = taxonomy("sync", cmd_taxonomy_sync, "Load a taxonomy YAML file into the database.")
    sync.add_argument(
        "file", nargs="?", help="the YAML file (default: CATALOGUE_TAXONOMY_FILE, else the shipped)"
    )

    action = sub_commands(add("labels", None, LABELS_HELP))
    imported = action(
        "import",
        cmd_import,
        "Import a label CSV (shortcode,position,colour,category,moderator,note): every row is "
        "validated first and refused rows are listed with their line; the rest is applied in "
        "one transaction.",
    )
    imported.add_argument("file", metavar="FILE", help="the CSV file")
    imported.add_argument("--strict", action="store_true", help="nothing unless every row is valid")
    _dry_run(imported)
    export = action("export", cmd_export, "Current labels as the label CSV.")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.add_argument("--attribute", help="only this attribute's labels")
    export.add_argument("--value", help="only images labelled so (with --attribute)")
    export.add_argument("--account", help="only the images of this account")
    export.add_argument("--since", help="labelled on or after YYYY-MM-DD")
    export.add_argument("--until", help="labelled on or before YYYY-MM-DD")

    rename = action(
        "rename",
        cmd_rename,
        "A recorded job: every image labelled with a --from value gets the --to value.",
    )
    _job_arguments(rename)
    rename.add_argument(
        "--from",
        dest="from_values",
        action="append",
        required=True,
        metavar="VALUE",
        help="a value to rename (repeat to merge several)",
    )
    rename.add_argument("--to", required=True, help="the new value")
    move = action(
        "move",
        cmd_move,
        "A recorded job: the images the filters select get the --to value.",
    )
    _job_arguments(move)
    move.add_argument("--to", required=True, help="the new value")
    _filters(move)
    clear = action(
        "clear", cmd_clear, "A recorded job: the images the filters select lose the label."
    )
    _job_arguments(clear)
    _filters(clear)

    undo = action("undo", cmd_undo, "Restore what a job replaced, where nothing changed since.")
    undo.add_argument("job", type=int, metavar="JOB", help="the job's number (`labels jobs`)")
    _dry_run(undo)
    listed = action("jobs", cmd_jobs, "The recent label jobs.")
    listed.add_argument("--limit", type=int, default=20, help="how many (20)")
    history = action("history", cmd_history, "Every label a post's images were ever given.")
    history.add_argument("shortcode", metavar="SHORTCODE", help="the post")
    history.add_argument("--position", type=int, help="only this image of the post")

    review = add(
        "review",
        cmd_review,
        "The images that most need a moderator, best first: (0) a near-duplicate (same "
        "duplicate group) was labelled otherwise, named in the row; (1) no label and the model "
        "unsure (smallest margin between its top two classes), (2) the model disagrees with the "
        "label "
        "(most confident first), (3) new accounts nobody has labelled, (4) other unlabelled "
        "images. --out writes the label CSV to fill in and import, with a time-limited link to "
        "each picture and the model's top suggestions.",
    )
    review.add_argument("--limit", type=int, default=100, help="how many images (100)")
    review.add_argument("--attribute", help="only this attribute (default: every attribute)")
    review.add_argument("--out", help="write the CSV here instead of listing")

"""Posts in: live collection, archive import, takedown (purge), and sample archives."""

from __future__ import annotations

import argparse

from pipeline.cli.args import IMAGE_SIZE_HELP, AddCommand, UsageError, a_date, image_size
from pipeline.cli.output import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, complain, say
from pipeline.config import Settings, load_settings


def cmd_collect(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, time

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
    since = a_date(args.since, "--since")
    options = CollectOptions(
        max_posts=args.max_posts,
        since=datetime.combine(since, time(), tzinfo=UTC) if since else None,
        refresh_days=args.refresh_days,
    )
    loader = make_loader(
        engine=engine,
        session_file=settings.instagram_session_file,
        username=settings.instagram_username,
        sleep=settings.instagram_pauses,
    )
    accounts = enabled_accounts(engine, args.accounts)
    if not accounts:
        say("no enabled accounts: `catalogue accounts add USERNAME`")
    failed = 0
    for name in accounts:  # one at a time: never two accounts at once against Instagram
        run = collect_account(
            engine=engine, store=store, loader=loader, username=name, options=options
        )
        line = (
            f"{name}: {run.status}, {run.posts_new} new posts, {run.posts_refreshed} refreshed, "
            f"{run.images_new} new images, {run.quarantined} quarantined"
        )
        if run.backfill_pending:
            line += ", backfill continues next run"
        if run.reason:
            line += f" ({run.reason})"
        say(line)
        failed += int(run.status in ("blocked", "failing"))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_import_archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.collect.archive import import_archive
    from pipeline.db import get_engine
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    store = ObjectStore.for_images(settings)
    store.check()
    summary = import_archive(
        Path(args.folder),
        engine=engine,
        store=store,
        workers=args.workers,
        enable_accounts=args.enable,
        allow_personal=args.allow_personal,
        progress=lambda s: say(f"  {s.posts_seen} posts, {s.images_new} new images"),
    )
    say(
        f"imported {len(summary.accounts)} accounts: {summary.posts_seen} posts "
        f"({summary.posts_new} new, {summary.posts_updated} updated, "
        f"{summary.posts_unchanged} unchanged, {summary.posts_refused} refused; "
        f"{summary.posts_cleaned} with text cleaned), {summary.images_new} new images, "
        f"{summary.objects_written} objects written, {summary.quarantined} quarantined, "
        f"in {summary.seconds:.1f}s"
    )
    for name, reason in summary.skipped_accounts.items():
        say(f"  skipped {name}: {reason}")
    if summary.quarantined:
        say("  refused inputs and their reasons: the table raw.quarantine (docs/operations.md)")
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
    say(
        f"purged {outcome.target_kind} {outcome.target}: {outcome.posts} posts, "
        f"{outcome.images} images, {outcome.objects_deleted} objects deleted "
        "(audit record in raw.purges)"
    )
    return EXIT_OK


def cmd_samples(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.labels.taxonomy import load_taxonomy
    from pipeline.samples import generate_clothing_accounts, generate_sample_accounts

    settings = Settings.from_env()
    clothing = args.source == "clothing-photos"
    if clothing and args.image_size:
        raise UsageError("--image-size: the clothing photos keep their own size and aspect")
    if clothing and args.video_share is not None:
        raise UsageError("--video-share: the clothing photos are photos, never videos")
    if args.people is not None and not clothing:
        raise UsageError("--people: only with --source clothing-photos (one account per person)")
    size = image_size(args.image_size)
    shares = {"carousel_share": args.carousel_share, "video_share": args.video_share}
    try:
        if clothing:
            summary = generate_clothing_accounts(
                Path(args.dataset or settings.clothing_photos_dir),
                Path(args.out),
                people=args.people,
                size=args.size,
                seed=args.seed,
                taxonomy=load_taxonomy(settings.taxonomy_file),
                **{k: v for k, v in shares.items() if v is not None},
            )
        else:
            summary = generate_sample_accounts(
                Path(args.dataset or settings.dataset_dir),
                Path(args.out),
                size=args.size,
                seed=args.seed,
                image_size=(size[1], size[0]) if size else None,  # PIL's (width, height)
                taxonomy=load_taxonomy(settings.taxonomy_file),
                **{k: v for k, v in shares.items() if v is not None},
            )
    except ValueError as exc:  # bad size or share, unexpected styles.csv/images.csv header
        complain(exc)
        return EXIT_CONFIG
    left_out = (
        f"; {summary.values_left_out} colours and categories the taxonomy does not know left "
        "out of labels.csv"
    )
    non_garments = (
        f"; {summary.non_garments} photos labelled Not sure, Other or Skip have no category"
    )
    say(
        f"wrote {summary.accounts} sample business accounts to {summary.out_dir}: "
        f"{summary.posts} posts ({summary.carousels} carousels, {summary.videos} videos), "
        f"{summary.images} images"
        + (left_out if summary.values_left_out else "")
        + (non_garments if summary.non_garments else "")
    )
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
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
    samples.add_argument("--image-size", help=f"re-encode pictures to {IMAGE_SIZE_HELP}")
    samples.add_argument(
        "--dataset",
        help="dataset folder (default: CATALOGUE_DATASET_DIR, or CATALOGUE_CLOTHING_PHOTOS_DIR)",
    )
    samples.add_argument(
        "--carousel-share",
        type=float,
        help="share of posts that are carousels (default 0.15; clothing-photos: 0)",
    )
    samples.add_argument(
        "--video-share",
        type=float,
        help="fashion-products: share of posts that are videos (default 0.02)",
    )

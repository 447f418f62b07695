"""`catalogue duplicates`: listings that show the same product."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand, UsageError
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings


def cmd_duplicates(args: argparse.Namespace) -> int:
    """Refresh the groups when asked, then list them, largest first."""
    from pipeline.db import get_engine
    from pipeline.similar.duplicates import duplicate_listings

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a number of groups from 1")
    account = args.account.lstrip("@") if args.account else None
    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.refresh or args.regroup:
        refresh(engine, settings, regroup=args.regroup)
    found = duplicate_listings(engine, account=account, limit=args.limit)
    if not found.total:
        if account:
            say(f"no duplicate listings with @{account}")
        elif found.checked:
            say("no duplicate listings: no two catalogued pictures show the same product")
        else:
            say(
                "no duplicate listings found yet: pictures are grouped after `catalogue predict` "
                "(or run `catalogue duplicates --refresh`)"
            )
        return EXIT_OK
    scope = f" with @{account}" if account else ""
    shown = len(found.largest)
    say(
        f"{found.total:,} group{'s' if found.total != 1 else ''} of duplicate listings{scope}"
        + (f", the {shown} largest:" if shown < found.total else ":")
    )
    for group in found.largest:
        say(
            f"group {group.group_id}: {group.listings} listings by {group.accounts} "
            f"account{'s' if group.accounts != 1 else ''} ({group.category or 'no category'})"
        )
        for account_name, shortcode, position in group.pictures:
            say(f"  @{account_name}  {shortcode}/{position}")
    return EXIT_OK


def refresh(engine, settings, *, regroup: bool = False) -> None:
    """Group the pictures embedded since the last refresh (every picture with `regroup`),
    saying what was found."""
    from pipeline.similar.duplicates import DuplicateOptions, refresh_duplicates

    run = refresh_duplicates(
        engine,
        options=DuplicateOptions.from_settings(settings, regroup=regroup),
        progress=lambda r: say(f"  {r.checked:,} pictures checked, {r.pairs:,} links found"),
    )
    say(refresh_summary(run))


def refresh_summary(run) -> str:
    """One line on a refresh, for this command and `catalogue predict`."""
    if run.nothing_embedded:
        return (
            f"duplicates: nothing embedded by {run.version} yet: `catalogue predict` embeds the "
            "pictures, then groups them"
        )
    again = f" (started over: {run.version} regroups every picture)" if run.started_over else ""
    if not run.checked:
        return f"duplicates: nothing new to check: every picture {run.version} embedded is grouped"
    return (
        f"duplicates: checked {run.checked:,} new pictures with {run.version}{again}: "
        f"{run.pairs:,} links to the same product, {run.grouped:,} pictures grouped, "
        f"{run.merged:,} groups merged ({run.seconds:.1f}s)"
    )


def add_commands(add: AddCommand) -> None:
    duplicates = add(
        "duplicates",
        cmd_duplicates,
        "List the groups of listings that show the same product (the same photo re-encoded, "
        "resized, cropped, mirrored or reposted by another shop; a text band drawn over it is "
        "seldom found), largest first. `catalogue predict` and the predict DAG keep them up to date; --refresh groups "
        "what is new now. Analysts read the view marketplace.duplicate_listings.",
    )
    duplicates.add_argument("--account", metavar="A", help="only the groups with a listing of A")
    duplicates.add_argument("--limit", type=int, default=20, help="groups shown (default 20)")
    duplicates.add_argument(
        "--refresh",
        action="store_true",
        help="group the pictures embedded since the last refresh first (incremental)",
    )
    duplicates.add_argument(
        "--regroup",
        action="store_true",
        help="forget the groups and group every embedded picture again (after changing the "
        "CATALOGUE_DUPLICATE_* thresholds)",
    )

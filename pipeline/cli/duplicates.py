"""`catalogue duplicates`: listings that show the same product."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand, UsageError
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings
from pipeline.errors import CatalogueError


class UnknownAccount(CatalogueError, LookupError):
    """--account names an account with no listing in the marketplace."""


_GROUPS = """
SELECT group_id, listings, accounts, category FROM marketplace.duplicate_listings
WHERE CAST(:account AS text) IS NULL OR :account = ANY(account_names)
ORDER BY listings DESC, group_id
"""
_LISTINGS = """
SELECT duplicate_group, account, shortcode, position FROM marketplace.products
WHERE duplicate_group = ANY(CAST(:groups AS bigint[]))
ORDER BY duplicate_group, image_id
"""


def cmd_duplicates(args: argparse.Namespace) -> int:
    """Refresh the groups when asked, then list them, largest first."""
    from sqlalchemy import text

    from pipeline.db import get_engine

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a number of groups from 1")
    account = args.account.lstrip("@") if args.account else None
    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.refresh:
        refresh(engine, settings)
    with engine.connect() as connection:
        if (
            account
            and not connection.execute(
                text("SELECT EXISTS (SELECT 1 FROM marketplace.products WHERE account = :a)"),
                {"a": account},
            ).scalar_one()
        ):
            raise UnknownAccount(
                f"no listing of @{account} in the marketplace: check the name with "
                "`catalogue accounts list` (its pictures appear once `catalogue predict` ran)"
            )
        groups = connection.execute(text(_GROUPS), {"account": account}).all()
        shown = groups[: args.limit]
        listings = connection.execute(
            text(_LISTINGS), {"groups": [g.group_id for g in shown]}
        ).all()
        checked = connection.execute(
            text("SELECT EXISTS (SELECT 1 FROM catalogue.duplicate_checks)")
        ).scalar_one()
    if not groups:
        if account:
            say(f"no duplicate listings with @{account}")
        elif checked:
            say("no duplicate listings: no two catalogued pictures show the same product")
        else:
            say(
                "no duplicate listings found yet: pictures are grouped after `catalogue predict` "
                "(or run `catalogue duplicates --refresh`)"
            )
        return EXIT_OK
    scope = f" with @{account}" if account else ""
    say(
        f"{len(groups):,} group{'s' if len(groups) != 1 else ''} of duplicate listings{scope}"
        + (f", the {len(shown)} largest:" if len(shown) < len(groups) else ":")
    )
    by_group: dict[int, list] = {}
    for row in listings:
        by_group.setdefault(row.duplicate_group, []).append(row)
    for group in shown:
        say(
            f"group {group.group_id}: {group.listings} listings by {group.accounts} "
            f"account{'s' if group.accounts != 1 else ''} ({group.category or 'no category'})"
        )
        for row in by_group.get(group.group_id, []):
            say(f"  @{row.account}  {row.shortcode}/{row.position}")
    return EXIT_OK


def refresh(engine, settings) -> None:
    """Group the pictures embedded since the last refresh, saying what was found."""
    from pipeline.similar.duplicates import DuplicateOptions, refresh_duplicates

    run = refresh_duplicates(
        engine,
        options=DuplicateOptions.from_settings(settings),
        progress=lambda r: say(f"  {r.checked:,} pictures checked, {r.pairs:,} pairs found"),
    )
    say(refresh_summary(run))


def refresh_summary(run) -> str:
    """One line on a refresh, for this command and `catalogue predict`."""
    if run.nothing_embedded:
        return (
            f"duplicates: nothing embedded by {run.version} yet: `catalogue predict` embeds the "
            "pictures, then groups them"
        )
    again = (
        f" (a new champion: regrouped from {run.version}'s embeddings)" if run.started_over else ""
    )
    if not run.checked:
        return f"duplicates: nothing new to check: every picture {run.version} embedded is grouped"
    return (
        f"duplicates: checked {run.checked:,} new pictures with {run.version}{again}: "
        f"{run.pairs:,} same-product pairs, {run.grouped:,} pictures grouped, "
        f"{run.merged:,} groups merged ({run.seconds:.1f}s)"
    )


def add_commands(add: AddCommand) -> None:
    duplicates = add(
        "duplicates",
        cmd_duplicates,
        "List the groups of listings that show the same product (the same photo re-encoded, "
        "resized, cropped, mirrored, overlaid with text, or reposted by another shop), largest "
        "first. `catalogue predict` and the predict DAG keep them up to date; --refresh groups "
        "what is new now. Analysts: SELECT * FROM marketplace.duplicate_listings.",
    )
    duplicates.add_argument("--account", metavar="A", help="only the groups with a listing of A")
    duplicates.add_argument("--limit", type=int, default=20, help="groups shown (default 20)")
    duplicates.add_argument(
        "--refresh",
        action="store_true",
        help="group the pictures embedded since the last refresh first (incremental)",
    )

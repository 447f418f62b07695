"""`catalogue accounts`: the Instagram accounts that are collected."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand, sub_commands
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings
from pipeline.db import get_engine


def cmd_list(args: argparse.Namespace) -> int:
    from pipeline import accounts

    rows = accounts.list_accounts(engine=get_engine(load_settings().database_url))
    if not rows:
        say("no accounts yet: `catalogue accounts add USERNAME`")
    for row in rows:
        last = row.last_success_at.strftime("%Y-%m-%d %H:%M") if row.last_success_at else "-"
        state = "enabled" if row.enabled else "disabled"
        business = {True: "business", False: "personal", None: "unknown"}[row.is_business]
        say(
            f"{row.username:<30} {state:<8} {row.status:<8} {business:<8} "
            f"posts {row.posts:>6}  images {row.images:>6}  last success {last}"
            + (f"  last failure: {row.last_failure_reason}" if row.last_failure_reason else "")
        )
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from pipeline import accounts

    engine = get_engine(load_settings().database_url)
    for username in args.usernames:
        name, created = accounts.add_account(
            engine=engine, username=username, allow_personal=args.allow_personal
        )
        say(f"{name}: {'added' if created else 'already registered'}")
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args.usernames, enabled=True)


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args.usernames, enabled=False)


def _set_enabled(usernames: list[str], *, enabled: bool) -> int:
    from pipeline import accounts

    engine = get_engine(load_settings().database_url)
    for username in usernames:
        accounts.set_enabled(engine=engine, username=username, enabled=enabled)
        say(f"{accounts.normalise_username(username)}: {'enabled' if enabled else 'disabled'}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from pipeline import accounts

    engine = get_engine(load_settings().database_url)
    for username in args.usernames:
        accounts.remove_account(engine=engine, username=username)
        say(f"{accounts.normalise_username(username)}: removed")
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    action = sub_commands(
        add("accounts", None, "Manage the Instagram accounts that are collected.")
    )
    action("list", cmd_list, "Every account, its state and what was collected from it.")
    for name, handler, help_text in (
        ("add", cmd_add, "Register accounts to collect (business accounts unless told)."),
        ("enable", cmd_enable, "Collect these accounts again."),
        ("disable", cmd_disable, "Stop collecting these accounts; what was collected stays."),
        (
            "remove",
            cmd_remove,
            "Forget accounts with nothing collected (`catalogue purge` the rest).",
        ),
    ):
        sub = action(name, handler, help_text)
        sub.add_argument(
            "usernames", nargs="+", metavar="USERNAME", help="username, @username or profile URL"
        )
        if name == "add":
            sub.add_argument(
                "--allow-personal",
                action="store_true",
                help="collect it even if it is not a business account",
            )

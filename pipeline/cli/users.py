"""The workbench's people: add, list, disable, reset-password (`catalogue users ...`)."""

from __future__ import annotations

import argparse
import getpass
import sys

from pipeline.cli.args import AddCommand, UsageError, sub_commands
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings
from pipeline.db import get_engine

USERS_HELP = (
    "The people who sign in to the workbench (`catalogue web`): viewers see, moderators label "
    "and run jobs, admins also manage people. Passwords are asked for (or read from standard "
    "input when it is not a terminal) and stored as salted scrypt hashes."
)


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ: nothing changed, try again")
    return first


def cmd_add(args: argparse.Namespace) -> int:
    from pipeline.web.users import add_person

    engine = get_engine(load_settings().database_url)
    person = add_person(engine=engine, name=args.name, role=args.role, password=_password())
    say(f"added {person.name} ({person.role}); they sign in at `catalogue web`")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from pipeline.web.users import list_people

    people = list_people(engine=get_engine(load_settings().database_url))
    if not people:
        say("nobody yet: `catalogue users add NAME --role admin`")
    for p in people:
        state = "disabled" if p.disabled else "active"
        say(f"{p.name:<24} {p.role:<10} {state:<9} since {p.created_at:%Y-%m-%d}")
    return EXIT_OK


def cmd_disable(args: argparse.Namespace) -> int:
    from pipeline.web.users import disable_person

    disable_person(engine=get_engine(load_settings().database_url), name=args.name)
    say(f"{args.name} is disabled and signed out; their labels stay theirs")
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    from pipeline.web.users import reset_password

    reset_password(
        engine=get_engine(load_settings().database_url), name=args.name, password=_password()
    )
    say(f"{args.name} has a new password (and is enabled); their sessions ended")
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    from pipeline.web.users import ROLES

    action = sub_commands(add("users", None, USERS_HELP))
    added = action("add", cmd_add, "Add a person with a role; the password is asked for.")
    added.add_argument("name", metavar="NAME", help="their sign-in name")
    added.add_argument("--role", choices=ROLES, required=True, help="what they may do")
    action("list", cmd_list, "Everybody who may sign in, with their role and state.")
    disabled = action("disable", cmd_disable, "Refuse their sign-ins and end their sessions.")
    disabled.add_argument("name", metavar="NAME")
    reset = action("reset-password", cmd_reset, "Set a new password (re-enables them).")
    reset.add_argument("name", metavar="NAME")

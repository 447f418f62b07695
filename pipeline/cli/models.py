"""`catalogue models`: the model registry (list, promote, rollback, register)."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand, sub_commands
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import Settings, load_settings
from pipeline.db import get_engine

CHAMPION_ASSET_URI = "catalogue://models/champion"  # dags/assets.py NEW_CHAMPION


def cmd_list(args: argparse.Namespace) -> int:
    from pipeline.train import registry

    rows = registry.list_versions(
        engine=get_engine(load_settings().database_url), attribute=args.attribute
    )
    if not rows:
        say("no models yet: `catalogue train`")
    for r in rows:
        accuracy = f"{float(r.accuracy):.3f}" if r.accuracy else "-"
        say(
            f"{r.version:<18} {r.status:<9} {r.architecture:<15} {r.backend:<10} "
            f"acc {accuracy}  snapshot {r.snapshot_id}  {r.created_at:%Y-%m-%d %H:%M}  "
            f"{r.status_reason or ''}"
        )
    return EXIT_OK


def cmd_register(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.storage import ObjectStore
    from pipeline.train import registry

    settings = load_settings()
    versions = registry.register_folder(
        engine=get_engine(settings.database_url),
        store=ObjectStore.for_models(settings),
        folder=Path(args.folder),
        created_by=settings.moderator,
    )
    say(
        f"registered {', '.join(versions)} as candidates; "
        "`catalogue models promote VERSION` or let the next retrain's gate decide"
    )
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.train import registry

    settings = load_settings()
    registry.promote(
        engine=get_engine(settings.database_url), version=args.version, who=settings.moderator
    )
    say(f"{args.version} is now champion")
    return _announce(settings, args.version)


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.train import registry

    settings = load_settings()
    retired, champion = registry.rollback(
        engine=get_engine(settings.database_url), attribute=args.attribute, who=settings.moderator
    )
    say(
        f"rolled back {retired}; {champion} is champion again (the marketplace shows its "
        "earlier predictions at once)"
    )
    return _announce(settings, champion)


def _announce(settings: Settings, champion: str) -> int:
    from pipeline.announce import announce_asset_event

    said = announce_asset_event(
        settings=settings,
        uri=CHAMPION_ASSET_URI,
        extra={"versions": [champion]},
        done=f"{champion} is champion",
        fallback="run `catalogue predict` to score the images it has not scored yet",
    )
    say("  " + said)
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    action = sub_commands(
        add(
            "models",
            None,
            "The model registry: list [ATTRIBUTE]; promote VERSION (by hand); rollback ATTRIBUTE "
            "(the previous champion takes over); register FOLDER (an artefact trained from an "
            "export).",
            tensorflow=True,
        )
    )
    listed = action("list", cmd_list, "Every model version, newest first.")
    listed.add_argument("attribute", nargs="?", metavar="ATTRIBUTE", help="only this attribute's")
    promote = action("promote", cmd_promote, "Make a version champion by hand.")
    promote.add_argument("version", metavar="VERSION")
    rollback = action("rollback", cmd_rollback, "The previous champion takes over again.")
    rollback.add_argument("attribute", metavar="ATTRIBUTE")
    register = action(
        "register", cmd_register, "Register an artefact trained from an export as candidates."
    )
    register.add_argument("folder", metavar="FOLDER", help="the artefact folder")
